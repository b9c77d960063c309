"""What :meth:`ShardedIndex.search` returns: ``(distances, ids)`` plus partial-result and metadata fields."""

from __future__ import annotations

from typing import Any

import numpy as np


class SearchResult(tuple):
    """``(distances, ids)`` like :meth:`vqsearch.Index.search` (it unpacks the same way), plus:

    - ``partial`` / ``missing_shards``: shards that did not answer (only with ``allow_partial=True``);
    - ``metadata``: with ``include=[...]``, a ``pyarrow.Table`` of ``nq × k`` rows, row ``i·k + j`` for hit
      ``j`` of query ``i`` (null where the id is −1).
    """

    def __new__(cls, distances: np.ndarray, ids: np.ndarray, *, missing_shards: tuple[int, ...] = (),
                metadata: Any = None) -> SearchResult:
        self = super().__new__(cls, (distances, ids))
        self.missing_shards = tuple(missing_shards)
        self.metadata = metadata
        return self

    def __reduce__(self):
        return (_make_result, (self[0], self[1], self.missing_shards, self.metadata))

    @property
    def distances(self) -> np.ndarray:
        return self[0]

    @property
    def ids(self) -> np.ndarray:
        return self[1]

    @property
    def partial(self) -> bool:
        return bool(self.missing_shards)


def _make_result(distances, ids, missing_shards, metadata) -> SearchResult:
    return SearchResult(distances, ids, missing_shards=missing_shards, metadata=metadata)
