"""First-stage scan: byte-lookup-table scoring fused with top-k selection.

Binary (sign bits), ternary (two bitplanes), 4-bit PQ (two sub-quantisers per byte)
and 8-bit PQ codes are all scored the same way: for each query build one 256-entry
table per code byte, then the score of a database row is a sum of table lookups

.. math:: s_i = a_i + b_i \\sum_{j < J} T_q[j, c_{ij}] + \\beta_{q,r}

where ``a_i``/``b_i`` (``row_shift``/``row_factor``) are optional per-row affine corrections (RaBitQ factors, norms)
and ``β_{q,r}`` a per-(query, row-range) bias (IVF list terms).  Each query scans
its own list of row ranges (all rows for a flat index, its probed IVF lists
otherwise) and keeps the best ``k`` in a heap, so no (nq, n) score matrix exists.

Input contract: ``tables`` float32 (nq, J, 256) C-contiguous; ``codes`` uint8
(n, code_size ≥ J) (memory-mapped, read-only is fine); ``row_shift``/``row_factor`` float32
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
from .topk import heap_replace_root, heap_to_sorted, top_k_unordered


@njit(cache=True, nogil=True, inline="always")
def _score_range(table, codes, row_shift, row_factor, live, start, stop, bias, vals, rows):
    nbytes = table.shape[0]
    has_shift = row_shift.shape[0] > 0
    has_factor = row_factor.shape[0] > 0
    has_live = live.shape[0] > 0
    for i in range(start, stop):
        if has_live and not live[i]:
            continue
        s = np.float32(0.0)
        c = codes[i]
        for j in range(nbytes):
            s += table[j, c[j]]
        if has_factor:
            s *= row_factor[i]
        if has_shift:
            s += row_shift[i]
        s += bias
        if s > vals[0]:
            heap_replace_root(vals, rows, s, i)


def _lut_scan_topk(tables, codes, row_shift, row_factor, ranges, bias, live, k):
    """Best ``k`` rows per query by LUT score → (scores (nq, k) desc, rows (nq, k), -1 = none)."""
    nq = tables.shape[0]
    vals = np.full((nq, k), -np.inf, dtype=np.float32)
    rows = np.full((nq, k), -1, dtype=np.int64)
    for q in prange(nq):
        hv = vals[q]
        hr = rows[q]
        for r in range(ranges.shape[1]):
            _score_range(tables[q], codes, row_shift, row_factor, live, ranges[q, r, 0], ranges[q, r, 1],
                         bias[q, r], hv, hr)
        heap_to_sorted(hv, hr)
    return vals, rows


@njit(cache=True, nogil=True, parallel=True)
def lut_scan_topk_split(table, codes, row_shift, row_factor, ranges, bias, live, k, nchunks):
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
                _score_range(table, codes, row_shift, row_factor, live, start + (a - seen), start + (b - seen),
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


# ------------------------------------------------------------------ sign-bit (binary) codes
#
# Binary scans read the sign bits in a *transposed* word layout, ``words_t`` uint64 (W, n): word t of
# row i holds sign bytes 8t..8t+7 of that row (little-endian, as ``packed.view(np.uint64)`` reads them)
# with every byte that is not a sign byte zeroed, and query words use the same layout.  The Hamming
# pass then walks each word column contiguously, so LLVM vectorises it (``vpopcntq`` on AVX-512, a
# popcount per 64-bit lane elsewhere) instead of reducing six words per row one row at a time.


def transpose_sign_words(packed: np.ndarray, nbytes: int, pad: int = 0) -> np.ndarray:
    """Sign bytes ``packed[:, :nbytes]`` (uint8 (n, ≥ nbytes)) → transposed words uint64 (W, n + pad)."""
    n = packed.shape[0]
    nwords = (nbytes + 7) // 8
    buf = np.zeros((n, nwords * 8), dtype=np.uint8)
    buf[:, :nbytes] = packed[:, :nbytes]
    out = np.zeros((nwords, n + pad), dtype=np.uint64)
    out[:, :n] = buf.view("<u8").T
    return out


@njit(cache=True, nogil=True, inline="always")
def _hamming_range(words_t, qq, start, count, out):
    """out[j] = Hamming(query, row start + j) for j < count; vectorised over rows, one word column at a time."""
    for j in range(count):
        out[j] = 0
    for t in range(words_t.shape[0]):
        qt = qq[t]
        col = words_t[t, start:start + count]
        for j in range(count):
            out[j] += popcount64(col[j] ^ qt)


@njit(cache=True, nogil=True)
def _compact(cand_h, cand_i, nc, m, hist):
    """Keep the ``m`` smallest of the ``nc`` buffered (distance, row) pairs, ties in buffer (scan) order.

    Returns (m, T − 1) where T is the largest kept distance: every later row at distance ≥ T would lose
    to the kept ones (ties go to the earlier row), so only rows below T may still enter.
    """
    hist[:] = 0
    for j in range(nc):
        hist[cand_h[j]] += 1
    cum = 0
    thr = 0
    for h in range(hist.shape[0]):
        if cum + hist[h] >= m:
            thr = h
            break
        cum += hist[h]
    take_eq = m - cum
    out = 0
    for j in range(nc):
        h = cand_h[j]
        if h < thr or (h == thr and take_eq > 0):
            if h == thr:
                take_eq -= 1
            cand_h[out] = h
            cand_i[out] = cand_i[j]
            out += 1
    return out, thr - 1


#: Rows per Hamming chunk: distances go to a small int16 buffer that stays in L1.
_CHUNK_ROWS = 512


@njit(cache=True, nogil=True)
def _hamming_select(words_t, qq, ranges_q, live, m, cand_h, cand_i):
    """The ``m`` rows of the query's ranges nearest in Hamming distance (fewer if fewer are live).

    Writes (distance, row) pairs into ``cand_h``/``cand_i`` (capacity ≥ m + 2·_CHUNK_ROWS, scan order, ties
    to the earlier row) and returns their count.  Distances are computed vectorised, a chunk of rows at a time;
    a row is buffered only below the running threshold, which tightens every time the buffer fills
    (:func:`_compact`), so after the first few thousand rows a row costs one comparison.
    """
    buf = np.empty(_CHUNK_ROWS, dtype=np.int16)
    hist = np.empty(64 * words_t.shape[0] + 1, dtype=np.int64)
    has_live = live.shape[0] > 0
    room = cand_h.shape[0] - _CHUNK_ROWS  # a chunk may append up to _CHUNK_ROWS rows before the next check
    thr = 64 * words_t.shape[0]
    nc = 0
    for r in range(ranges_q.shape[0]):
        for start in range(ranges_q[r, 0], ranges_q[r, 1], _CHUNK_ROWS):
            count = min(_CHUNK_ROWS, ranges_q[r, 1] - start)
            _hamming_range(words_t, qq, start, count, buf)
            first = nc
            for j in range(count):  # branch-free append: write always, advance when below the threshold
                h = buf[j]
                cand_h[nc] = h
                cand_i[nc] = start + j
                nc += h <= thr
            if has_live:  # drop the deleted rows just appended
                kept = first
                for t in range(first, nc):
                    if live[cand_i[t]]:
                        cand_h[kept] = cand_h[t]
                        cand_i[kept] = cand_i[t]
                        kept += 1
                nc = kept
            if nc > room:
                nc, thr = _compact(cand_h, cand_i, nc, m, hist)
    if nc > m:
        nc, thr = _compact(cand_h, cand_i, nc, m, hist)
    return nc


@njit(cache=True, nogil=True, parallel=True)
def hamming_scan_topk(qwords, words_t, ranges, live, k):
    """Best ``k`` rows per query by *smallest* Hamming distance (ties: earlier scanned row first).

    ``qwords`` uint64 (nq, W) and ``words_t`` (W, ≥ n) in the transposed layout above.  Returned scores are
    ``-H`` (larger is better, like every scan here); rows −1 / scores −inf where fewer than k rows exist.
    """
    nq = qwords.shape[0]
    vals = np.full((nq, k), -np.inf, dtype=np.float32)
    rows = np.full((nq, k), -1, dtype=np.int64)
    cap = k + 2 * _CHUNK_ROWS
    for q in prange(nq):
        cand_h = np.empty(cap, dtype=np.int16)
        cand_i = np.empty(cap, dtype=np.int64)
        got = _hamming_select(words_t, qwords[q], ranges[q], live, k, cand_h, cand_i)
        order = np.argsort(cand_h[:got], kind="mergesort")  # stable: equal distances keep scan order
        for j in range(got):
            vals[q, j] = -cand_h[order[j]]
            rows[q, j] = cand_i[order[j]]
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


@njit(cache=True, nogil=True, inline="always")
def _signed_sum(table, words_t, nbytes, i):
    """Σ_t q_t (2 b_t − 1) for row i: one table lookup per sign byte, bytes read from the word columns.

    Four partial sums keep the float additions out of one serial dependency chain; the words are
    reinterpreted as int64 because numba's uint64 shift-and-mask index arithmetic compiles to slower code
    (``benchmarks/RESULTS.md``, "Kernel design measurements").
    """
    a0 = np.float32(0.0)
    a1 = np.float32(0.0)
    a2 = np.float32(0.0)
    a3 = np.float32(0.0)
    full = nbytes // 8
    for t in range(full):
        w = np.int64(words_t[t, i])
        j = 8 * t
        a0 += table[j, w & 255] + table[j + 4, (w >> 32) & 255]
        a1 += table[j + 1, (w >> 8) & 255] + table[j + 5, (w >> 40) & 255]
        a2 += table[j + 2, (w >> 16) & 255] + table[j + 6, (w >> 48) & 255]
        a3 += table[j + 3, (w >> 24) & 255] + table[j + 7, (w >> 56) & 255]
    if full < words_t.shape[0]:
        w = np.int64(words_t[full, i])
        for u in range(nbytes - 8 * full):
            a0 += table[8 * full + u, (w >> (8 * u)) & 255]
    return (a0 + a1) + (a2 + a3)


@njit(cache=True, nogil=True)
def _top_indices(scores, k):
    """Indices of the ``k`` largest ``scores`` (all if fewer), best first, ties to the lower index.

    :func:`~.topk.top_k_unordered` cuts them without sorting, then only the kept entries are sorted: for
    a few hundred candidates this is several times faster than a bounded heap, whose sift-downs mispredict.
    """
    n = scores.shape[0]
    if n <= k:
        return np.argsort(-scores, kind="mergesort")
    picked = top_k_unordered(scores, k)
    return picked[np.argsort(-scores[picked], kind="mergesort")]


def _binary_cascade_topk(queries, query_words, words_t, nbytes, row_shift, row_factor, query_offset, ranges, live,
                         pool, k, centre_ip, recon_step):
    """Two-pass scan of sign-bit codes: Hamming top-``pool``, then the best ``k`` of those by RaBitQ estimate.

    Pass 1 keeps the ``pool`` rows nearest in Hamming distance between the query's sign bits (``query_words``
    uint64 (nq, W)) and every row in its ranges (``words_t``, transposed layout above), with a running
    threshold instead of a heap (:func:`_hamming_select`; ties go to the earlier row).  Rows that enter its
    buffer are then scored with the asymmetric estimator

    .. math:: \\hat s = c_q + a_i + b_i \\sum_t q_t (2 x_t - 1)

    (``query_offset[q]`` = c_q, ``row_shift``/``row_factor`` = a/b) through a per-query signed byte table, and
    the best ``k`` are cut by a partition (:func:`_top_indices`).  ``queries`` float32 (nq, D) are the
    work-domain queries.

    When ``recon_step`` (float32 (n,)) is not empty, the third output holds
    ``centre_ip[q] + recon_step[i]·Σ_t q_t(2x_t − 1)`` for every kept row — the exact inner product with a
    reconstruction ``c + recon_step_i·(2x − 1)`` given ``centre_ip[q] = ⟨q, c⟩`` — so a later stage can reuse
    it instead of decoding the codes again.  Returns (scores, rows, ip), (nq, k) each, best first.
    """
    nq = queries.shape[0]
    vals = np.full((nq, k), -np.inf, dtype=np.float32)
    rows = np.full((nq, k), -1, dtype=np.int64)
    ip = np.zeros((nq, k), dtype=np.float32)
    has_shift = row_shift.shape[0] > 0
    has_step = recon_step.shape[0] > 0
    cap = pool + 2 * _CHUNK_ROWS
    for q in prange(nq):
        table = np.empty((nbytes, 256), dtype=np.float32)
        _signed_byte_table(queries[q], nbytes, table)
        cand_h = np.empty(cap, dtype=np.int16)
        cand_i = np.empty(cap, dtype=np.int64)
        got = _hamming_select(words_t, query_words[q], ranges[q], live, pool, cand_h, cand_i)
        cand_s = np.empty(got, dtype=np.float32)  # Σ_t q_t(2b_t − 1) per candidate, reused for ``ip``
        est = np.empty(got, dtype=np.float32)
        for j in range(got):
            i = cand_i[j]
            cand_s[j] = _signed_sum(table, words_t, nbytes, i)
            est[j] = cand_s[j] * row_factor[i] + query_offset[q]
            if has_shift:
                est[j] += row_shift[i]
        best = _top_indices(est, k)
        for t in range(best.shape[0]):
            j = best[t]
            vals[q, t] = est[j]
            rows[q, t] = cand_i[j]
            if has_step:
                ip[q, t] = centre_ip[q] + recon_step[cand_i[j]] * cand_s[j]
    return vals, rows, ip


def sign_nibble_luts(queries: np.ndarray, nbytes: int) -> np.ndarray:
    """Per-nibble signed sums of the queries: ``lut[q, p, v] = Σ_t q_t (2·bit_t − 1)`` over the four
    coordinates of nibble ``p`` with bits ``v`` → float32 (nq, 2·nbytes, 16).

    Nibble ``p`` follows the 4-bit PQ convention of :mod:`.fastscan` (sub-quantiser ``2j`` is the low
    nibble of code byte ``j``): with packbits order (most significant bit = first coordinate) the low
    nibble of sign byte ``j`` holds coordinates 8j+4..8j+7 and the high nibble 8j..8j+3.
    """
    nq, d = queries.shape
    padded = np.zeros((nq, nbytes * 8), dtype=np.float32)
    padded[:, :d] = queries[:, : nbytes * 8]
    quads = padded.reshape(nq, nbytes, 2, 4)  # [:, j, 0] = coordinates 8j..8j+3, [:, j, 1] = 8j+4..8j+7
    signs = _NIBBLE_SIGNS
    lut = np.empty((nq, 2 * nbytes, 16), dtype=np.float32)
    lut[:, 0::2] = quads[:, :, 1] @ signs.T
    lut[:, 1::2] = quads[:, :, 0] @ signs.T
    return lut


#: _NIBBLE_SIGNS[v, s] = 2·(bit 3 − s of v) − 1: nibble v's sign of its coordinate s (packbits order).
_NIBBLE_SIGNS = (((np.arange(16)[:, None] >> (3 - np.arange(4))[None, :]) & 1) * 2 - 1).astype(np.float32)


@njit(cache=True, nogil=True, inline="always")
def _nibble_sum(lut, codes, i, nbytes):
    """Σ_p lut[p, nibble p of row i] over the row's ``nbytes`` code bytes (two nibbles each)."""
    a0 = np.float32(0.0)
    a1 = np.float32(0.0)
    c = codes[i]
    for j in range(nbytes):
        b = c[j]
        a0 += lut[2 * j, b & 15]
        a1 += lut[2 * j + 1, b >> 4]
    return a0 + a1


def _binary_refine(lut, codes, rows, query_offset, row_shift, row_factor, centre_ip, recon_step):
    """Exact RaBitQ estimates of the rows a fast-scan kept: (scores, rows, ip), (nq, k) each, unordered.

    ``lut`` from :func:`sign_nibble_luts`; ``codes`` the sign bytes (n, ≥ nbytes) row-major; ``rows`` int64
    (nq, k), −1 = none (scores −inf).  For each kept row ``S = Σ_t q_t (2b_t − 1)`` is recomputed in float
    and its estimate ``query_offset[q] + a_i + b_i·S`` (``row_shift``/``row_factor`` = a/b) replaces the
    quantised-table score.  ``ip`` is ``centre_ip[q] + recon_step[i]·S`` when ``recon_step`` is not empty —
    the exact ⟨q, c + recon_step_i·(2x − 1)⟩ that residual rescoring reuses — else zeros.
    """
    nq, k = rows.shape
    nbytes = lut.shape[1] // 2
    has_shift = row_shift.shape[0] > 0
    has_step = recon_step.shape[0] > 0
    vals = np.full((nq, k), -np.inf, dtype=np.float32)
    ip = np.zeros((nq, k), dtype=np.float32)
    for q in prange(nq):
        for j in range(k):
            i = rows[q, j]
            if i < 0:
                continue
            s = _nibble_sum(lut[q], codes, i, nbytes)
            est = s * row_factor[i] + query_offset[q]
            if has_shift:
                est += row_shift[i]
            vals[q, j] = est
            if has_step:
                ip[q, j] = centre_ip[q] + recon_step[i] * s
    return vals, rows, ip


binary_refine = variant(_binary_refine, "binary_refine", parallel=True)
binary_refine_serial = variant(_binary_refine, "binary_refine_serial")
lut_scan_topk = variant(_lut_scan_topk, "lut_scan_topk", parallel=True)
lut_scan_topk_serial = variant(_lut_scan_topk, "lut_scan_topk_serial")
binary_cascade_topk = variant(_binary_cascade_topk, "binary_cascade_topk", parallel=True)
#: Serial variants: small scans (one query over a few IVF lists) do not pay for waking the thread pool.
binary_cascade_topk_serial = variant(_binary_cascade_topk, "binary_cascade_topk_serial")

