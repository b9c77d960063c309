"""One search over one pinned snapshot: scan, filtered exact search, rescoring, results.

The pipeline (:meth:`Searcher.search`):

1. a metadata filter that keeps at most ``FILTER_EXACT_MAX`` rows is answered exactly: those rows are
   scored with the finest stored reconstruction (:meth:`Searcher.filtered_exact`);
2. otherwise the scanner of the scan codes keeps up to ``k × oversample`` candidates per query over all
   segments (IVF: the ``nprobe`` nearest lists; a filter becomes a row mask) (:meth:`Searcher.scan`);
3. candidates whose confidence interval cannot reach the top k are dropped, and the rest are rescored
   with the finer codes (:meth:`Searcher.rescore`);
4. row references become ids and ranking scores the metric's distances (:meth:`Searcher.finish`).

Per-segment data derived from the immutable segment files (the scan's row terms and kernel layout, the
stored norms, IVF list offsets) is built once and kept in a :class:`SegmentCache` shared by searches.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from ..quantizers import Quantizer
from . import rowref
from .codecs import Codecs
from .config import IndexConfig
from .metric import Metric, get_metric
from .protocols import SegmentLike, SnapshotLike
from .rowref import RowRefs
from .scanners import ScanSegment
from .selection import confident_candidates, top_k

#: A filter that keeps at most this many rows is answered by rescoring exactly those rows (one matrix
#: product per segment); above it the scan runs with the filter as a row mask.
FILTER_EXACT_MAX = 4096

_EMPTY_BOOL = np.zeros(0, dtype=np.bool_)


@dataclass
class SegmentData:
    """What searches derive once from one immutable segment."""

    scan: ScanSegment  # scan codes, row terms on the ranking scale, the scanner's layout
    norms: np.ndarray | None  # float32 (n,) stored ‖x‖² when the metric uses them
    list_offsets: np.ndarray | None  # int64 (nlist + 1,): IVF list l is rows [offsets[l], offsets[l + 1])


class SegmentCache:
    """:class:`SegmentData` by segment name, for one index's codecs and metric (bounded in size)."""

    #: Entries kept; past it the oldest quarter is forgotten (compaction retires segment names).
    MAX_ENTRIES = 4096

    def __init__(self) -> None:
        self._entries: dict[str, SegmentData] = {}
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def get(self, segment: SegmentLike, codecs: Codecs, metric: Metric) -> SegmentData:
        """The segment's data, built on first use.  Searches run concurrently from many threads; an entry is
        published only when complete, and a racing second builder just does the same work."""
        data = self._entries.get(segment.name)
        if data is None:
            data = self._build(segment, codecs, metric)
            with self._lock:
                if len(self._entries) > self.MAX_ENTRIES:
                    for name in list(self._entries)[: self.MAX_ENTRIES // 4]:
                        self._entries.pop(name, None)
                self._entries[segment.name] = data
        return data

    @staticmethod
    def _build(segment: SegmentLike, codecs: Codecs, metric: Metric) -> SegmentData:
        codes = segment.column("scan")
        terms = codecs.scanner.row_terms(codes)
        norms = np.asarray(segment.extra("norm2"), dtype=np.float32) if metric.uses_norms else None
        offset, scale = metric.scan_row_terms(terms.offset, terms.scale, norms, segment.num_rows)
        offset, scale = np.ascontiguousarray(offset, np.float32), np.ascontiguousarray(scale, np.float32)
        scan = ScanSegment(codes, offset, scale, codecs.scanner.segment_layout(codes, offset, scale, terms))
        list_offsets = None
        if codecs.ivf is not None:
            lists = segment.extra("list")
            list_offsets = np.searchsorted(lists, np.arange(codecs.ivf.nlist + 1)).astype(np.int64)
        return SegmentData(scan, norms, list_offsets)


class Candidates(NamedTuple):
    """The scan's candidates over all segments, ``(nq, m)`` each (see :class:`.scanners.ScanResult`)."""

    scores: np.ndarray
    refs: RowRefs
    scan_ip: np.ndarray | None
    width: np.ndarray | None


class Searcher:
    """Searches of one index over one pinned snapshot (see the module docstring)."""

    def __init__(self, snapshot: SnapshotLike, codecs: Codecs, config: IndexConfig, cache: SegmentCache) -> None:
        self.snapshot = snapshot
        self.codecs = codecs
        self.config = config
        self.metric = get_metric(config.metric)
        self.cache = cache

    def _segment(self, segment_number: int) -> SegmentData:
        return self.cache.get(self.snapshot.segments[segment_number], self.codecs, self.metric)

    def expected_work(self, n_queries: int, nprobe: int | None) -> float:
        """(query, row) pairs a search will scan: the thread policy's measure (:mod:`vqsearch.parallel`)."""
        fraction = 1.0
        if self.codecs.ivf is not None:
            fraction = min(1.0, (nprobe or self.config.ivf.nprobe) / self.codecs.ivf.nlist)
        return n_queries * int(self.snapshot.num_rows) * fraction

    def search(self, xq: np.ndarray, k: int, filter: dict | None, oversample: int,
               nprobe: int | None) -> tuple[np.ndarray, np.ndarray]:
        """``(distances, ids)`` of the best ``k`` per prepared query ``xq`` (see :meth:`vqsearch.Index.search`)."""
        masks = self.snapshot.filter_masks(filter) if filter is not None else None
        n_candidates = k * oversample if self.codecs.rescore is not None else k
        if masks is not None and sum(int(m.sum()) for m in masks) <= FILTER_EXACT_MAX:
            scores, refs = self.filtered_exact(xq, masks, k)
        else:
            found = self.scan(xq, n_candidates, masks, nprobe, k)
            if self.codecs.rescore is None:  # scanners may return their rows in any order
                scores, refs = top_k(found.scores, found.refs, k)
            else:
                scores, refs = self.rescore(xq, self.pruned(found, k), k, found.scan_ip)
        return self.finish(xq, scores, refs)

    def candidate_ids(self, xq: np.ndarray, k: int, n_candidates: int, nprobe: int | None) -> np.ndarray:
        """Ids of the candidates a search for ``k`` results would rescore (``-1`` padded, any order): the
        self-calibration (:mod:`.recall_curve`) measures how many true neighbours the scan keeps."""
        found = self.scan(xq, n_candidates, None, nprobe, k)
        refs = self.pruned(found, k)
        return self.finish(xq, np.where(refs >= 0, found.scores, -np.inf), refs)[1]

    @staticmethod
    def pruned(found: Candidates, k: int) -> RowRefs:
        """The candidates' references without those whose confidence interval cannot reach the top ``k``."""
        if found.width is None:
            return found.refs
        return confident_candidates(found.scores, found.refs, found.width, k)

    # ------------------------------------------------------------------ stages
    def scan(self, xq: np.ndarray, n_candidates: int, masks: list[np.ndarray] | None, nprobe: int | None,
             k: int | None = None) -> Candidates:
        """The best ``n_candidates`` scan estimates per query over all segments, with the scanner's exact
        ⟨q, decode(scan code)⟩ and confidence half-widths of the kept rows when it provides them."""
        n_queries = xq.shape[0]
        probes = None
        ivf = self.codecs.ivf
        if ivf is not None:
            nprobe = self.config.ivf.nprobe if nprobe is None else int(nprobe)
            if masks is not None:  # a selective filter empties most lists: probe proportionally more
                kept = sum(int(m.sum()) for m in masks) / max(1, self.snapshot.num_rows)
                nprobe = int(math.ceil(nprobe / max(kept, 1e-6)))
            probes = ivf.probe(xq, min(nprobe, ivf.nlist))
        scanner = self.codecs.scanner
        queries = scanner.prepare(xq)
        parts = []
        for number, segment in enumerate(self.snapshot.segments):
            if segment.num_rows == 0:
                continue
            data = self._segment(number)
            if masks is not None:
                live = np.ascontiguousarray(masks[number])
            else:  # no deletions: skip the per-row mask (O(1) check instead of scanning it)
                live = _EMPTY_BOOL if segment.num_live == segment.num_rows else np.ascontiguousarray(segment.live)
            if probes is not None:
                ranges = np.stack([data.list_offsets[probes], data.list_offsets[probes + 1]], axis=-1)
            else:
                ranges = np.zeros((n_queries, 1, 2), dtype=np.int64)
                ranges[:, 0, 1] = segment.num_rows
            result = scanner.scan(queries, data.scan, ranges, live, n_candidates, self.metric.scan_scale, k)
            parts.append(Candidates(result.scores, rowref.pack(number, result.rows), result.scan_ip, result.width))
        if not parts:
            return Candidates(np.full((n_queries, 0), -np.inf, np.float32), rowref.empty(n_queries), None, None)
        if len(parts) == 1:
            return parts[0]
        scores = np.concatenate([p.scores for p in parts], axis=1)
        refs = np.concatenate([p.refs for p in parts], axis=1)
        scan_ip, width = (None if any(p[j] is None for p in parts) else np.concatenate([p[j] for p in parts], axis=1)
                          for j in (2, 3))
        return Candidates(*top_k(scores, refs, n_candidates, scan_ip, width))

    def filtered_exact(self, xq: np.ndarray, masks: list[np.ndarray], k: int) -> tuple[np.ndarray, RowRefs]:
        """Score every selected row with the finest reconstruction (BLAS products), keep the best k."""
        scores, refs = [], []
        for number, mask in enumerate(masks):
            rows = np.flatnonzero(mask)
            if rows.size == 0:
                continue
            segment = self.snapshot.segments[number]
            ip: Any = 0
            for q, column in self.codecs.reconstruction_parts():
                ip = ip + q.work_queries(xq) @ q.decode_work(np.asarray(segment.column(column)[rows])).T
            norms = self._segment(number).norms[rows][None, :] if self.metric.uses_norms else None
            score = self.metric.score(ip, norms)
            scores.append(np.asarray(score, dtype=np.float32))
            refs.append(np.broadcast_to(rowref.pack(number, rows), score.shape))
        if not scores:
            return np.full((xq.shape[0], k), -np.inf, np.float32), rowref.empty(xq.shape[0], k)
        return top_k(np.concatenate(scores, axis=1), np.concatenate(refs, axis=1), k)

    def rescore(self, xq: np.ndarray, refs: RowRefs, k: int,
                scan_ip: np.ndarray | None = None) -> tuple[np.ndarray, RowRefs]:
        """Best ``k`` of the candidates ``refs`` by the finest reconstruction.  ``scan_ip`` (the scan's exact
        ⟨q, decode(scan code)⟩ per candidate) replaces decoding the scan codes again in residual mode."""
        ip = None
        for q, column in self.codecs.reconstruction_parts():
            if column == "scan" and scan_ip is not None:
                part = np.where(refs >= 0, scan_ip, -np.inf).astype(np.float32)
            else:
                part = self._inner_products(xq, refs, q, column)
            ip = part if ip is None else ip + part
        if self.metric.uses_norms:
            ip = self._scores_with_norms(ip, refs)
        return top_k(ip, refs, k)

    def finish(self, xq: np.ndarray, scores: np.ndarray, refs: RowRefs) -> tuple[np.ndarray, np.ndarray]:
        """``(distances, ids)``: row references become ids (``-1`` where empty), scores the metric's distances."""
        ids = np.full(refs.shape, -1, dtype=np.int64)
        for part in rowref.by_segment(refs):
            ids[part.where] = self.snapshot.segments[part.segment].ids[part.rows].astype(np.int64)
        return self.metric.distances(xq, scores, refs >= 0), ids

    # ------------------------------------------------------------------ helpers
    def _inner_products(self, xq: np.ndarray, refs: RowRefs, q: Quantizer, column: str) -> np.ndarray:
        """⟨q_i, decode(code of refs[i, j])⟩ for a (nq, m) array of row refs (empty → −inf).

        Each distinct candidate row's code is read once; the quantiser scores every (query, candidate)
        pair in its work domain, where the query is rotated once (:meth:`Quantizer.ip_pairs`).
        """
        work_queries = q.work_queries(xq)
        out = np.full(refs.shape, -np.inf, dtype=np.float32)
        for part in rowref.by_segment(refs):
            segment = self.snapshot.segments[part.segment]
            distinct, row_of_pair = np.unique(part.rows, return_inverse=True)
            query_of_pair = np.nonzero(part.where)[0].astype(np.int64)
            out[part.where] = q.ip_pairs(work_queries, query_of_pair, np.asarray(segment.column(column)[distinct]),
                                         row_of_pair.astype(np.int64).ravel())
        return out

    def _scores_with_norms(self, ip: np.ndarray, refs: RowRefs) -> np.ndarray:
        """Ranking scores of candidates from their inner products and the stored norms of their rows."""
        out = np.full(refs.shape, -np.inf, dtype=np.float32)
        for part in rowref.by_segment(refs):
            out[part.where] = self.metric.score(ip[part.where], self._segment(part.segment).norms[part.rows])
        return out
