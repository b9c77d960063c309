"""Snapshots: an immutable, pinned view of one store version.

A snapshot holds its segments' memory maps open, so it stays readable even after
a writer has committed newer versions and garbage-collected the files (POSIX
keeps unlinked, mapped files alive).  Nothing here takes a lock or blocks.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from ..errors import InvalidInput, UnknownIds
from .config import Layout
from .deletions import DeletionVector
from .filters import CompiledFilter, compile_filter
from .ids import as_cursor, as_id_array, as_padded_ids, find_sorted, preview
from .manifest import Manifest
from .scroll import ScrollPage, check_limit, scroll_page
from .segment import Segment

__all__ = ["Rows", "ScrollPage", "SegmentView", "Snapshot", "as_id_array", "find_sorted"]


class SegmentView:
    """One segment as seen by a snapshot: data columns plus the version's deletion mask.

    ``num_rows`` counts physical rows (the length of every array); ``num_live`` the
    rows not deleted or superseded by an upsert.
    """

    def __init__(self, segment: Segment, deletion: DeletionVector | None, layout: Layout) -> None:
        self.segment = segment
        self.deletion = deletion
        self.layout = layout

    @property
    def name(self) -> str:
        return self.segment.file

    @property
    def num_rows(self) -> int:
        return self.segment.num_rows

    @property
    def num_live(self) -> int:
        return self.segment.entry.rows - (0 if self.deletion is None else self.deletion.entry.count)

    @property
    def ids(self) -> np.ndarray:
        return self.segment.ids

    def column(self, name: str) -> np.ndarray:
        return self.segment.column(name)

    @property
    def vectors(self) -> np.ndarray | None:
        return self.segment.vectors

    def extra(self, name: str) -> np.ndarray:
        return self.segment.extra(name)

    def metadata_table(self, columns: list[str] | None = None) -> pa.Table:
        """User metadata (pa.Table with the version's declared schema), read lazily and zero-copy.

        ``columns`` selects the columns (all by default); columns the segment does not hold are null.
        """
        return self.segment.metadata_table(self.layout.metadata_schema, columns)

    @functools.cached_property
    def dead_rows(self) -> np.ndarray:
        """Sorted uint32 positions of dead rows."""
        if self.deletion is None:
            return np.empty(0, dtype=np.uint32)
        return self.deletion.rows

    @functools.cached_property
    def live(self) -> np.ndarray:
        """Read-only bool (n,) mask of live rows."""
        mask = np.ones(self.num_rows, dtype=bool)
        mask[self.dead_rows] = False
        mask.setflags(write=False)
        return mask

    def find(self, ids: np.ndarray) -> np.ndarray:
        """Row of each id among this segment's *live* rows, or -1."""
        e = self.segment.entry
        out = np.full(ids.shape[0], -1, dtype=np.int64)
        cand = np.flatnonzero((ids >= e.min_id) & (ids <= e.max_id))
        if cand.size == 0:
            return out
        rows = find_sorted(self.segment.ids, self.segment.id_order, ids[cand])
        hit = rows >= 0
        if self.deletion is not None:
            hit[hit] = self.live[rows[hit]]
        out[cand[hit]] = rows[hit]
        return out


@dataclass(frozen=True)
class Rows:
    """Rows fetched by id, in request order."""

    ids: np.ndarray
    columns: dict[str, np.ndarray]
    vectors: np.ndarray | None
    extra: dict[str, np.ndarray]
    metadata: pa.Table | None


class Snapshot:
    """A pinned, read-only version of a store (see module docstring)."""

    def __init__(self, manifest: Manifest, segments: list[SegmentView], blobs: Mapping[str, bytes]) -> None:
        self.manifest = manifest
        self.segments = segments
        self._blobs = dict(blobs)

    @property
    def version(self) -> int:
        return self.manifest.version

    @property
    def timestamp(self) -> float:
        return self.manifest.timestamp

    @property
    def layout(self) -> Layout:
        return self.manifest.layout

    @property
    def config(self) -> dict[str, Any]:
        return self.manifest.config

    @property
    def blobs(self) -> dict[str, bytes]:
        return dict(self._blobs)

    @property
    def metadata_schema(self) -> pa.Schema | None:
        return self.manifest.layout.metadata_schema

    @property
    def num_rows(self) -> int:
        """Live rows across all segments."""
        return sum(s.num_live for s in self.segments)

    def __len__(self) -> int:
        return self.num_rows

    def filter_masks(self, filter_expr: Mapping[str, Any] | None) -> list[np.ndarray]:
        """Per-segment bool masks of live rows matching ``filter_expr`` (None / {} = all live rows).

        Reads only the metadata columns the filter names (and the ids if it tests ``id``).
        """
        compiled = compile_filter(filter_expr, self.metadata_schema)
        return [self._mask(seg, compiled) for seg in self.segments]

    def count(self, filter: Mapping[str, Any] | None = None) -> int:
        """Exact number of live rows matching ``filter`` (all live rows for ``None``; then no data is read)."""
        compiled = compile_filter(filter, self.metadata_schema)
        if compiled.is_trivial:
            return self.num_rows
        return sum(int(self._mask(seg, compiled).sum()) for seg in self.segments)

    def scroll(self, filter: Mapping[str, Any] | None = None, after: int | None = None,
               limit: int = 1000, columns: Sequence[str] | None = None) -> ScrollPage:
        """One page of live rows matching ``filter``, in ascending id order, after the id ``after``.

        Returns a :class:`ScrollPage`: ``ids`` (uint64), ``metadata`` (the ``columns``, all by
        default, ``[]`` for none) and ``next_after``, the cursor for the next page (``None`` when
        this page is the last).  Memory is O(limit × segments); see :mod:`vqsearch.storage.scroll`.
        Raises ``InvalidInput`` for a bad filter, cursor, limit (1 to 100,000) or column name.
        """
        compiled = compile_filter(filter, self.metadata_schema)
        return scroll_page(self, compiled, as_cursor(after), check_limit(limit), self._columns(columns))

    def metadata(self, ids: object, columns: Sequence[str] | None = None, *,
                 missing: Literal["raise", "null"] = "raise") -> pa.Table:
        """Metadata of ``ids`` in request order, reading only the requested ``columns`` (all by default).

        ``missing="raise"``: ids that are not live raise ``UnknownIds`` listing them.
        ``missing="null"``: their rows are null, and negative ids (such as the -1 that pads
        search results) are accepted as "no row".  ``columns=[]`` gives a table with one row
        per id and no column.  Unknown column names raise ``InvalidInput`` listing the columns.
        """
        if missing not in ("raise", "null"):
            raise InvalidInput(f"missing must be 'raise' or 'null', got {missing!r}")
        names = self._columns(columns)
        q, present = as_padded_ids(ids) if missing == "null" else (as_id_array(ids), None)
        seg_idx, rows = self.locate(q)
        if present is not None:
            seg_idx[~present] = -1
        found = seg_idx >= 0
        if missing == "raise" and not found.all():
            bad = q[~found]
            raise UnknownIds(f"{bad.size} id(s) not found: {preview(bad)}")
        if not names:
            return _no_columns(q.shape[0])
        table = self.metadata_at(seg_idx[found], rows[found], names)
        if not found.all():
            pos = np.cumsum(found) - 1
            table = table.take(pa.array(pos, mask=~found))
        return table

    def metadata_at(self, seg_idx: np.ndarray, rows: np.ndarray, columns: Sequence[str] | None = None) -> pa.Table:
        """Metadata of rows given by (segment index, row) positions, in that order (``columns``: all)."""
        k = int(seg_idx.shape[0])
        names = self._columns(columns)
        if not names:
            return _no_columns(k)
        parts, positions = [], []
        for i in np.unique(seg_idx):
            pos = np.flatnonzero(seg_idx == i)
            parts.append(self.segments[int(i)].metadata_table(names).take(pa.array(rows[pos])))
            positions.append(pos)
        if not parts:
            schema = self.metadata_schema
            return pa.schema([schema.field(n) for n in names]).empty_table()
        table = pa.concat_tables(parts)
        if len(parts) > 1 or not np.array_equal(positions[0], np.arange(k)):
            inverse = np.empty(k, dtype=np.int64)
            inverse[np.concatenate(positions)] = np.arange(k)
            table = table.take(pa.array(inverse))
        return table.combine_chunks()

    def _columns(self, columns: Sequence[str] | None) -> list[str]:
        """Validated metadata column names (``None`` = all)."""
        names = [] if self.metadata_schema is None else list(self.metadata_schema.names)
        if columns is None:
            return names
        if isinstance(columns, str) or not all(isinstance(c, str) for c in columns):
            raise InvalidInput(f"columns must be a list of metadata column names, got {columns!r}")
        unknown = [c for c in columns if c not in names]
        if unknown:
            raise InvalidInput(f"unknown metadata column(s) {unknown}; this index has {names}")
        return list(columns)

    def _mask(self, seg: SegmentView, compiled: CompiledFilter) -> np.ndarray:
        if compiled.is_trivial:
            return seg.live.copy()
        table = seg.metadata_table(sorted(compiled.fields))
        ids = seg.ids if compiled.needs_ids else None
        return compiled.evaluate(table, ids) & seg.live

    def locate(self, ids: object) -> tuple[np.ndarray, np.ndarray]:
        """(segment index, row) of each id's live row; -1 in both for ids not present."""
        q = as_id_array(ids)
        seg_idx = np.full(q.shape[0], -1, dtype=np.int64)
        rows = np.full(q.shape[0], -1, dtype=np.int64)
        for i, seg in enumerate(self.segments):
            pending = np.flatnonzero(seg_idx < 0)
            if pending.size == 0:
                break
            r = seg.find(q[pending])
            hit = r >= 0
            seg_idx[pending[hit]] = i
            rows[pending[hit]] = r[hit]
        return seg_idx, rows

    def contains(self, ids: object) -> np.ndarray:
        """Bool mask: which ids are live in this version."""
        return self.locate(ids)[0] >= 0

    def get(self, ids: object) -> Rows:
        """Fetch rows by id (codes, vectors, extras, metadata), in request order.

        Raises :class:`~vqsearch.errors.UnknownIds` listing ids that are not present.
        """
        q = as_id_array(ids)
        seg_idx, rows = self.locate(q)
        missing = q[seg_idx < 0]
        if missing.size:
            raise UnknownIds(f"{missing.size} id(s) not found: {preview(missing)}")
        layout = self.layout
        k = q.shape[0]
        columns = {name: np.empty((k, size), dtype=np.uint8) for name, size in layout.code_columns.items()}
        vectors = None if layout.vector_dtype is None else np.empty((k, layout.dim), dtype=layout.vector_dtype)
        extra = {name: np.empty(k, dtype=dt) for name, dt in (layout.extra_columns or {}).items()}
        for i in np.unique(seg_idx):
            seg = self.segments[int(i)]
            pos = np.flatnonzero(seg_idx == i)
            r = rows[pos]
            for name in columns:
                columns[name][pos] = seg.column(name)[r]
            if vectors is not None:
                vectors[pos] = seg.vectors[r]
            for name in extra:
                extra[name][pos] = seg.extra(name)[r]
        metadata = None if layout.metadata_schema is None else self.metadata_at(seg_idx, rows)
        return Rows(ids=q, columns=columns, vectors=vectors, extra=extra, metadata=metadata)


def _no_columns(n: int) -> pa.Table:
    """A table of ``n`` rows and no column (what ``columns=[]`` asks for)."""
    return pa.table({"_": pa.nulls(n)}).select([])
