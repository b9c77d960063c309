"""``GET /v1/collections/{name}/versions``: the retained versions of a collection, newest first.

Every committed write (upsert, delete, metadata update, compaction) makes a new version; the
store keeps the last few (its retention policy).  The answer reads the manifests only, never data.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from .auth import ReadAccess
from .collections import ERRORS
from .registry import Collection
from .schemas import VersionList
from .state import CollectionDep, StateDep

router = APIRouter(prefix="/v1/collections/{name}", tags=["collections"], responses=ERRORS)


def version_list(c: Collection) -> dict[str, Any]:
    """``{"collection", "current", "versions"}`` with the versions newest first (blocking: reads manifests)."""
    current = c.index.stats().get("version")  # (stats reads the manifest only; none for a sharded collection)
    versions = [{"version": int(v.version), "timestamp": float(v.timestamp), "rows": int(v.rows)}
                for v in c.index.versions()]
    versions.sort(key=lambda v: -v["version"])
    return {"collection": c.name, "current": None if current is None else int(current), "versions": versions}


@router.get("/versions", response_model=VersionList, dependencies=[ReadAccess], summary="List retained versions")
async def list_versions(collection: CollectionDep, state: StateDep) -> dict[str, Any]:
    """The collection's retained versions, newest first: number, commit time (Unix seconds) and live rows.
    ``current`` is the version searches read now."""
    return await state.read(version_list, collection)
