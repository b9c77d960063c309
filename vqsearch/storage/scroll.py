"""Scrolling: every live row matching a filter, a page at a time, in ascending id order.

A page is the ``limit`` smallest matching ids greater than the cursor ``after``.  Each
segment is walked in id order through its ``_id_order`` permutation, starting at the
cursor (a binary search), in chunks that grow geometrically: the filter is evaluated
on the chunk's rows only (their metadata is gathered with ``take``), and a segment
stops as soon as it has ``limit + 1`` matches.  The pages of all segments are then
merged.  Memory per page is O((limit + chunk) × segments) whatever the index size,
and a full scroll reads each row about once (plus at most ``limit + chunk`` rows per
segment and page looked at beyond the page's end).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from ..errors import InvalidInput
from .filters import CompiledFilter
from .ids import first_after

if TYPE_CHECKING:
    from .snapshot import SegmentView, Snapshot

#: Largest page a scroll may ask for (bounds one call's memory).
MAX_SCROLL_LIMIT = 100_000
_FIRST_CHUNK = 1024
_MAX_CHUNK = 1 << 16


@dataclass(frozen=True)
class ScrollPage:
    """One page of a scroll: ids ascending, their metadata, and the cursor of the next page.

    ``next_after`` is ``None`` when no matching row follows this page; otherwise pass it as
    ``after`` to get the next page.
    """

    ids: np.ndarray
    metadata: pa.Table
    next_after: int | None

    def __len__(self) -> int:
        return int(self.ids.shape[0])


def check_limit(limit: object) -> int:
    """Validate a page size: an int in ``[1, MAX_SCROLL_LIMIT]``."""
    if isinstance(limit, (bool, np.bool_)) or not isinstance(limit, (int, np.integer)):
        raise InvalidInput(f"limit must be an integer, got {type(limit).__name__} {limit!r}")
    if not 1 <= int(limit) <= MAX_SCROLL_LIMIT:
        raise InvalidInput(f"limit must be in [1, {MAX_SCROLL_LIMIT}], got {int(limit)}")
    return int(limit)


def scroll_page(snap: Snapshot, compiled: CompiledFilter, after: int | None, limit: int,
                columns: Sequence[str]) -> ScrollPage:
    """The page of ``snap`` after ``after`` (see module docstring); arguments already validated."""
    want = limit + 1  # one more than the page tells whether another page follows
    found_ids, found_seg, found_rows = [], [], []
    for i, seg in enumerate(snap.segments):
        rows = _segment_matches(seg, compiled, after, want)
        if rows.size:
            found_ids.append(seg.ids[rows])
            found_seg.append(np.full(rows.size, i, dtype=np.int64))
            found_rows.append(rows)
    if not found_ids:
        return ScrollPage(np.empty(0, np.uint64), snap.metadata_at(np.empty(0, np.int64), np.empty(0, np.int64),
                                                                   columns), None)
    ids = np.concatenate(found_ids)
    order = np.argsort(ids, kind="stable")[:want]
    more = order.size > limit
    order = order[:limit]
    seg_idx, rows = np.concatenate(found_seg)[order], np.concatenate(found_rows)[order]
    page_ids = np.ascontiguousarray(ids[order], dtype=np.uint64)
    metadata = snap.metadata_at(seg_idx, rows, columns)
    return ScrollPage(page_ids, metadata, int(page_ids[-1]) if more else None)


def _segment_matches(seg: SegmentView, compiled: CompiledFilter, after: int | None, want: int) -> np.ndarray:
    """Rows (ascending by id) of up to ``want`` live rows of ``seg`` with id > ``after`` matching the filter."""
    e = seg.segment.entry
    if seg.num_live == 0 or (after is not None and e.max_id <= after):
        return np.empty(0, np.int64)
    ids, order = seg.ids, seg.segment.id_order
    pos = first_after(ids, order, after)
    live = seg.live
    table = None if compiled.is_trivial else seg.metadata_table(sorted(compiled.fields))
    out: list[np.ndarray] = []
    found = 0
    chunk = max(_FIRST_CHUNK, want)
    while pos < ids.shape[0] and found < want:
        rows = order[pos:pos + chunk].astype(np.int64)
        pos += rows.size
        rows = rows[live[rows]]
        if table is not None and rows.size:
            # (a table without columns loses its row count in take(): only the ids are tested then)
            sub = table.take(pa.array(rows)) if table.num_columns else table.slice(0, rows.size)
            rows = rows[compiled.evaluate(sub, ids[rows] if compiled.needs_ids else None)]
        out.append(rows[:want - found])
        found += min(rows.size, want - found)
        chunk = min(chunk * 2, _MAX_CHUNK)
    return np.concatenate(out) if out else np.empty(0, np.int64)
