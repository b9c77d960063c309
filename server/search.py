"""``POST /v1/collections/{name}/search``: k-NN search by vectors or (with an embedder) texts.

The request path is kept lean because a single-vector search is cheaper than the HTTP
around it: the body is parsed with orjson (or read as binary float32), the cost limits are
checked before any work, the query rows go to the :class:`~.batcher.SearchBatcher` (one
batched ``Index.search`` for many concurrent requests), and the answer is serialised with
orjson straight into a response (no response-model validation of thousands of hits).
Large answers are streamed chunk by chunk, so their size in memory stays bounded.

While a search waits or runs, the handler also watches the connection: a client that goes
away cancels its queued chunks, and the request deadline (``request_timeout``) gives a
504 ``deadline_exceeded``.  Searches never take the collection's writer lock: the index
searches a pinned snapshot, and metadata of hits deleted meanwhile comes back as nulls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from ..errors import EmptyInput, InvalidInput, NonFiniteInput
from . import wire
from .auth import ReadAccess
from .batcher import BatchParams
from .batcher import DeadlineExceeded as _Late
from .collections import ERRORS
from .convert import embed_texts, metadata_rows, vectors_from_json
from .errors import ClientClosedRequest, DeadlineExceeded, NotAcceptable, Overloaded, TooExpensive, UnsupportedMediaType
from .registry import Collection
from .schemas import MAX_QUERIES, SearchOptions, SearchRequest, SearchResponse
from .settings import Settings
from .state import CollectionDep, ServerState, StateDep

router = APIRouter(prefix="/v1/collections/{name}", tags=["search"], responses=ERRORS)

#: Filter numbers beyond this magnitude cannot match any column type (int64/uint64/float32 ranges
#: aside, float64 overflows only far above it); they are refused before the filter is compiled.
MAX_FILTER_NUMBER = 1 << 64
#: Answers with more hits than this (or with metadata) are built and streamed in chunks of queries.
STREAM_HITS = 20_000
STREAM_QUERIES = 64
_NO_METADATA: dict[str, Any] = {}

_BINARY_DOC = (f"Binary queries: `{wire.F32}` is `uint32 rows, uint32 dim` (little-endian) followed by rows × dim "
               "float32; the search options then travel in the query string (`k`, `filter` as JSON, `include` "
               f"repeated, `oversample`, `nprobe`).  Send `Accept: {wire.HITS}` for a binary answer: `uint32 "
               "queries, uint32 k`, then queries × k int64 ids, then queries × k float32 scores, best first, "
               "missing hits as id -1 and score -inf (cosine/ip) or +inf (l2).")
SEARCH_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"$ref": "#/components/schemas/SearchRequest"}},
    wire.F32: {"schema": {"type": "string", "format": "binary", "description": _BINARY_DOC}}}}}
SEARCH_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "One list of hits per query, best first.",
          "content": {wire.HITS: {"schema": {"type": "string", "format": "binary", "description": _BINARY_DOC}}}},
    406: {"model": ERRORS[400]["model"], "description": "Binary answers carry no metadata"},
    415: {"model": ERRORS[400]["model"], "description": "Unsupported media type"},
    500: {"model": ERRORS[400]["model"], "description": "Server fault (e.g. corrupt_data: a damaged file)"},
    503: {"model": ERRORS[400]["model"], "description": "Search queue full (overloaded); retry later"},
    504: {"model": ERRORS[400]["model"], "description": "Deadline exceeded (request_timeout)"}}


# ---------------------------------------------------------------- the batched index call (worker thread)
def run_batch(c: Collection, xq: np.ndarray, p: BatchParams) -> tuple[np.ndarray, np.ndarray]:
    """One ``Index.search`` for a batch of compatible queries → (distances, ids), each (nq, p.k).

    An empty collection, or ``k`` above its size, is not an error over HTTP: missing hits
    are padded with id -1, as FAISS does.  The size is read again if a concurrent delete
    made ``k`` too large between the check and the search.
    """
    index = c.index
    nq = xq.shape[0]
    for _attempt in range(3):
        n = len(index)
        if n == 0 or not index.is_trained:
            return _padded(np.zeros((nq, 0), np.float32), np.zeros((nq, 0), np.int64), p.k, index.metric)
        k = min(p.k, n)
        try:
            dist, ids = index.search(xq, k=k, filter=p.filter, oversample=p.oversample, nprobe=p.nprobe)
        except (InvalidInput, EmptyInput):
            if len(index) >= k:
                raise
            continue  # rows were deleted meanwhile
        return _padded(dist, ids, p.k, index.metric)
    raise InvalidInput("the collection kept shrinking during the search; retry")


def _padded(dist: np.ndarray, ids: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    nq, m = ids.shape
    if m == k:
        return dist, ids
    fill = np.inf if metric == "l2" else -np.inf
    d = np.full((nq, k), fill, np.float32)
    i = np.full((nq, k), -1, np.int64)
    d[:, :m] = dist
    i[:, :m] = ids
    return d, i


# ---------------------------------------------------------------- request parsing and cost
def _filter_key(flt: dict[str, Any] | None) -> str | None:
    if flt is None:
        return None
    _check_filter_numbers(flt)
    return orjson.dumps(flt, option=orjson.OPT_SORT_KEYS).decode()


def _check_filter_numbers(flt: Any) -> None:
    """Refuse integers no column can hold (they used to reach the filter compiler's float conversion)."""
    stack = [flt]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, int) and not isinstance(v, bool) and abs(v) >= MAX_FILTER_NUMBER:
            raise InvalidInput(f"filter: the number {str(v)[:20]}{'...' if len(str(v)) > 20 else ''} is out of "
                               f"range (|x| < 2^64)")


def check_cost(s: Settings, nq: int, k: int, oversample: int, n_include: int) -> None:
    """Refuse a search whose size exceeds a configured limit, before any work (400 ``too_expensive``)."""
    hits = nq * k
    if hits > s.max_hits:
        raise TooExpensive(f"{nq} queries × k={k} = {hits:,} hits exceeds the limit of {s.max_hits:,} "
                           "(setting max_hits); send fewer queries per request or a smaller k")
    candidates = hits * oversample
    if candidates > s.max_candidates:
        raise TooExpensive(f"{nq} queries × k={k} × oversample={oversample} = {candidates:,} candidates exceeds the "
                           f"limit of {s.max_candidates:,} (setting max_candidates)")
    cells = hits * n_include
    if cells > s.max_include_cells:
        raise TooExpensive(f"{hits:,} hits × {n_include} included columns = {cells:,} values exceeds the limit of "
                           f"{s.max_include_cells:,} (setting max_include_cells)")


def _options_from_query(request: Request) -> dict[str, Any]:
    q = request.query_params
    out: dict[str, Any] = {}
    for key in ("k", "oversample", "nprobe"):
        if key in q:
            out[key] = q[key]
    if "filter" in q:
        out["filter"] = wire.loads(q["filter"].encode())
    if "include" in q:
        out["include"] = q.getlist("include")
    return out


def _check_finite(x: np.ndarray) -> np.ndarray:
    ok = np.isfinite(x).all(axis=1)
    if not ok.all():
        raise NonFiniteInput(f"queries contains NaN or inf (first bad row: {int(np.flatnonzero(~ok)[0])})")
    return x


async def _parse(request: Request, c: Collection, state: ServerState) -> tuple[SearchOptions, np.ndarray]:
    ctype = wire.media_type(request)
    raw = await request.body()
    if ctype == wire.F32:
        opts = wire.validate(SearchOptions, _options_from_query(request))
        return opts, _check_finite(wire.read_f32(raw, c.dim, MAX_QUERIES, c.name))
    if not (wire.is_json(ctype) or ctype == ""):
        raise UnsupportedMediaType(f"Content-Type must be application/json or {wire.F32}, got {ctype!r}")
    body = wire.validate(SearchRequest, wire.loads(raw))
    if body.texts is not None:
        xq = await state.read(embed_texts, c, body.texts)
    else:
        xq = vectors_from_json(c, body.vectors or [], "queries")
    return body, _check_finite(xq)


# ---------------------------------------------------------------- waiting (deadline, disconnect)
async def _disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _batched(state: ServerState, c: Collection, xq: np.ndarray, params: BatchParams,
                   request: Request) -> tuple[np.ndarray, np.ndarray]:
    s = state.settings
    if state.batcher.queued_rows + xq.shape[0] > s.max_queued_queries:
        raise Overloaded(f"the search queue is full ({s.max_queued_queries:,} queries); retry later")
    deadline = time.monotonic() + s.request_timeout
    key = (id(c), params)
    search = asyncio.ensure_future(state.batcher.search(c, key, xq, params, deadline))
    watch = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait((search, watch), timeout=s.request_timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if search in done:
            try:
                return search.result()
            except _Late:
                raise DeadlineExceeded(f"the search did not start within the deadline of {s.request_timeout:g} s "
                                       "(setting request_timeout)") from None
        if watch in done:  # the client went away: its queued chunks are dropped, nobody reads the answer
            raise ClientClosedRequest("the client closed the connection before the answer was ready")
        raise DeadlineExceeded(f"the search did not finish within the deadline of {s.request_timeout:g} s "
                               "(setting request_timeout)")
    finally:
        for t in (search, watch):
            if not t.done():
                t.cancel()


# ---------------------------------------------------------------- rendering
def _rows_json(dist: np.ndarray, ids: np.ndarray, lookup: dict[int, dict[str, Any]] | None) -> list[list[dict]]:
    out = []
    for drow, irow in zip(dist.tolist(), ids.tolist()):
        if lookup is None:
            out.append([{"id": i, "score": d, "metadata": _NO_METADATA} for d, i in zip(drow, irow) if i >= 0])
        else:
            out.append([{"id": i, "score": d, "metadata": lookup.get(i, _NO_METADATA)}
                        for d, i in zip(drow, irow) if i >= 0])
    return out


def _chunk_json(c: Collection, dist: np.ndarray, ids: np.ndarray, include: list[str]) -> bytes:
    """JSON of a run of result rows, without the enclosing brackets (blocking: reads metadata)."""
    lookup = None
    if include:
        uniq = np.unique(ids[ids >= 0]).astype(np.uint64)
        rows = metadata_rows(c.index.get_metadata(uniq, include, missing="null"))
        lookup = dict(zip(uniq.tolist(), rows))
    return orjson.dumps(_rows_json(dist, ids, lookup))[1:-1]


def _stream(first: bytes, rest: Iterator[bytes], limit: int) -> Iterator[bytes]:
    yield b'{"results":[' + first
    size = len(first)
    for part in rest:
        size += len(part)
        if size > limit:  # the status line is sent already: cut the connection rather than lie
            raise RuntimeError(f"search response exceeded max_response_bytes ({limit:,}) while streaming")
        yield b"," + part if part else b""
    yield b"]}"


async def _render(state: ServerState, c: Collection, opts: SearchOptions, dist: np.ndarray,
                  ids: np.ndarray) -> Response:
    nq = ids.shape[0]
    if not opts.include and nq * ids.shape[1] <= STREAM_HITS:
        return Response(b'{"results":' + orjson.dumps(_rows_json(dist, ids, None)) + b"}",
                        media_type="application/json")
    step = STREAM_QUERIES if opts.include else max(1, STREAM_HITS // max(1, ids.shape[1]))
    parts = [(dist[s:s + step], ids[s:s + step]) for s in range(0, nq, step)]
    limit = state.settings.max_response_bytes
    first = await state.read(_chunk_json, c, *parts[0], opts.include)  # errors (bad include) before the 200
    if len(first) > limit:
        raise TooExpensive(f"the answer exceeds max_response_bytes ({limit:,}); request fewer queries, a smaller k "
                           "or fewer include columns")
    if len(parts) == 1:
        return Response(b'{"results":[' + first + b"]}", media_type="application/json")
    rest = (_chunk_json(c, d, i, opts.include) for d, i in parts[1:])
    return StreamingResponse(_stream(first, rest, limit), media_type="application/json")


# ---------------------------------------------------------------- route
@router.post("/search", response_model=SearchResponse, dependencies=[ReadAccess], summary="Search a collection",
             openapi_extra=SEARCH_BODY, responses=SEARCH_RESPONSES)
async def search(request: Request, collection: CollectionDep, state: StateDep) -> Response:
    """The ``k`` nearest points of each query, best first.

    ``score`` is the similarity for ``cosine``/``ip`` (higher is better) and the squared distance for ``l2``
    (lower is better).  Queries with fewer than ``k`` matches (a selective ``filter``, a small collection)
    get shorter lists.  The size of a request is limited before any work starts (queries × k, queries × k ×
    oversample, queries × k × include columns; 400 ``too_expensive``), and it has a deadline (504
    ``deadline_exceeded``).
    """
    binary_out = wire.accepts(request, wire.HITS)
    opts, xq = await _parse(request, collection, state)
    if binary_out and opts.include:
        raise NotAcceptable(f"{wire.HITS} answers carry ids and scores only; drop 'include' or accept JSON")
    c = collection
    oversample = opts.oversample or int(getattr(c.index.config, "oversample", 1) or 1)
    check_cost(state.settings, xq.shape[0], opts.k, oversample, len(opts.include))
    if opts.include:
        c.index.get_metadata(np.zeros(0, np.uint64), opts.include)  # unknown columns: 400 before searching
    params = BatchParams(opts.k, _filter_key(opts.filter), opts.oversample, opts.nprobe, opts.filter)
    dist, ids = await _batched(state, c, xq, params, request)
    if binary_out:
        return Response(wire.write_hits(dist, ids), media_type=wire.HITS)
    return await _render(state, c, opts, dist, ids)
