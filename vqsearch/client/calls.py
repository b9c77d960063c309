"""Request building and answer decoding of the client, independent of how requests are sent.

Each function builds a :class:`~.transport.Call` from numpy/Arrow arguments or decodes an
answer into numpy/Arrow; :mod:`.client` sends them.  Vectors travel as Arrow IPC streams
(writes) and as the binary ``application/x-vqsearch-f32`` body (queries), never as JSON
lists of floats; answers without metadata come back as the binary hits format.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from .._validation import as_float_matrix
from ..errors import InvalidInput
from ..index.results import SearchResult, missing_distance
from ..storage import ScrollPage
from .transport import Call

ARROW_STREAM = "application/vnd.apache.arrow.stream"
F32 = "application/x-vqsearch-f32"
HITS = "application/x-vqsearch-hits"
_HEADER = struct.Struct("<II")
#: Queries per search request (the server's limit).
MAX_QUERIES = 1024
#: Ids per JSON request (delete, update_metadata; the server's limit).
MAX_IDS = 100_000
#: Points per scroll request (the server's limit).
MAX_SCROLL = 10_000


def collection_path(name: str, *parts: str) -> str:
    if not isinstance(name, str) or not name or "/" in name:
        raise InvalidInput(f"collection name must be a non-empty string without '/', got {name!r}")
    return "/".join(("/v1/collections", name, *parts))


def metadata_table(metadata: Any, n: int) -> pa.Table | None:
    """Metadata (pyarrow Table/RecordBatch, dict of columns, pandas DataFrame or None) as a table of n rows."""
    if metadata is None:
        return None
    if isinstance(metadata, pa.RecordBatch):
        metadata = pa.Table.from_batches([metadata])
    if not isinstance(metadata, pa.Table):
        if hasattr(metadata, "to_dict") and hasattr(metadata, "columns"):  # pandas
            metadata = pa.Table.from_pandas(metadata, preserve_index=False)
        elif isinstance(metadata, Mapping):
            metadata = pa.table({str(k): _column(v) for k, v in metadata.items()})
        else:
            raise InvalidInput(f"metadata must be a pyarrow Table, a dict of columns or a pandas DataFrame, "
                               f"got {type(metadata).__name__}")
    if metadata.num_rows != n:
        raise InvalidInput(f"metadata has {metadata.num_rows} rows for {n} points")
    for name in ("id", "vector"):
        if name in metadata.column_names:
            raise InvalidInput(f"metadata column name {name!r} is reserved")
    return metadata.replace_schema_metadata(None)


def _column(values: Any) -> Any:
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values
    return pa.array(values.tolist() if isinstance(values, np.ndarray) and values.dtype.kind in "OU" else values)


def arrow_body(ids: np.ndarray, vectors: np.ndarray | None, texts: Sequence[str] | None,
               metadata: pa.Table | None) -> bytes:
    """An Arrow IPC stream of points: ``id``, ``vector`` (FixedSizeList<float32>) or ``text``, metadata."""
    columns: dict[str, Any] = {"id": pa.array(ids, pa.uint64())}
    if vectors is not None:
        columns["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()),
                                                             vectors.shape[1])
    else:
        columns["text"] = pa.array(list(texts or ()), pa.large_string())
    table = pa.table(columns)
    if metadata is not None:
        for name in metadata.column_names:
            table = table.append_column(metadata.schema.field(name), metadata.column(name))
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def write_call(name: str, body: bytes, *, replace: bool) -> Call:
    return Call("POST", collection_path(name, "points"), content=body, params={"mode": "upsert" if replace else "add"},
                headers={"Content-Type": ARROW_STREAM})


def as_queries(queries: Any, dim: int) -> tuple[np.ndarray | None, list[str] | None]:
    """(float32 (nq, dim) vectors, None) or (None, texts): a str or a list of str means texts."""
    if isinstance(queries, str):
        return None, [queries]
    if isinstance(queries, (list, tuple)) and queries and all(isinstance(q, str) for q in queries):
        return None, list(queries)
    x = as_float_matrix(queries, d=dim, name="queries", allow_empty=False)
    return np.ascontiguousarray(x, dtype="<f4"), None


def search_options(k: int, filter: dict | None, oversample: int | None, nprobe: int | None) -> dict[str, Any]:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidInput(f"k must be a positive integer, got {k!r}")
    out: dict[str, Any] = {"k": int(k)}
    if filter is not None:
        out["filter"] = filter
    if oversample is not None:
        out["oversample"] = int(oversample)
    if nprobe is not None:
        out["nprobe"] = int(nprobe)
    return out


def binary_search_call(name: str, x: np.ndarray, options: dict[str, Any]) -> Call:
    """A search whose queries and answer are binary (no metadata)."""
    params = {k: (orjson.dumps(v).decode() if k == "filter" else v) for k, v in options.items()}
    return Call("POST", collection_path(name, "search"), content=_HEADER.pack(*x.shape) + x.tobytes(), params=params,
                headers={"Content-Type": F32, "Accept": HITS}, idempotent=True)


def read_hits(raw: bytes) -> tuple[np.ndarray, np.ndarray]:
    nq, k = _HEADER.unpack_from(raw)
    n = nq * k
    if len(raw) != _HEADER.size + 12 * n:
        raise InvalidInput(f"the server's hits answer has {len(raw)} bytes, expected {_HEADER.size + 12 * n}")
    ids = np.frombuffer(raw, "<i8", n, _HEADER.size).reshape(nq, k).astype(np.int64)
    dist = np.frombuffer(raw, "<f4", n, _HEADER.size + 8 * n).reshape(nq, k).astype(np.float32)
    return dist, ids


def json_search_call(name: str, x: np.ndarray | None, texts: list[str] | None, options: dict[str, Any],
                     include: Sequence[str]) -> Call:
    body: dict[str, Any] = {**options, "include": list(include)}
    if texts is not None:
        body["texts"] = texts
    else:
        body["vectors"] = x
    return Call("POST", collection_path(name, "search"), json=body, idempotent=True)


def read_json_hits(doc: dict[str, Any], k: int, metric: str,
                   include: Sequence[str]) -> tuple[np.ndarray, np.ndarray, dict[str, list[Any]]]:
    """JSON results (lists shorter than k when padded) → padded (distances, ids) and flat metadata columns."""
    results = doc["results"]
    nq = len(results)
    dist = np.full((nq, k), missing_distance(metric), np.float32)
    ids = np.full((nq, k), -1, np.int64)
    columns: dict[str, list[Any]] = {c: [None] * (nq * k) for c in include}
    for i, row in enumerate(results):
        for j, hit in enumerate(row[:k]):
            ids[i, j] = hit["id"]
            dist[i, j] = hit["score"]
            meta = hit.get("metadata") or {}
            for c in include:
                columns[c][i * k + j] = meta.get(c)
    return dist, ids, columns


def search_result(dist: np.ndarray, ids: np.ndarray, columns: Mapping[str, list[Any]]) -> SearchResult:
    return SearchResult(dist, ids, pa.table(dict(columns)) if columns else _empty_table(ids.size))


def _empty_table(n: int) -> pa.Table:
    return pa.table({"_": pa.nulls(n)}).select([])


def scroll_call(name: str, filter: dict | None, after: int | None, limit: int, include: Sequence[str] | None) -> Call:
    body: dict[str, Any] = {"limit": int(limit)}
    if filter is not None:
        body["filter"] = filter
    if after is not None:
        body["after"] = int(after)
    if include is not None:
        body["include"] = list(include)
    return Call("POST", collection_path(name, "points", "scroll"), json=body, idempotent=True)


def read_page(doc: dict[str, Any]) -> ScrollPage:
    ids = np.asarray(doc["ids"], dtype=np.uint64)
    meta = doc.get("metadata") or {}
    table = pa.table({k: pa.array(v) for k, v in meta.items()}) if meta else _empty_table(ids.shape[0])
    return ScrollPage(ids, table, doc.get("next_after"))


def json_values(values: Any) -> list[Any]:
    """A column of metadata values as JSON-ready Python values."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values.to_pylist()
    if isinstance(values, np.ndarray):
        return values.tolist()
    if hasattr(values, "tolist"):  # pandas Series
        return values.tolist()
    return list(values)


def chunks(n: int, size: int) -> list[tuple[int, int]]:
    return [(s, min(n, s + size)) for s in range(0, n, size)]
