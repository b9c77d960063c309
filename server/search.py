"""``POST /v1/collections/{name}/search``: k-NN search by vectors or (with an embedder) texts.

The whole request (embedding, search, metadata lookup) runs in the bounded read pool and
never takes the collection's writer lock: the index searches a pinned snapshot, and
metadata of hits deleted meanwhile comes back as nulls rather than failing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter

from .auth import ReadAccess
from .collections import ERRORS
from .convert import embed_texts, metadata_rows, vectors_from_json
from .registry import Collection
from .schemas import SearchRequest, SearchResponse
from .state import CollectionDep, StateDep

router = APIRouter(prefix="/v1/collections/{name}", tags=["search"], responses=ERRORS)


def run_search(c: Collection, body: SearchRequest) -> dict[str, Any]:
    """Blocking search → the response body (hits with id, score and the requested metadata)."""
    if body.texts is not None:
        xq = embed_texts(c, body.texts)
    else:
        xq = vectors_from_json(c, body.vectors or [], "queries")
    index = c.index
    n = len(index)
    k = min(body.k, n)
    if k == 0 or not index.is_trained:  # an empty collection has no neighbours (not an error over HTTP)
        if body.include:
            index.get_metadata(np.zeros(0, np.uint64), body.include)  # still reject unknown columns
        return {"results": [[] for _ in range(xq.shape[0])]}
    dist, ids = index.search(xq, k=k, filter=body.filter, oversample=body.oversample, nprobe=body.nprobe)
    lookup: dict[int, dict[str, Any]] = {}
    if body.include:
        uniq = np.unique(ids[ids >= 0]).astype(np.uint64)
        rows = metadata_rows(index.get_metadata(uniq, body.include, missing="null"))
        lookup = dict(zip(uniq.tolist(), rows))
    results = []
    for drow, irow in zip(dist.tolist(), ids.tolist()):
        results.append([{"id": i, "score": d, "metadata": lookup.get(i, {})} for d, i in zip(drow, irow) if i >= 0])
    return {"results": results}


@router.post("/search", response_model=SearchResponse, dependencies=[ReadAccess], summary="Search a collection")
async def search(body: SearchRequest, collection: CollectionDep, state: StateDep) -> dict[str, Any]:
    """The ``k`` nearest points of each query, best first.

    ``score`` is the similarity for ``cosine``/``ip`` (higher is better) and the squared distance for ``l2``
    (lower is better).  Queries with fewer than ``k`` matches (a selective ``filter``, a small collection)
    get shorter lists.
    """
    return await state.read(run_search, collection, body)
