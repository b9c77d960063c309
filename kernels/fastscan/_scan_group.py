"""The fused scan of one group of queries: block kernels, integer thresholds, heaps and candidate buffers.

This is the inner loop every fast-scan entry point (:mod:`.scans`) runs, per group of queries, on one
thread.  Inputs are the scans' internal form of the public arguments: absent arrays are empty (length 0),
so numba compiles one body for every combination of present terms.

* Queries go in units of a whole kernel group (:data:`~.block_kernels.QUERIES_AVX2` or
  ``QUERIES_AVX512``; one kernel call scores a block for the whole unit) when their ranges agree — flat
  search — else one by one.
* Rows are visited in tiles of about :data:`TILE_BYTES` of codes, each tile by every unit in turn, so a
  tile is read from memory once and then from L2.
* Per range the row-term bounds give each query an integer threshold (:func:`~.bounds.threshold`);
  the kernels' bit masks then name the only rows scored in float.  The threshold is refreshed whenever a
  query's heap (or candidate floor) moves.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from ..topk import heap_replace_root, heap_to_sorted, top_k_unordered
from ._intrinsics import lowest_set_bit
from .block_kernels import expand_luts, score_pshufb32, score_pshufb64, score_vbmi
from .bounds import RangeBounds, range_bounds, threshold

#: Query groups that share one tile of rows (the unit of parallel work is this many groups).
GROUPS_PER_TILE = 4
#: Bytes of codes a tile spans: small enough to stay in L2 while every group of a work item scans it.
TILE_BYTES = 256 * 1024


class ScanInput(NamedTuple):
    """Everything a scan reads (see :mod:`.scans` for shapes; absent arrays are empty here)."""

    tables: tuple  # QueryTables: lut_u8, scale, offset
    bias: np.ndarray  # float32 (nq, R)
    blocks: np.ndarray  # packed codes
    n: int  # real rows
    ranges: np.ndarray  # int64 (nq, R, 2)
    live: np.ndarray  # bool (n,) or empty
    terms: tuple  # RowTerms: shift, factor, error (n,) or empty; bounds (nblocks, 4) or (0, 4)
    query_width: np.ndarray  # float32 (nq,) (confidence scan) or empty


class Heaps(NamedTuple):
    """Per-query top-k min-heaps (:mod:`vqsearch.kernels.topk`): scores float32 and rows int64, (nq, k)."""

    scores: np.ndarray
    rows: np.ndarray


class Candidates(NamedTuple):
    """Per-query buffers of the confidence scan: rows whose upper bound reached the heap of lower bounds.

    ``scores``/``rows`` (nq, capacity), ``count`` int64 (nq,), ``floor`` float32 (nq,): rows scoring below
    a query's floor are no longer buffered (``capacity // 2`` better ones were kept when it was set).
    Empty (capacity 0) outside the confidence scan.
    """

    scores: np.ndarray
    rows: np.ndarray
    count: np.ndarray
    floor: np.ndarray


@njit(cache=True, nogil=True)
def prune_candidates(scores, rows, count, root, width, error, keep, floor):
    """Drop buffered candidates whose upper bound ``s + width·error[i]`` fell below ``root``; of the rest keep
    the ``keep`` best by score.  Returns (count, floor): the floor is the smallest kept score once ``keep``
    were kept (rows below it can no longer be among the ``keep`` best), else unchanged.  Order is not kept."""
    kept = 0
    for j in range(count):
        if scores[j] + width * error[rows[j]] >= root:
            scores[kept] = scores[j]
            rows[kept] = rows[j]
            kept += 1
    if kept > keep:
        top = top_k_unordered(scores[:kept], keep)
        top_scores = scores[top]
        top_rows = rows[top]
        scores[:keep] = top_scores
        rows[:keep] = top_rows
        floor = max(floor, top_scores.min())
        kept = keep
    return kept, floor


@njit(cache=True, nogil=True)
def scan_group(kernels, scan, heaps, cands, q0, qn):
    """Scan queries q0..q0+qn-1 of ``scan`` (:class:`ScanInput`) into their ``heaps`` (and, for the
    confidence scan, ``cands``), with the block kernels of ``kernels`` (a :class:`~.block_kernels.KernelSet`).
    Leaves each heap sorted best-first."""
    lut_u8, scale, offset = scan.tables
    bias, blocks, n, ranges, live = scan.bias, scan.blocks, scan.n, scan.ranges, scan.live
    shift, factor, error = scan.terms.shift, scan.terms.factor, scan.terms.error
    query_width = scan.query_width
    vbmi = blocks.ndim == 4
    group = kernels.vbmi_queries if vbmi else kernels.pshufb_queries
    wide = kernels.wide and not vbmi
    nsteps = blocks.shape[1]
    block_bytes = 1
    for d in blocks.shape[1:]:
        block_bytes *= d
    nblocks = blocks.shape[0]
    nranges = ranges.shape[1]
    has_shift = shift.shape[0] > 0
    has_factor = factor.shape[0] > 0
    confident = error.shape[0] > 0
    affine = has_shift or has_factor or confident
    has_live = live.shape[0] > 0
    # units of queries scanned together: (first query, count)
    unit_first = np.empty(qn, dtype=np.int64)
    unit_size = np.empty(qn, dtype=np.int64)
    nunits = 0
    for g0 in range(q0, q0 + qn, group):
        gn = min(group, q0 + qn - g0)
        shared = gn == group
        for t in range(1, gn):
            for r in range(nranges):
                if ranges[g0 + t, r, 0] != ranges[g0, r, 0] or ranges[g0 + t, r, 1] != ranges[g0, r, 1]:
                    shared = False
        if shared:
            unit_first[nunits] = g0
            unit_size[nunits] = gn
            nunits += 1
        else:
            for t in range(gn):
                unit_first[nunits] = g0 + t
                unit_size[nunits] = 1
                nunits += 1
    sums = np.empty((group, 64), dtype=np.uint16)
    masks = np.empty(group, dtype=np.int64)
    min_sums = np.zeros(group, dtype=np.int64)
    scratch = np.empty(qn * nsteps * 128 + 64, dtype=np.uint8)
    lut_base, lut_stride = expand_luts(lut_u8, q0, qn, nsteps, vbmi, scratch)
    tile = max(2, (TILE_BYTES // block_bytes) // 2 * 2)  # blocks per tile, even (the 64-row kernel pairs blocks)
    if nunits == qn:  # no query groups share a code load: one pass per query in range order
        tile = nblocks + 1
    bounds = RangeBounds(np.float32(0.0), np.float32(1.0), np.float32(1.0), np.float32(0.0))
    for tile0 in range(0, nblocks, tile):
        tile_lo = tile0 * 32
        tile_hi = min(tile0 + tile, nblocks) * 32
        for u in range(nunits):
            first = unit_first[u]
            queries = unit_size[u]
            lut_off = lut_base + (first - q0) * lut_stride
            for r in range(nranges):
                start = max(ranges[first, r, 0], 0, tile_lo)
                stop = min(ranges[first, r, 1], n, tile_hi)
                if start >= stop:
                    continue
                if affine:  # bounds of the row terms over the range's blocks, for a safe integer threshold
                    bounds = range_bounds(scan.terms, start, stop)
                for t in range(queries):
                    q = first + t
                    width = query_width[q] if confident else np.float32(0.0)
                    floor = cands.floor[q] if confident else np.float32(-np.inf)
                    min_sums[t] = threshold(heaps.scores[q, 0], offset[q], bias[q, r], scale[q], affine, bounds,
                                            confident, width, floor)
                b = start // 32
                bend = (stop + 31) // 32
                while b < bend:
                    rows_here = 64 if (wide and b + 1 < bend) else 32
                    off0 = b * block_bytes
                    if vbmi:
                        score_vbmi(kernels, queries, scratch, lut_off, lut_stride, blocks, off0, 0, nsteps, min_sums,
                                   sums, masks)
                    elif rows_here == 64:
                        score_pshufb64(kernels, queries, scratch, lut_off, lut_stride, blocks, off0,
                                       off0 + block_bytes, nsteps, min_sums, sums, masks)
                    else:
                        score_pshufb32(kernels, queries, scratch, lut_off, lut_stride, blocks, off0, 0, nsteps,
                                       min_sums, sums, masks)
                    row0 = b * 32
                    lo = max(start - row0, 0)
                    hi = min(stop - row0, rows_here)
                    row_mask = np.int64(-1) if hi == 64 else (np.int64(1) << hi) - 1
                    row_mask &= ~((np.int64(1) << lo) - 1)
                    for t in range(queries):
                        m = masks[t] & row_mask
                        if m == 0:
                            continue
                        q = first + t
                        if _score_rows(m, row0, sums[t], q, r, scan, heaps, cands, confident, has_live, has_shift,
                                       has_factor):
                            width = query_width[q] if confident else np.float32(0.0)
                            floor = cands.floor[q] if confident else np.float32(-np.inf)
                            min_sums[t] = threshold(heaps.scores[q, 0], offset[q], bias[q, r], scale[q], affine,
                                                    bounds, confident, width, floor)
                    b += rows_here // 32
    for q in range(q0, q0 + qn):
        heap_to_sorted(heaps.scores[q], heaps.rows[q])


@njit(cache=True, nogil=True, inline="always")
def _score_rows(mask, row0, sums, q, r, scan, heaps, cands, confident, has_live, has_shift, has_factor):
    """Score the rows ``row0 + bit`` of ``mask`` for query ``q`` (range ``r``) in float and offer them to its
    heap (and candidate buffer) → True when the heap root or floor may have moved (refresh the threshold)."""
    _, scale, offset = scan.tables
    sc = scale[q]
    off = offset[q]
    bq = scan.bias[q, r]
    heap_scores = heaps.scores[q]
    heap_rows = heaps.rows[q]
    moved = False
    while mask != 0:
        pos = lowest_set_bit(mask)
        mask &= mask - 1
        i = row0 + pos
        if has_live and not scan.live[i]:
            continue
        s = sc * np.float32(sums[pos]) + off
        if has_factor:
            s *= scan.terms.factor[i]
        if has_shift:
            s += scan.terms.shift[i]
        s += bq
        if confident:
            w = scan.query_width[q] * scan.terms.error[i]
            if s - w > heap_scores[0]:
                heap_replace_root(heap_scores, heap_rows, s - w, i)
                moved = True
            if s + w >= heap_scores[0] and s >= cands.floor[q]:
                c = cands.count[q]
                if c == cands.scores.shape[1]:
                    c, cands.floor[q] = prune_candidates(cands.scores[q], cands.rows[q], c, heap_scores[0],
                                                         scan.query_width[q], scan.terms.error,
                                                         cands.scores.shape[1] // 2, cands.floor[q])
                    moved = True  # the floor may have risen
                cands.scores[q, c] = s
                cands.rows[q, c] = i
                cands.count[q] = c + 1
        elif s > heap_scores[0]:
            heap_replace_root(heap_scores, heap_rows, s, i)
            moved = True
    return moved
