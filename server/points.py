"""``/v1/collections/{name}/points``: upsert (JSON or Arrow IPC stream), delete and get by id.

Bulk ingest streams the request body to a temporary file under the data directory (never
holding it as JSON or in one Python ``bytes``), then decodes it zero-copy from a memory
map in a worker thread and writes it with one atomic ``Index.upsert``: a request is
all-or-nothing.  The body-size middleware bounds the file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

import anyio.to_thread
import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam

from ..errors import InvalidInput
from . import wire
from .auth import AdminAccess, ReadAccess
from .collections import ERRORS
from .convert import embed_texts, metadata_rows, read_arrow_stream, vectors_from_json
from .errors import UnsupportedMediaType
from .limits import ARROW_STREAM
from .registry import Collection
from .schemas import MAX_ID, MAX_INCLUDE, DeleteResult, Point, PointsDelete, PointsUpsert, UpsertResult
from .state import CollectionDep, ServerState, StateDep

router = APIRouter(prefix="/v1/collections/{name}/points", tags=["points"],
                   responses={**ERRORS, 415: {"model": ERRORS[400]["model"], "description": "Unsupported media type"}})

SPOOL_CHUNK = 4 << 20

_ARROW_DOC = (f"An Arrow IPC stream (`{ARROW_STREAM}`): an `id` integer column (uint64), a `vector` "
              "FixedSizeList<float32>[dim] column (or `text` strings for a collection with an embedder); every "
              "other column is stored as metadata.  For bulk ingest: the body is streamed to disk, not parsed as JSON.")

UPSERT_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"$ref": "#/components/schemas/PointsUpsert"}},
    ARROW_STREAM: {"schema": {"type": "string", "format": "binary", "description": _ARROW_DOC}}}}}


async def spool_body(request: Request, directory: Path) -> Path:
    """Stream the request body into a new temporary file; the caller deletes it."""
    fd, name = tempfile.mkstemp(dir=directory, prefix="upload-", suffix=".arrows")
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            buf = bytearray()
            async for chunk in request.stream():
                buf += chunk
                if len(buf) >= SPOOL_CHUNK:
                    await anyio.to_thread.run_sync(f.write, bytes(buf))
                    buf.clear()
            if buf:
                await anyio.to_thread.run_sync(f.write, bytes(buf))
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


async def _upsert(state: ServerState, c: Collection, ids: np.ndarray, data: Any, metadata: Any) -> dict[str, int]:
    if isinstance(data, list):  # texts: embed outside the writer lock (it is the slow part)
        data = await state.encode(embed_texts, c, data)

    def run() -> dict[str, int]:
        written = c.index.upsert(data, ids, metadata=metadata)
        return {"upserted": int(written.shape[0]), "count": len(c.index)}
    return await state.write(c, run)


@router.post("", response_model=UpsertResult, dependencies=[AdminAccess], openapi_extra=UPSERT_BODY,
             summary="Upsert points (JSON or Arrow stream)")
async def upsert_points(request: Request, collection: CollectionDep, state: StateDep) -> dict[str, int]:
    """Insert or replace points by id.  JSON for small batches; an Arrow IPC stream for bulk ingest.

    The first write to a collection trains its quantisers on that batch, so make it representative.
    Each request is atomic: on any error nothing is written.
    """
    ctype = wire.media_type(request)
    if ctype == ARROW_STREAM:
        path = await spool_body(request, state.registry.tmp_dir)
        try:
            ids, data, meta = await state.encode(read_arrow_stream, collection, path,
                                                 state.settings.max_arrow_bytes)
            return await _upsert(state, collection, ids, data, meta)
        finally:
            path.unlink(missing_ok=True)
    if wire.is_json(ctype):
        body = wire.validate(PointsUpsert, wire.loads(await request.body()))
        ids = np.asarray(body.ids, dtype=np.uint64)
        if body.texts is not None:
            data: Any = list(body.texts)  # embedded in a worker thread (400 there if there is no embedder)
        else:
            data = vectors_from_json(collection, body.vectors or [])
        return await _upsert(state, collection, ids, data, body.metadata)
    raise UnsupportedMediaType(f"Content-Type must be application/json or {ARROW_STREAM}, got {ctype or 'none'!r}")


@router.delete("", response_model=DeleteResult, dependencies=[AdminAccess], summary="Delete points")
async def delete_points(body: PointsDelete, collection: CollectionDep, state: StateDep) -> dict[str, int]:
    """Delete points by id.  If any id is not in the collection, nothing is deleted (404 ``unknown_ids``)."""
    ids = np.unique(np.asarray(body.ids, dtype=np.uint64))

    def run() -> dict[str, int]:
        collection.index.delete(ids)
        return {"deleted": int(ids.shape[0]), "count": len(collection.index)}
    return await state.write(collection, run)


@router.get("/{point_id}", response_model=Point, dependencies=[ReadAccess], summary="Get a point")
async def get_point(
    collection: CollectionDep,
    state: StateDep,
    point_id: Annotated[int, PathParam(ge=0, le=MAX_ID, description="The point's id.")],
    include: Annotated[list[str] | None, Query(max_length=MAX_INCLUDE,
                                               description="Metadata columns to return (default: all).")] = None,
    vector: Annotated[bool, Query(description="Also return the vector decoded from the stored codes.")] = False,
) -> dict[str, Any]:
    """A point's metadata and, with ``vector=true``, its approximate vector."""
    def run() -> dict[str, Any]:
        ids = np.array([point_id], dtype=np.uint64)
        meta = collection.index.get_metadata(ids, include)
        out: dict[str, Any] = {"id": point_id, "metadata": metadata_rows(meta)[0], "vector": None}
        if vector:
            out["vector"] = collection.index.reconstruct(ids)[0].tolist()
        return out
    if include is not None and any(not c for c in include):
        raise InvalidInput("include: column names must be non-empty")
    return await state.read(run)
