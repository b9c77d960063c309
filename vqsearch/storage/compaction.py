"""Compaction: which segments to rewrite (policy) and the rewrite itself.

Automatic compaction is size-tiered.  A segment smaller than half the target
size is *partial*; partial segments fall into tiers
``floor(log_fanout(live_bytes / 4 KiB))``, and when one tier holds ``merge_fanout``
segments, that tier and every lower one are merged.  Each row is therefore
rewritten about once per tier (O(log) write amplification) and the number of
partial segments stays below ``(fanout - 1) * number_of_tiers``.  Independently,
a segment whose deleted fraction exceeds ``max_deleted_fraction`` is rewritten
without its dead rows, and a segment with no live rows is dropped outright.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from .config import Layout, StorePolicy
from .manifest import SegmentEntry
from .schema import without_null_columns
from .segment import Segment, take_rows, write_segment
from .snapshot import SegmentView

TIER_BASE_BYTES = 4096


@dataclass(frozen=True)
class CompactionPlan:
    """Indices (into the manifest's segment list) to rewrite and to drop."""

    rewrite: tuple[int, ...] = ()
    drop: tuple[int, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.rewrite and not self.drop


def live_bytes(s: SegmentEntry) -> float:
    return s.size * s.live_rows / s.rows


def tier(size: float, fanout: int) -> int:
    return int(math.floor(math.log(max(size, TIER_BASE_BYTES) / TIER_BASE_BYTES, fanout)))


def plan(segments: tuple[SegmentEntry, ...], policy: StorePolicy, *, full: bool) -> CompactionPlan:
    """Choose the segments to rewrite: the automatic policy, or everything mergeable (``full``)."""
    drop = [i for i, s in enumerate(segments) if s.live_rows == 0]
    alive = [i for i, s in enumerate(segments) if s.live_rows > 0]
    half = policy.target_segment_bytes / 2
    if full:
        rewrite = [i for i in alive if segments[i].dead_rows or live_bytes(segments[i]) < half]
        if len(rewrite) == 1 and not segments[rewrite[0]].dead_rows:
            rewrite = []  # a lone clean segment is already compact
        return CompactionPlan(tuple(rewrite), tuple(drop))
    chosen = {i for i in alive if segments[i].dead_rows / segments[i].rows > policy.max_deleted_fraction}
    partial = [i for i in alive if i not in chosen and live_bytes(segments[i]) < half]
    tiers: dict[int, list[int]] = {}
    for i in partial:
        tiers.setdefault(tier(live_bytes(segments[i]), policy.merge_fanout), []).append(i)
    for t in sorted(tiers):
        if len(tiers[t]) >= policy.merge_fanout:
            chosen.update(i for i in partial if tier(live_bytes(segments[i]), policy.merge_fanout) <= t)
            break
    return CompactionPlan(tuple(sorted(chosen)), tuple(drop))


def rows_per_output(segments: list[SegmentEntry], policy: StorePolicy, layout: Layout) -> int:
    """Rows per output segment so that outputs stay near ``target_segment_bytes``."""
    rows = sum(s.live_rows for s in segments)
    nbytes = sum(live_bytes(s) for s in segments)
    row_bytes = max(layout.row_bytes(), nbytes / max(rows, 1))
    return max(1, int(policy.target_segment_bytes // row_bytes))


def merge(root: Path, views: list[SegmentView], *, layout: Layout, version: int, chunk_rows: int,
          codecs: Mapping[str, str], blob_hashes: Mapping[str, str]) -> list[Segment]:
    """Write the live rows of ``views`` (in order) into new segments of at most ``chunk_rows`` rows.

    Reading the inputs verifies their checksums, so corruption is never copied
    silently into a new segment.  Memory use is bounded by one output segment.
    """
    pieces: list[tuple[SegmentView, np.ndarray]] = []
    for v in views:
        idx = np.flatnonzero(v.live)
        for start in range(0, idx.size, chunk_rows):
            pieces.append((v, idx[start:start + chunk_rows]))
    out: list[Segment] = []
    group: list[tuple[SegmentView, np.ndarray]] = []
    count = 0

    def flush() -> None:
        nonlocal group, count
        if count:
            out.append(_write_group(root, group, layout=layout, version=version, codecs=codecs,
                                    blob_hashes=blob_hashes))
        group, count = [], 0

    for view, idx in pieces:
        while idx.size:
            take = idx[:chunk_rows - count]
            idx = idx[take.size:]
            group.append((view, take))
            count += take.size
            if count >= chunk_rows:
                flush()
    flush()
    return out


def _write_group(root: Path, group: list[tuple[SegmentView, np.ndarray]], *, layout: Layout, version: int,
                 codecs: Mapping[str, str], blob_hashes: Mapping[str, str]) -> Segment:
    ids = np.concatenate([v.ids[i] for v, i in group])
    columns = {name: np.concatenate([v.column(name)[i] for v, i in group]) for name in layout.code_columns}
    vectors = None
    if layout.vector_dtype is not None:
        vectors = np.concatenate([v.vectors[i] for v, i in group])
    extra = {name: np.concatenate([v.extra(name)[i] for v, i in group]) for name in layout.extra_columns or {}}
    metadata = None
    if layout.metadata_schema is not None:
        metadata = without_null_columns(
            pa.concat_tables([v.metadata_table().take(pa.array(i)) for v, i in group]).combine_chunks())
    if layout.cluster_by is not None:  # merged rows must stay grouped by the cluster key
        order = np.argsort(extra[layout.cluster_by], kind="stable")
        ids, columns, vectors, extra, metadata = take_rows(order, ids, columns, vectors, extra, metadata)
    return write_segment(root, layout=layout, version=version, ids=ids, columns=columns, vectors=vectors,
                         extra=extra, metadata=metadata, codecs=codecs, blob_hashes=blob_hashes)
