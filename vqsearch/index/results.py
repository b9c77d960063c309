"""What a search returns: ``(distances, ids)`` like FAISS, or a :class:`SearchResult` with metadata.

Both front ends (``Index.search`` and the HTTP search route) follow one contract: each
query gets exactly ``k`` slots, best first; a slot without a hit (``k`` above the number
of rows, an empty index, a filter that keeps fewer than ``k`` rows) has id ``-1`` and
distance ``+inf`` for ``l2`` / ``-inf`` for ``cosine`` and ``ip`` (the worst value of the
metric, so sorting keeps padding last).  FAISS pads the same way, with ±FLT_MAX; infinity
is used here so that a padded slot can never be mistaken for a real, very distant hit.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa


def missing_distance(metric: str) -> float:
    """The distance of a padded slot: ``+inf`` for ``l2`` (lower is better), ``-inf`` for similarities."""
    return float(np.inf) if metric == "l2" else float(-np.inf)


def padded(distances: np.ndarray, ids: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """``(distances, ids)`` of shape (nq, m ≤ k) widened to (nq, k) with id -1 and the missing distance."""
    nq, m = ids.shape
    if m == k:
        return distances, ids
    d = np.full((nq, k), missing_distance(metric), np.float32)
    i = np.full((nq, k), -1, np.int64)
    d[:, :m] = distances
    i[:, :m] = ids
    return d, i


@dataclass(frozen=True, eq=False)
class SearchResult:
    """Search hits with their metadata (what ``Index.search(..., include=[...])`` returns).

    ``distances`` float32 and ``ids`` int64 are (nq, k) as without ``include``; ``metadata`` is a
    ``pyarrow.Table`` of the included columns with nq × k rows in hit order (row ``i * k + j`` is
    hit ``j`` of query ``i``; padded slots are null rows).  The result unpacks like the plain
    answer, ``distances, ids = result``, and :meth:`to_arrow` / :meth:`to_pandas` give one row per
    real hit with ``query``, ``rank``, ``id`` and ``distance`` columns first.
    """

    distances: np.ndarray
    ids: np.ndarray
    metadata: pa.Table

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter((self.distances, self.ids))

    def __len__(self) -> int:
        """Number of queries."""
        return int(self.ids.shape[0])

    def column(self, name: str) -> list[list[Any]]:
        """One included column as nested lists, ``[query][rank]`` (``None`` for padded slots)."""
        k = self.ids.shape[1]
        values = self.metadata.column(name).to_pylist()
        return [values[i * k:(i + 1) * k] for i in range(self.ids.shape[0])]

    def to_arrow(self) -> pa.Table:
        """One row per real hit: ``query``, ``rank``, ``id``, ``distance``, then the included columns."""
        nq, k = self.ids.shape
        real = (self.ids >= 0).ravel()
        keep = pa.array(np.flatnonzero(real))
        head = pa.table({
            "query": pa.array(np.repeat(np.arange(nq, dtype=np.int64), k)[real]),
            "rank": pa.array(np.tile(np.arange(k, dtype=np.int64), nq)[real]),
            "id": pa.array(self.ids.ravel()[real]),
            "distance": pa.array(self.distances.ravel()[real]),
        })
        meta = self.metadata.take(keep)
        for name in meta.column_names:
            head = head.append_column(meta.schema.field(name), meta.column(name))
        return head

    def to_pandas(self) -> Any:
        """:meth:`to_arrow` as a ``pandas.DataFrame`` (needs pandas)."""
        return self.to_arrow().to_pandas()

    def __repr__(self) -> str:
        nq, k = self.ids.shape
        return f"<SearchResult {nq} queries × k={k}, columns={self.metadata.column_names}>"
