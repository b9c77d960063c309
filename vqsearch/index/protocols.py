"""What the index needs from storage, as structural types.

The index composes :class:`vqsearch.storage.Store` but depends only on these protocols: any store whose
snapshots pin a list of immutable segments of code columns works (``vqsearch.storage`` provides the one
in use; tests or other backends may provide their own).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np


class SegmentLike(Protocol):
    """One immutable segment of a pinned snapshot: per-row code columns, ids and the live mask."""

    @property
    def name(self) -> str: ...  # stable for the segment's lifetime: the index caches derived data by it

    @property
    def num_rows(self) -> int: ...  # physical rows (the length of every column)

    @property
    def num_live(self) -> int: ...  # rows neither deleted nor superseded

    @property
    def ids(self) -> np.ndarray: ...  # uint64 (num_rows,)

    @property
    def live(self) -> np.ndarray: ...  # bool (num_rows,)

    def column(self, name: str) -> np.ndarray: ...  # uint8 (num_rows, code_size) code column

    def extra(self, name: str) -> np.ndarray: ...  # an extra per-row column ("list", "norm2")


class RowsLike(Protocol):
    """Rows fetched by id, in request order."""

    ids: np.ndarray
    columns: dict[str, np.ndarray]
    metadata: Any  # pyarrow.Table or None


class SnapshotLike(Protocol):
    """A pinned, read-only version of a store."""

    @property
    def segments(self) -> Sequence[SegmentLike]: ...

    @property
    def num_rows(self) -> int: ...  # live rows

    @property
    def metadata_schema(self) -> Any: ...  # pyarrow.Schema or None

    def filter_masks(self, filter_expr: Mapping[str, Any] | None) -> list[np.ndarray]: ...

    def contains(self, ids: object) -> np.ndarray: ...

    def get(self, ids: object) -> RowsLike: ...


class StoreLike(Protocol):
    """A versioned store of code columns, metadata and the index's configuration and fitted states."""

    @property
    def path(self) -> Path: ...

    @property
    def config(self) -> dict[str, Any]: ...  # the index's settings (IndexConfig.to_json)

    @property
    def blobs(self) -> dict[str, bytes]: ...  # serialised quantiser and IVF states

    def snapshot(self) -> SnapshotLike: ...

    def write(self, ids: object, columns: Mapping[str, object], vectors: object = None, metadata: object = None,
              extra: Mapping[str, object] | None = None, *, upsert: bool = False,
              config: Mapping[str, Any] | None = None, blobs: Mapping[str, bytes] | None = None) -> int: ...

    def delete(self, ids: object) -> int: ...

    def set_config(self, config: Mapping[str, Any] | None = None,
                   blobs: Mapping[str, bytes] | None = None) -> int: ...

    def compact(self) -> int: ...

    def versions(self) -> list[Any]: ...

    def stats(self) -> dict[str, Any]: ...

    def close(self) -> None: ...
