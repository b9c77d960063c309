"""Snapshots: an immutable, pinned view of one store version.

A snapshot holds its segments' memory maps open, so it stays readable even after
a writer has committed newer versions and garbage-collected the files (POSIX
keeps unlinked, mapped files alive).  Nothing here takes a lock or blocks.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import UnknownIds
from .config import Layout
from .deletions import DeletionVector
from .filters import compile_filter
from .ids import as_id_array, find_sorted, preview
from .manifest import Manifest
from .segment import Segment


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
        """Per-segment bool masks of live rows matching ``filter_expr`` (None / {} = all live rows)."""
        compiled = compile_filter(filter_expr, self.metadata_schema)
        out = []
        for seg in self.segments:
            if compiled.is_trivial:
                out.append(seg.live.copy())
            else:
                out.append(compiled.evaluate(seg.metadata_table()) & seg.live)
        return out

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
        meta_parts: list[pa.Table] = []
        meta_pos: list[np.ndarray] = []
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
            if layout.metadata_schema is not None:
                meta_parts.append(seg.metadata_table().take(pa.array(r)))
                meta_pos.append(pos)
        metadata = None
        if layout.metadata_schema is not None:
            if meta_parts:
                table = pa.concat_tables(meta_parts)
                inverse = np.empty(k, dtype=np.int64)
                inverse[np.concatenate(meta_pos)] = np.arange(k)
                metadata = table.take(pa.array(inverse)).combine_chunks()
            else:
                metadata = layout.metadata_schema.empty_table()
        return Rows(ids=q, columns=columns, vectors=vectors, extra=extra, metadata=metadata)
