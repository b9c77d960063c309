"""First-stage scan: byte-lookup-table scoring fused with top-k selection.

Binary (sign bits), ternary (two bitplanes), 4-bit PQ (two sub-quantisers per byte)
and 8-bit PQ codes are all scored the same way: for each query build one 256-entry
table per code byte, then the score of a database row is a sum of table lookups

.. math:: s_i = a_i + b_i \\sum_{j < J} T_q[j, c_{ij}] + \\beta_{q,r}

where ``a_i``/``b_i`` are optional per-row affine corrections (RaBitQ factors, norms)
and ``β_{q,r}`` a per-(query, row-range) bias (IVF list terms).  Each query scans
its own list of row ranges (all rows for a flat index, its probed IVF lists
otherwise) and keeps the best ``k`` in a heap, so no (nq, n) score matrix exists.

Input contract: ``tables`` float32 (nq, J, 256) C-contiguous; ``codes`` uint8
(n, code_size ≥ J) (memory-mapped, read-only is fine); ``row_a``/``row_b`` float32
(n,) or empty (meaning 0 / 1); ``ranges`` int64 (nq, R, 2) half-open row ranges
(``start == stop`` pads unused slots); ``bias`` float32 (nq, R); ``live`` bool (n,)
or empty (all live).  Parallel over queries; a single query is split over its
ranges by :func:`lut_scan_topk_split`.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._variants import variant
from .popcount import popcount64
from .topk import heap_replace_root, heap_to_sorted


@njit(cache=True, nogil=True, inline="always")
def _score_range(table, codes, row_a, row_b, live, start, stop, bias, vals, rows):
    nbytes = table.shape[0]
    has_a = row_a.shape[0] > 0
    has_b = row_b.shape[0] > 0
    has_live = live.shape[0] > 0
    for i in range(start, stop):
        if has_live and not live[i]:
            continue
        s = np.float32(0.0)
        c = codes[i]
        for j in range(nbytes):
            s += table[j, c[j]]
        if has_b:
            s *= row_b[i]
        if has_a:
            s += row_a[i]
        s += bias
        if s > vals[0]:
            heap_replace_root(vals, rows, s, i)


def _lut_scan_topk(tables, codes, row_a, row_b, ranges, bias, live, k):
    """Best ``k`` rows per query by LUT score → (scores (nq, k) desc, rows (nq, k), -1 = none)."""
    nq = tables.shape[0]
    vals = np.full((nq, k), -np.inf, dtype=np.float32)
    rows = np.full((nq, k), -1, dtype=np.int64)
    for q in prange(nq):
        hv = vals[q]
        hr = rows[q]
        for r in range(ranges.shape[1]):
            _score_range(tables[q], codes, row_a, row_b, live, ranges[q, r, 0], ranges[q, r, 1],
                         bias[q, r], hv, hr)
        heap_to_sorted(hv, hr)
    return vals, rows


@njit(cache=True, nogil=True, parallel=True)
def lut_scan_topk_split(table, codes, row_a, row_b, ranges, bias, live, k, nchunks):
    """One query, its ranges cut into ``nchunks`` row chunks scanned in parallel, then merged.

    ``table`` (J, 256), ``ranges`` (R, 2), ``bias`` (R,).  Used for low-latency single queries.
    """
    total = 0
    for r in range(ranges.shape[0]):
        total += ranges[r, 1] - ranges[r, 0]
    chunk = (total + nchunks - 1) // nchunks
    vals = np.full((nchunks, k), -np.inf, dtype=np.float32)
    rows = np.full((nchunks, k), -1, dtype=np.int64)
    for c in prange(nchunks):
        lo = c * chunk
        hi = min(total, lo + chunk)
        # walk the ranges, scanning the part of the concatenated rows in [lo, hi)
        seen = 0
        for r in range(ranges.shape[0]):
            start = ranges[r, 0]
            length = ranges[r, 1] - start
            a = max(lo, seen)
            b = min(hi, seen + length)
            if a < b:
                _score_range(table, codes, row_a, row_b, live, start + (a - seen), start + (b - seen),
                             bias[r], vals[c], rows[c])
            seen += length
    # merge the chunk heaps into one
    out_v = np.full(k, -np.inf, dtype=np.float32)
    out_r = np.full(k, -1, dtype=np.int64)
    for c in range(nchunks):
        for t in range(k):
            if vals[c, t] > out_v[0]:
                heap_replace_root(out_v, out_r, vals[c, t], rows[c, t])
    heap_to_sorted(out_v, out_r)
    return out_v, out_r


@njit(cache=True, nogil=True, parallel=True)
def hamming_scan_topk(qwords, words, nwords, ranges, live, k):
    """Best ``k`` rows per query by *smallest* Hamming distance over the first ``nwords`` words.

    Returned scores are ``-H`` (so larger is better, like every scan here).  ``qwords`` uint64 (nq, nwords).
    """
    nq = qwords.shape[0]
    vals = np.full((nq, k), -np.inf, dtype=np.float32)
    rows = np.full((nq, k), -1, dtype=np.int64)
    has_live = live.shape[0] > 0
    for q in prange(nq):
        hv = vals[q]
        hr = rows[q]
        qw = qwords[q]
        for r in range(ranges.shape[1]):
            for i in range(ranges[q, r, 0], ranges[q, r, 1]):
                if has_live and not live[i]:
                    continue
                h = 0
                w = words[i]
                for t in range(nwords):
                    h += popcount64(w[t] ^ qw[t])
                s = np.float32(-h)
                if s > hv[0]:
                    heap_replace_root(hv, hr, s, i)
        heap_to_sorted(hv, hr)
    return vals, rows


@njit(cache=True, nogil=True, inline="always")
def _signed_byte_table(qrow, nbytes, table):
    """table[j, b] = Σ_t q[8j + t]·(2·bit_t(b) − 1), packbits order (mask 1 << u ↔ coordinate 8j + 7 − u).

    Subset sums by doubling: 255 additions per byte.
    """
    d = qrow.shape[0]
    for j in range(nbytes):
        base = np.float32(0.0)
        for t in range(8):
            if 8 * j + t < d:
                base -= qrow[8 * j + t]
        table[j, 0] = base
        size = 1
        for u in range(8):
            c = 8 * j + 7 - u
            v = np.float32(2.0) * qrow[c] if c < d else np.float32(0.0)
            for i in range(size):
                table[j, size + i] = table[j, i] + v
            size *= 2


def _binary_cascade_topk(qw, qwords, words, nwords, last_mask, codes, nbytes, row_a, row_b, qconst, ranges, live, m,
                         k):
    """Two-pass scan of sign-bit codes: Hamming top-``m``, then the best ``k`` of those by RaBitQ estimate.

    Pass 1 computes the Hamming distance between the query's sign bits (``qwords`` uint64 (nq, W)) and
    every row in its ranges (first ``nwords`` words of ``words``; the last word is ANDed with
    ``last_mask`` to drop bytes that are not sign bits) into a small int16 buffer plus a histogram of
    distances, then selects the ``m`` smallest by the histogram threshold (no heap: Hamming distances
    are small integers, ties at the threshold are taken in row order).  Pass 2 scores those rows with
    the asymmetric estimator

    .. math:: \\hat s = c_q + a_i + b_i \\sum_i q_i (2 x_i - 1)

    through a per-query signed byte table, reading ``codes`` uint8 (n, ≥ nbytes).  ``qw`` float32
    (nq, D) is the work-domain query.  Returns (scores, rows), (nq, k) each, best first.
    """
    nq = qw.shape[0]
    vals = np.full((nq, k), -np.inf, dtype=np.float32)
    rows = np.full((nq, k), -1, dtype=np.int64)
    has_live = live.shape[0] > 0
    has_a = row_a.shape[0] > 0
    nbits = 64 * nwords
    for q in prange(nq):
        total = 0
        for r in range(ranges.shape[1]):
            total += ranges[q, r, 1] - ranges[q, r, 0]
        dist = np.empty(total, dtype=np.int16)
        hist = np.zeros(nbits + 2, dtype=np.int64)
        qq = qwords[q]
        pos = 0
        for r in range(ranges.shape[1]):
            for i in range(ranges[q, r, 0], ranges[q, r, 1]):
                if has_live and not live[i]:
                    dist[pos] = nbits + 1  # never selected
                    pos += 1
                    continue
                w = words[i]
                h = 0
                for t in range(nwords - 1):
                    h += popcount64(w[t] ^ qq[t])
                h += popcount64((w[nwords - 1] ^ qq[nwords - 1]) & last_mask)
                dist[pos] = h
                hist[h] += 1
                pos += 1
        # threshold: the smallest T with at least m rows at distance ≤ T
        cum = 0
        thr = nbits
        for h in range(nbits + 1):
            cum += hist[h]
            if cum >= m:
                thr = h
                break
        take_eq = m - (cum - hist[thr]) if cum >= m else hist[thr]
        table = np.empty((nbytes, 256), dtype=np.float32)
        _signed_byte_table(qw[q], nbytes, table)
        kv = vals[q]
        kr = rows[q]
        pos = 0
        for r in range(ranges.shape[1]):
            for i in range(ranges[q, r, 0], ranges[q, r, 1]):
                h = dist[pos]
                pos += 1
                if h > thr:
                    continue
                if h == thr:
                    if take_eq <= 0:
                        continue
                    take_eq -= 1
                s = np.float32(0.0)
                code = codes[i]
                for j in range(nbytes):
                    s += table[j, code[j]]
                s = s * row_b[i] + qconst[q]
                if has_a:
                    s += row_a[i]
                if s > kv[0]:
                    heap_replace_root(kv, kr, s, i)
        heap_to_sorted(kv, kr)
    return vals, rows


lut_scan_topk = variant(_lut_scan_topk, "lut_scan_topk", parallel=True)
lut_scan_topk_serial = variant(_lut_scan_topk, "lut_scan_topk_serial")
binary_cascade_topk = variant(_binary_cascade_topk, "binary_cascade_topk", parallel=True)
#: Serial variants: small scans (one query over a few IVF lists) do not pay for waking the thread pool.
binary_cascade_topk_serial = variant(_binary_cascade_topk, "binary_cascade_topk_serial")

