"""``/v1/collections``: create, list, inspect and delete collections."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status

from ..index import Index
from .auth import AdminAccess, ReadAccess
from .registry import Collection
from .schemas import CollectionCreate, CollectionInfo, CollectionList, Deleted, ErrorBody, OpenRequest, OpenResult
from .state import CollectionDep, StateDep

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": desc}
    for code, desc in ((400, "Invalid input"), (401, "Missing or invalid API key"), (403, "Read-only key"),
                       (404, "Unknown collection"), (409, "Conflict"), (413, "Body too large"),
                       (422, "Request validation failed"),
                       (503, "Collection unavailable (damaged), overloaded, or deadline codes"))}

router = APIRouter(prefix="/v1/collections", tags=["collections"], responses=ERRORS)


def collection_info(c: Collection) -> dict[str, Any]:
    """Settings and statistics of a collection (blocking: reads the manifest directory)."""
    st = c.index.stats()
    retained = c.index.versions() if isinstance(c.index, Index) else []  # a sharded collection: per shard
    versions = [{"version": v.version, "timestamp": v.timestamp, "rows": v.rows} for v in retained]
    return {"name": c.name, "dim": st["dim"], "metric": st["metric"], "scan": st["scan"], "rescore": st["rescore"],
            "ivf": st["ivf"], "residual": bool(getattr(c.index.config, "residual", False)),
            "embedder": c.embedder_name, "count": st["count"], "bytes": st["bytes"],
            "bytes_per_vector": st["bytes_per_vector"], "segments": st["segments"], "version": st.get("version"),
            "versions": versions, "metadata_columns": list(st["metadata_columns"]), "trained": st["trained"],
            "next_id": c.index.next_id, "estimated_recall": st.get("estimated_recall"),
            "shards": int(st.get("shards", 1)), "replicas": int(st.get("replicas", 1)),
            "created": c.created}


@router.post("", status_code=status.HTTP_201_CREATED, response_model=CollectionInfo, dependencies=[AdminAccess],
             summary="Create a collection")
async def create_collection(body: CollectionCreate, state: StateDep) -> dict[str, Any]:
    """Create an empty collection.  Its quantisers (and IVF lists) are trained on the first batch written."""
    c = await state.admin(lambda: state.registry.create(
        body.name, dim=body.dim, metric=body.metric, preset=body.preset, embedder=body.embedder,
        options=body.index_options(), shards=body.shards, replicas=body.replicas,
        replace_unavailable=body.replace_unavailable))
    return await state.read(collection_info, c)


@router.get("", response_model=CollectionList, dependencies=[ReadAccess], summary="List collections")
async def list_collections(state: StateDep) -> dict[str, Any]:
    """Every collection with its statistics, by name; damaged ones are listed with status ``unavailable``."""
    def run() -> list[dict[str, Any]]:
        out = [collection_info(c) for c in state.registry.all()]
        out += [{"name": u.name, "status": "unavailable", "error": u.code, "message": state.scrub(u.message)}
                for u in state.registry.unavailable()]
        return sorted(out, key=lambda c: c["name"])
    return {"collections": await state.read(run)}


@router.get("/{name}", response_model=CollectionInfo, dependencies=[ReadAccess], summary="Get a collection")
async def get_collection(collection: CollectionDep, state: StateDep) -> dict[str, Any]:
    """Settings and statistics: count, bytes, segments, retained versions."""
    return await state.read(collection_info, collection)


@router.delete("/{name}", response_model=Deleted, dependencies=[AdminAccess], summary="Delete a collection")
async def delete_collection(name: str, state: StateDep) -> dict[str, Any]:
    """Delete a collection and its data (also one that is unavailable).  Searches already running finish on
    their snapshot.  An alias is not a collection: deleting one by this route is a 409."""
    if state.registry.alias_target(name) is not None:
        await state.admin(state.registry.drop, name)  # raises Conflict naming the alias route
    if any(u.name == name for u in state.registry.unavailable()):
        await state.admin(state.registry.drop, name)
        return {"deleted": name}
    collection = state.registry.get(name)
    async with collection.writer:  # wait for the write in progress, if any
        await state.admin(state.registry.drop, collection.name)
    return {"deleted": collection.name}


@router.post("/{name}/open", response_model=OpenResult, dependencies=[AdminAccess],
             summary="Re-open a collection (e.g. skipping damaged segments)")
async def open_collection(name: str, body: OpenRequest, state: StateDep) -> dict[str, Any]:
    """Open a collection again, by default with ``on_corrupt="skip"``: damaged segments are left out (their
    rows are lost) so that the rest becomes available.  A 503 ``collection_unavailable`` if it still fails."""
    def run() -> dict[str, Any]:
        c, skipped = state.registry.reopen(name, body.on_corrupt)
        return {"name": c.name, "skipped": [state.scrub(s) for s in skipped]}
    if name in state.registry.names():  # wait for the write in progress, if any
        async with state.registry.get(name).writer:
            return await state.admin(run)
    return await state.admin(run)
