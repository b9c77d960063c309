"""Row references: one int64 per candidate naming a row of a pinned snapshot.

A search carries its candidates as ``(nq, m)`` int64 arrays of references ``(segment << 40) | row``
(``segment`` = position in the snapshot's segment list, ``row`` = row within that segment), with
``NO_ROW = -1`` for an empty slot.  Packed in one integer they sort, partition and gather like any
numpy array, so the selection helpers need not know about segments; :func:`pack` builds them and
:func:`by_segment` splits them again where per-segment data (codes, norms, ids) is read.

40 bits of row number allow 10¹² rows per segment; the 23 bits left cover 8 million segments.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

#: A (nq, m) int64 array of packed row references (``NO_ROW`` where empty).
RowRefs = npt.NDArray[np.int64]

SEGMENT_SHIFT = 40
ROW_MASK = (1 << SEGMENT_SHIFT) - 1
NO_ROW = -1


def pack(segment: int, rows: np.ndarray) -> RowRefs:
    """References to ``rows`` (int64 row numbers, ``-1`` = none) of segment number ``segment``."""
    rows = np.asarray(rows, dtype=np.int64)
    return np.where(rows >= 0, rows | (segment << SEGMENT_SHIFT), NO_ROW)


def empty(n_queries: int, width: int = 0) -> RowRefs:
    """``(n_queries, width)`` references, all empty."""
    return np.full((n_queries, width), NO_ROW, dtype=np.int64)


class SegmentRows(NamedTuple):
    """The references of one segment found in a reference array."""

    segment: int  # position in the snapshot's segment list
    where: np.ndarray  # bool mask over the reference array: which slots point into this segment
    rows: np.ndarray  # int64 row numbers of those slots (in the mask's row-major order)


def by_segment(refs: RowRefs) -> Iterator[SegmentRows]:
    """The non-empty references grouped by segment, in ascending segment order."""
    valid = refs >= 0
    segment_of = np.where(valid, refs >> SEGMENT_SHIFT, NO_ROW)
    for segment in np.unique(segment_of[valid]):
        where = segment_of == segment
        yield SegmentRows(int(segment), where, refs[where] & ROW_MASK)
