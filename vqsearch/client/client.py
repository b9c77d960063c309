"""``vqsearch.Client``: a vqsearch server's collections with the methods and shapes of :class:`vqsearch.Index`.

>>> client = vqsearch.Client("http://127.0.0.1:8000", api_key=None)          # doctest: +SKIP
>>> docs = client.create_collection("docs", dim=384, metric="cosine")         # doctest: +SKIP
>>> docs.add(vectors, metadata={"section": sections})                        # doctest: +SKIP
>>> distances, ids = docs.search(queries, k=10, filter={"section": "python"})  # doctest: +SKIP

Answers are numpy and Arrow like the local index: ``search`` gives ``(distances, ids)`` of shape
``(nq, k)`` padded with id -1 (distance ``+inf`` for l2, ``-inf`` for cosine/ip), or a
:class:`~vqsearch.index.SearchResult` with ``include``; ``scroll`` yields the pages
(:class:`~vqsearch.storage.ScrollPage`) that ``Index.scroll`` returns.  Writes travel as
Arrow IPC streams in chunks (each chunk is one atomic commit on the server), with a tqdm bar
when they take a while.  Errors are the library's exception classes (see :mod:`.transport`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import httpx
import numpy as np
import pyarrow as pa

from .._validation import as_float_matrix, as_ids
from ..errors import EmptyInput, InvalidInput, UnknownIds
from ..index.results import SearchResult
from ..storage import ScrollPage, VersionInfo
from . import calls
from .calls import Call, collection_path
from .transport import RetryPolicy, SyncTransport

#: Bytes of vectors per write request when ``batch_size`` is not given (the first request trains the
#: collection's quantisers, so it should be large enough to be representative).
WRITE_BYTES = 32 << 20
#: Texts per write request when ``batch_size`` is not given: the server embeds them (about 10 ms per text on
#: a CPU core for MiniLM), so smaller requests let the bar move while staying large enough to train on.
TEXT_BATCH = 1000
#: With ``progress=None``, a write's bar appears only once it has run this many seconds.
PROGRESS_DELAY = 1.0


class Client:
    """A connection to a vqsearch server (``vqsearch serve``).

    Parameters
    ----------
    url:
        The server's base URL, e.g. ``"http://127.0.0.1:8000"``.
    api_key:
        Sent as ``Authorization: Bearer <key>`` (admin keys can write, read-only keys can read).
    timeout:
        Seconds per request (connect, read and write each).
    retries, backoff:
        Idempotent calls (search, get, count, scroll, versions, listing) are retried ``retries`` times on
        connection errors and on 503 answers with ``Retry-After``, waiting ``backoff`` × 2^attempt seconds
        (or the server's ``Retry-After``).  Writes are never re-sent.
    """

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 60.0, *, retries: int = 3,
                 backoff: float = 0.25, transport: httpx.BaseTransport | None = None) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise InvalidInput(f"url must start with http:// or https://, got {url!r}")
        if retries < 0 or backoff < 0:
            raise InvalidInput("retries and backoff must be non-negative")
        self.url = url.rstrip("/")
        self._transport = SyncTransport(self.url, api_key, timeout, RetryPolicy(retries, backoff), transport)

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<vqsearch.Client {self.url}>"

    def _send(self, call: Call) -> httpx.Response:
        return self._transport.send(call)

    def _json(self, call: Call) -> Any:
        return self._send(call).json()

    # ------------------------------------------------------------ collections
    def create_collection(self, name: str, dim: int | None = None, *, metric: str = "cosine",
                          preset: str = "default", embedder: str | None = None, **options: Any) -> RemoteCollection:
        """Create an empty collection; ``options`` are the index options (``scan``, ``rescore``, ``ivf``,
        ``oversample``, ``residual``) that override the preset.  ``embedder="minilm"`` makes a text
        collection (``dim`` is then the embedder's)."""
        body: dict[str, Any] = {"name": name, "metric": metric, "preset": preset, "embedder": embedder, **options}
        if dim is not None:
            body["dim"] = int(dim)
        info = self._json(Call("POST", "/v1/collections", json=body))
        return RemoteCollection(self, info)

    def collection(self, name: str) -> RemoteCollection:
        """An existing collection (raises ``NotFound``)."""
        return RemoteCollection(self, self._json(Call("GET", collection_path(name), idempotent=True)))

    def list_collections(self) -> list[dict[str, Any]]:
        """Every collection's settings and statistics (damaged ones with ``status: "unavailable"``)."""
        return list(self._json(Call("GET", "/v1/collections", idempotent=True))["collections"])

    def delete_collection(self, name: str) -> None:
        """Delete a collection and its data (raises ``NotFound``)."""
        self._send(Call("DELETE", collection_path(name)))

    def set_alias(self, alias: str, collection: str) -> None:
        """Point ``alias`` at ``collection`` (create or move it); every collection call accepts the alias."""
        self._send(Call("PUT", f"/v1/aliases/{alias}", json={"collection": collection}))

    def delete_alias(self, alias: str) -> None:
        self._send(Call("DELETE", f"/v1/aliases/{alias}"))

    def list_aliases(self) -> dict[str, str]:
        """Alias → collection name."""
        return dict(self._json(Call("GET", "/v1/aliases", idempotent=True))["aliases"])

    def health(self) -> dict[str, Any]:
        return self._json(Call("GET", "/healthz", idempotent=True))


class RemoteCollection:
    """One collection on a server, with the methods of :class:`vqsearch.Index` (see the module docstring)."""

    def __init__(self, client: Client, info: Mapping[str, Any]) -> None:
        self._client = client
        self.name: str = info["name"]
        self.dim: int = int(info["dim"])
        self.metric: str = info["metric"]
        self.embedder: str | None = info.get("embedder")

    def __repr__(self) -> str:
        return f"<vqsearch RemoteCollection {self.name!r} dim={self.dim} metric={self.metric} at {self._client.url}>"

    def __len__(self) -> int:
        return self.count()

    def info(self) -> dict[str, Any]:
        """Settings and statistics (count, bytes, segments, version, metadata columns ...)."""
        return self._client._json(Call("GET", collection_path(self.name), idempotent=True))

    # ------------------------------------------------------------ writes
    def add(self, vectors: Any = None, ids: object = None, metadata: Any = None, *, texts: Sequence[str] | None = None,
            batch_size: int | None = None, progress: bool | None = None) -> np.ndarray:
        """Add points; returns their uint64 ids.  Without ``ids`` new ids follow the largest id written so far.

        Give ``vectors`` (float (n, dim)) or, for a collection with an embedder, ``texts``.  An id that
        exists already raises ``Conflict`` (use :meth:`upsert` to replace).  The points are sent in
        chunks of ``batch_size`` (default: about 32 MiB of vectors, or 1,000 texts); each chunk is atomic, so after an
        error the chunks before it are written.  ``progress`` as in :meth:`vqsearch.Index.add`.
        """
        return self._write(vectors, ids, metadata, texts, replace=False, batch_size=batch_size, progress=progress)

    def upsert(self, vectors: Any = None, ids: object = None, metadata: Any = None, *,
               texts: Sequence[str] | None = None, batch_size: int | None = None,
               progress: bool | None = None) -> np.ndarray:
        """Insert or replace points by id (explicit ``ids``); otherwise as :meth:`add`."""
        if ids is None:
            raise InvalidInput("upsert needs explicit ids")
        return self._write(vectors, ids, metadata, texts, replace=True, batch_size=batch_size, progress=progress)

    def _write(self, vectors: Any, ids: object, metadata: Any, texts: Sequence[str] | None, *, replace: bool,
               batch_size: int | None, progress: bool | None) -> np.ndarray:
        if (vectors is None) == (texts is None):
            raise InvalidInput("give exactly one of vectors or texts")
        x = None
        if vectors is not None:
            x = as_float_matrix(vectors, d=self.dim, name="vectors", allow_empty=False)
            n = x.shape[0]
        else:
            if isinstance(texts, str) or not all(isinstance(t, str) for t in texts or ()):
                raise InvalidInput("texts must be a list of strings")
            texts = list(texts or ())
            n = len(texts)
            if n == 0:
                raise EmptyInput("no texts given")
        if ids is None:
            start = int(self.info()["next_id"])
            id_arr = np.arange(start, start + n, dtype=np.uint64)
        else:
            id_arr = as_ids(ids, n)
        if np.unique(id_arr).shape[0] != n:
            raise InvalidInput("duplicate ids in one batch")
        meta = calls.metadata_table(metadata, n)
        if batch_size is None:
            batch_size = max(1024, WRITE_BYTES // (4 * self.dim)) if x is not None else TEXT_BATCH
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise InvalidInput(f"batch_size must be a positive integer, got {batch_size!r}")
        bar = _bar(n, progress, "adding" if not replace else "upserting")
        try:
            for s, e in calls.chunks(n, int(batch_size)):
                body = calls.arrow_body(id_arr[s:e], None if x is None else x[s:e],
                                        None if texts is None else texts[s:e],
                                        None if meta is None else meta.slice(s, e - s))
                self._client._send(calls.write_call(self.name, body, replace=replace))
                if bar is not None:
                    bar.update(e - s)
        finally:
            if bar is not None:
                bar.close()
        return id_arr

    def delete(self, ids: object) -> None:
        """Delete points by id; if an id is not in the collection nothing is deleted (``UnknownIds``)
        (for more than 100,000 ids, each request of 100,000 is atomic on its own)."""
        arr = np.unique(as_ids(ids))
        if arr.size == 0:
            raise EmptyInput("no ids to delete")
        for s, e in calls.chunks(arr.size, calls.MAX_IDS):
            self._client._send(Call("DELETE", collection_path(self.name, "points"), json={"ids": arr[s:e]}))

    def update_metadata(self, ids: object, values: Mapping[str, Any] | Any) -> None:
        """Set metadata columns of existing points without re-encoding them (one atomic commit per 100,000 ids).

        ``values``: ``{column: values}``, a pyarrow Table or a pandas DataFrame, one row per id."""
        arr = as_ids(ids)
        if arr.size == 0:
            raise EmptyInput("no ids to update")
        table = calls.metadata_table(values, arr.size)
        if table is None or table.num_columns == 0:
            raise InvalidInput("values must name at least one column")
        for s, e in calls.chunks(arr.size, calls.MAX_IDS):
            part = table.slice(s, e - s)
            body = {"ids": arr[s:e], "metadata": {c: calls.json_values(part.column(c)) for c in part.column_names}}
            self._client._send(Call("PATCH", collection_path(self.name, "points", "metadata"), json=body))

    # ------------------------------------------------------------ reads
    def search(self, queries: Any, k: int = 10, filter: dict | None = None, include: Sequence[str] | None = None,
               oversample: int | None = None,
               nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray] | SearchResult:
        """k nearest neighbours of each query, as :meth:`vqsearch.Index.search` answers them.

        ``queries`` is float (nq, dim) or (for a collection with an embedder) a list of texts.  Without
        ``include``: ``(distances float32, ids int64)``, each (nq, k), padded with id -1.  With it: a
        :class:`~vqsearch.index.SearchResult` (``.distances``, ``.ids``, ``.metadata``)."""
        x, texts = calls.as_queries(queries, self.dim)
        options = calls.search_options(k, filter, oversample, nprobe)
        if include is not None and (isinstance(include, str) or not all(isinstance(c, str) for c in include)):
            raise InvalidInput(f"include must be a list of metadata column names, got {include!r}")
        nq = x.shape[0] if x is not None else len(texts or ())
        parts_d, parts_i, columns = [], [], {c: [] for c in include or ()}
        for s, e in calls.chunks(nq, calls.MAX_QUERIES):
            if include is None and x is not None:
                d, i = calls.read_hits(self._client._send(calls.binary_search_call(self.name, x[s:e], options)).content)
            else:
                call = calls.json_search_call(self.name, None if x is None else x[s:e],
                                              None if texts is None else texts[s:e], options, include or [])
                d, i, cols = calls.read_json_hits(self._client._json(call), int(k), self.metric, include or [])
                for c in columns:
                    columns[c].extend(cols[c])
            parts_d.append(d)
            parts_i.append(i)
        dist, ids = np.concatenate(parts_d), np.concatenate(parts_i)
        if include is None:
            return dist, ids
        return calls.search_result(dist, ids, columns)

    def count(self, filter: dict | None = None) -> int:
        """Exact number of points matching ``filter`` (all points without one)."""
        body = {} if filter is None else {"filter": filter}
        return int(self._client._json(Call("POST", collection_path(self.name, "count"), json=body,
                                           idempotent=True))["count"])

    def scroll_page(self, filter: dict | None = None, after: int | None = None, limit: int = 1000,
                    columns: Sequence[str] | None = None) -> ScrollPage:
        """One page, as :meth:`vqsearch.Index.scroll` returns it (``limit`` ≤ 10,000 over HTTP)."""
        return calls.read_page(self._client._json(calls.scroll_call(self.name, filter, after, limit, columns)))

    def scroll(self, filter: dict | None = None, batch: int = 1000, include: Sequence[str] | None = None,
               after: int | None = None) -> Iterator[ScrollPage]:
        """Every point matching ``filter``, ascending by id, as pages of up to ``batch`` points
        (``.ids`` numpy, ``.metadata`` Arrow); follows the server's ``after`` cursor to the end."""
        if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or not 1 <= batch <= calls.MAX_SCROLL:
            raise InvalidInput(f"batch must be an integer in [1, {calls.MAX_SCROLL}], got {batch!r}")
        while True:
            page = self.scroll_page(filter, after, int(batch), include)
            if len(page):
                yield page
            if page.next_after is None:
                return
            after = page.next_after

    def get(self, ids: object, include: Sequence[str] | None = None, *, missing: str = "raise") -> pa.Table:
        """Metadata of ``ids`` in request order (a pyarrow Table), like :meth:`vqsearch.Index.get_metadata`.

        ``missing="raise"``: ids not in the collection raise ``UnknownIds``; ``"null"``: their rows are
        null.  The id -1 (search padding) always gives a null row."""
        if missing not in ("raise", "null"):
            raise InvalidInput(f"missing must be 'raise' or 'null', got {missing!r}")
        arr = np.asarray(ids)
        if arr.ndim == 0:
            arr = arr.reshape(1)
        if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
            raise InvalidInput(f"ids must be a 1-D array of integers, got shape {arr.shape} dtype {arr.dtype}")
        if arr.dtype.kind == "i" and arr.size and int(arr.min()) < -1:
            raise InvalidInput(f"ids must be non-negative (or -1 for \"no row\"), got {int(arr.min())}")
        real = np.unique(arr[arr >= 0].astype(np.uint64)) if arr.dtype.kind == "i" else np.unique(arr)
        found_ids: list[np.ndarray] = []
        tables: list[pa.Table] = []
        for s, e in calls.chunks(real.size, calls.MAX_SCROLL):
            part = real[s:e]
            flt = {"id": {"in": part}}
            page = self.scroll_page(flt, int(part[0]) - 1 if part[0] > 0 else None, int(e - s), include)
            found_ids.append(page.ids)
            tables.append(page.metadata)
        got = np.concatenate(found_ids) if found_ids else np.zeros(0, np.uint64)
        if missing == "raise" and got.size != real.size:
            absent = np.setdiff1d(real, got)
            shown = ", ".join(str(int(i)) for i in absent[:10])
            raise UnknownIds(f"{absent.size} id(s) not found: [{shown}{', ...' if absent.size > 10 else ''}]")
        present = arr >= 0
        wanted = np.where(present, arr, 0).astype(np.uint64)
        hit = np.zeros(arr.size, dtype=bool)
        pos = np.zeros(arr.size, dtype=np.int64)
        if got.size:
            pos = np.minimum(np.searchsorted(got, wanted), got.size - 1)
            hit = present & (got[pos] == wanted)
        if not tables or tables[0].num_columns == 0:
            return pa.table({"_": pa.nulls(arr.size)}).select([])
        return pa.concat_tables(tables).take(pa.array(pos, mask=~hit))

    get_metadata = get

    def versions(self) -> list[VersionInfo]:
        """Retained versions, oldest first, as :meth:`vqsearch.Index.versions` lists them."""
        doc = self._client._json(Call("GET", collection_path(self.name, "versions"), idempotent=True))
        out = [VersionInfo(int(v["version"]), float(v["timestamp"]), int(v["rows"])) for v in doc["versions"]]
        return sorted(out, key=lambda v: v.version)


def _bar(n: int, progress: bool | None, desc: str) -> Any:
    if progress is False:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=n, unit="pt", unit_scale=True, desc=desc, leave=False,
                delay=0.0 if progress else PROGRESS_DELAY)
