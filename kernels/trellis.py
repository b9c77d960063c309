"""Bitshift-trellis kernels (QTIP): Viterbi encoding, bit packing, decoding.

Trellis (``L`` state bits, ``kv = k·V`` bits per step, ``P = 2^kv``, ``M = 2^(L-kv)``):
state ``s_t = ((s_{t-1} << kv) mod 2^L) | b_t``; step ``t`` emits the ``V`` values
``vals[:, s_t]``.  The predecessors of ``s`` are ``p·M + (s >> kv)`` for ``p < P``: they
share ``j = s >> kv``, which is what makes the Viterbi update two contiguous passes:

.. math::

    m_t(j) = \\min_{p < P} C_{t-1}(p M + j), \\qquad
    C_t(j P + b) = m_t(j) + \\lVert x_t - \\mathrm{vals}[:, jP + b] \\rVert^2 .

The argmin ``p`` is the back-pointer (one uint8 per ``j`` and step, ``n·M`` bytes per
block).  Costs are float32.  Phase 1 reads ``P`` contiguous rows of the cost vector;
phase 2 writes each ``m_t(j)`` to ``P`` consecutive states.  Both are specialised
(unrolled) for small ``P`` because LLVM vectorises an unrolled body over ``j`` far
better than a short runtime-length inner loop; phase 1 runs its 8-row body P/8 times for
larger ``P``, and stores every result (a store only where a row wins becomes a masked vector
store, which AMD Zen executes many times slower than Intel).  Per step the two passes stream three
2^L float32 vectors (old costs, code values, new costs: 768 KiB at L = 16, inside a
typical 1 MiB L2), so the encoder is bound by L2 bandwidth, not arithmetic.  ``fastmath``
made no measurable difference and is off, which keeps results bit-reproducible.  The
measurements behind these choices: ``benchmarks/RESULTS.md``, "Kernel design measurements".

Bit layout of one block (``n`` steps, ``n·kv`` bits, a multiple of 8): stream bit ``i``
is bit ``7 - i % 8`` of byte ``i // 8`` (MSB-first).  Bits ``[t·kv, (t+1)·kv)`` hold the
top ``kv`` bits of ``s_t``; the state ``s_t`` is the ``L``-bit window starting at bit
``t·kv`` of the *circular* stream.  This is exactly ``k`` bits per value and is
consistent iff the path is tail-biting: ``s_0 >> kv == s_{n-1} mod M``.

All kernels are pure functions over C-contiguous arrays; ``L ≤ 20`` and ``kv ≤ 8``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .topk import dot_f32

# ----------------------------------------------------------------------------- phase 1
# m[j] = min_p prev[p*M + j], bp[j] = argmin (first minimum wins: strict "<").


@njit(cache=True, nogil=True)
def _min_pred_2(prev: np.ndarray, m: np.ndarray, bp: np.ndarray, M: int) -> None:
    r0 = prev[0:M]
    r1 = prev[M:2 * M]
    for j in range(M):
        best = r0[j]
        arg = np.int32(0)
        v = r1[j]
        lt = v < best
        best = v if lt else best
        arg = np.int32(1) if lt else arg
        m[j] = best
        bp[j] = np.uint8(arg)


@njit(cache=True, nogil=True)
def _min_pred_4(prev: np.ndarray, m: np.ndarray, bp: np.ndarray, M: int) -> None:
    r0 = prev[0:M]
    r1 = prev[M:2 * M]
    r2 = prev[2 * M:3 * M]
    r3 = prev[3 * M:4 * M]
    for j in range(M):
        best = r0[j]
        arg = np.int32(0)
        v = r1[j]
        lt = v < best
        best = v if lt else best
        arg = np.int32(1) if lt else arg
        v = r2[j]
        lt = v < best
        best = v if lt else best
        arg = np.int32(2) if lt else arg
        v = r3[j]
        lt = v < best
        best = v if lt else best
        arg = np.int32(3) if lt else arg
        m[j] = best
        bp[j] = np.uint8(arg)


@njit(cache=True, nogil=True)
def _min_pred_8(prev: np.ndarray, m: np.ndarray, bp: np.ndarray, M: int) -> None:
    r0 = prev[0:M]
    r1 = prev[M:2 * M]
    r2 = prev[2 * M:3 * M]
    r3 = prev[3 * M:4 * M]
    r4 = prev[4 * M:5 * M]
    r5 = prev[5 * M:6 * M]
    r6 = prev[6 * M:7 * M]
    r7 = prev[7 * M:8 * M]
    for j in range(M):
        best = r0[j]
        arg = np.int32(0)
        v = r1[j]
        lt = v < best
        best = v if lt else best
        arg = np.int32(1) if lt else arg
        v = r2[j]
        lt = v < best
        best = v if lt else best
        arg = np.int32(2) if lt else arg
        v = r3[j]
        lt = v < best
        best = v if lt else best
        arg = np.int32(3) if lt else arg
        v = r4[j]
        lt = v < best
        best = v if lt else best
        arg = np.int32(4) if lt else arg
        v = r5[j]
        lt = v < best
        best = v if lt else best
        arg = np.int32(5) if lt else arg
        v = r6[j]
        lt = v < best
        best = v if lt else best
        arg = np.int32(6) if lt else arg
        v = r7[j]
        lt = v < best
        best = v if lt else best
        arg = np.int32(7) if lt else arg
        m[j] = best
        bp[j] = np.uint8(arg)


@njit(cache=True, nogil=True)
def _min_pred_by_8(prev: np.ndarray, m: np.ndarray, bp: np.ndarray, M: int, P: int) -> None:
    # P a multiple of 8 above 8: P/8 passes of the 8-row body, each starting from the running minimum in
    # m/bp.  Every store is unconditional: a p-outer loop that stores only where a row wins becomes masked
    # vector stores (vmaskmovps), which are microcoded and many times slower on AMD Zen than on Intel.
    # The body repeats _min_pred_8's on purpose: one shared 8-row helper with a runtime row offset, used
    # by both, was slower (benchmarks/RESULTS.md, "Kernel design measurements").
    _min_pred_8(prev, m, bp, M)
    for g in range(1, P // 8):
        base = 8 * g * M
        r0 = prev[base:base + M]
        r1 = prev[base + M:base + 2 * M]
        r2 = prev[base + 2 * M:base + 3 * M]
        r3 = prev[base + 3 * M:base + 4 * M]
        r4 = prev[base + 4 * M:base + 5 * M]
        r5 = prev[base + 5 * M:base + 6 * M]
        r6 = prev[base + 6 * M:base + 7 * M]
        r7 = prev[base + 7 * M:base + 8 * M]
        p0 = np.int32(8 * g)
        for j in range(M):
            best = m[j]
            arg = np.int32(bp[j])
            v = r0[j]
            lt = v < best
            best = v if lt else best
            arg = p0 if lt else arg
            v = r1[j]
            lt = v < best
            best = v if lt else best
            arg = p0 + 1 if lt else arg
            v = r2[j]
            lt = v < best
            best = v if lt else best
            arg = p0 + 2 if lt else arg
            v = r3[j]
            lt = v < best
            best = v if lt else best
            arg = p0 + 3 if lt else arg
            v = r4[j]
            lt = v < best
            best = v if lt else best
            arg = p0 + 4 if lt else arg
            v = r5[j]
            lt = v < best
            best = v if lt else best
            arg = p0 + 5 if lt else arg
            v = r6[j]
            lt = v < best
            best = v if lt else best
            arg = p0 + 6 if lt else arg
            v = r7[j]
            lt = v < best
            best = v if lt else best
            arg = p0 + 7 if lt else arg
            m[j] = best
            bp[j] = np.uint8(arg)


@njit(cache=True, nogil=True)
def _min_pred(prev: np.ndarray, m: np.ndarray, bp: np.ndarray, M: int, P: int) -> None:
    if P == 2:
        _min_pred_2(prev, m, bp, M)
    elif P == 4:
        _min_pred_4(prev, m, bp, M)
    elif P == 8:
        _min_pred_8(prev, m, bp, M)
    else:  # P = 2^kv, a multiple of 8 from here on
        _min_pred_by_8(prev, m, bp, M, P)


# ----------------------------------------------------------------------------- phase 2
# cur[j*P + b] = m[j] + ||x_t - vals[:, j*P + b]||^2


@njit(cache=True, nogil=True)
def _expand_v1_p2(m: np.ndarray, v0: np.ndarray, x0: float, cur: np.ndarray, M: int) -> None:
    for j in range(M):
        mj = m[j]
        d0 = x0 - v0[2 * j]
        d1 = x0 - v0[2 * j + 1]
        cur[2 * j] = mj + d0 * d0
        cur[2 * j + 1] = mj + d1 * d1


@njit(cache=True, nogil=True)
def _expand_v1_p4(m: np.ndarray, v0: np.ndarray, x0: float, cur: np.ndarray, M: int) -> None:
    for j in range(M):
        mj = m[j]
        d0 = x0 - v0[4 * j]
        d1 = x0 - v0[4 * j + 1]
        d2 = x0 - v0[4 * j + 2]
        d3 = x0 - v0[4 * j + 3]
        cur[4 * j] = mj + d0 * d0
        cur[4 * j + 1] = mj + d1 * d1
        cur[4 * j + 2] = mj + d2 * d2
        cur[4 * j + 3] = mj + d3 * d3


@njit(cache=True, nogil=True)
def _expand_v1_p8(m: np.ndarray, v0: np.ndarray, x0: float, cur: np.ndarray, M: int) -> None:
    # Two streaming passes (branch errors, then a constant-width broadcast add) beat one fused pass and an
    # unrolled body at P = 8 (benchmarks/RESULTS.md, "Kernel design measurements").
    for s in range(8 * M):
        d0 = x0 - v0[s]
        cur[s] = d0 * d0
    for j in range(M):
        mj = m[j]
        base = 8 * j
        for b in range(8):
            cur[base + b] += mj


@njit(cache=True, nogil=True)
def _expand_v1_any(m: np.ndarray, v0: np.ndarray, x0: float, cur: np.ndarray, M: int, P: int) -> None:
    # P >= 16: the inner loop over b fills whole SIMD vectors.
    for j in range(M):
        mj = m[j]
        base = j * P
        for b in range(P):
            d0 = x0 - v0[base + b]
            cur[base + b] = mj + d0 * d0


@njit(cache=True, nogil=True)
def _expand_v2_p4(m: np.ndarray, v0: np.ndarray, v1: np.ndarray, x0: float, x1: float,
                  cur: np.ndarray, M: int) -> None:
    for j in range(M):
        mj = m[j]
        a0 = x0 - v0[4 * j]
        a1 = x0 - v0[4 * j + 1]
        a2 = x0 - v0[4 * j + 2]
        a3 = x0 - v0[4 * j + 3]
        b0 = x1 - v1[4 * j]
        b1 = x1 - v1[4 * j + 1]
        b2 = x1 - v1[4 * j + 2]
        b3 = x1 - v1[4 * j + 3]
        cur[4 * j] = mj + (a0 * a0 + b0 * b0)
        cur[4 * j + 1] = mj + (a1 * a1 + b1 * b1)
        cur[4 * j + 2] = mj + (a2 * a2 + b2 * b2)
        cur[4 * j + 3] = mj + (a3 * a3 + b3 * b3)


@njit(cache=True, nogil=True)
def _expand_v2_any(m: np.ndarray, v0: np.ndarray, v1: np.ndarray, x0: float, x1: float,
                   cur: np.ndarray, M: int, P: int) -> None:
    for j in range(M):
        mj = m[j]
        base = j * P
        for b in range(P):
            a = x0 - v0[base + b]
            c = x1 - v1[base + b]
            cur[base + b] = mj + (a * a + c * c)


@njit(cache=True, nogil=True)
def _expand(m: np.ndarray, vals: np.ndarray, xt: np.ndarray, cur: np.ndarray, M: int, P: int) -> None:
    if vals.shape[0] == 1:
        v0 = vals[0]
        x0 = xt[0]
        if P == 2:
            _expand_v1_p2(m, v0, x0, cur, M)
        elif P == 4:
            _expand_v1_p4(m, v0, x0, cur, M)
        elif P == 8:
            _expand_v1_p8(m, v0, x0, cur, M)
        else:
            _expand_v1_any(m, v0, x0, cur, M, P)
    else:
        v0 = vals[0]
        v1 = vals[1]
        if P == 4:
            _expand_v2_p4(m, v0, v1, xt[0], xt[1], cur, M)
        else:
            _expand_v2_any(m, v0, v1, xt[0], xt[1], cur, M, P)


# ----------------------------------------------------------------------------- Viterbi


@njit(cache=True, nogil=True)
def viterbi_block(x: np.ndarray, vals: np.ndarray, L: int, kv: int, start: int, end: int,
                  prev: np.ndarray, cur: np.ndarray, m: np.ndarray, bp: np.ndarray,
                  states: np.ndarray) -> float:
    """Minimum squared-error state path of one block; returns its cost.

    ``x``: float32 (n·V,); ``vals``: float32 (V, 2^L) code table (already scaled);
    ``start``/``end``: −1 for a free end, else the path must satisfy ``s_0 >> kv == start``
    (its predecessor's low bits) and ``s_{n-1} mod 2^(L-kv) == end`` (its successor's high
    bits); ``start == end`` makes the path tail-biting.  Scratch: ``prev``, ``cur`` float32
    (2^L,), ``m`` float32 (M,), ``bp`` uint8 (≥ n, M).  Output: ``states`` int32 (n,).
    Cost ``= min_path Σ_t ‖x_t − vals[:, s_t]‖²`` (float32 accumulation; +inf when no
    path meets the constraints, which cannot happen for ``n·kv ≥ L``).
    """
    V = vals.shape[0]
    n = x.shape[0] // V
    N = 1 << L
    P = 1 << kv
    M = N >> kv
    inf = np.float32(np.inf)
    # t = 0: branch error only (restricted to s >> kv == start when constrained).
    for s in range(N):
        e = np.float32(0.0)
        for v in range(V):
            d = x[v] - vals[v, s]
            e += d * d
        prev[s] = e
    if start >= 0:
        keep = prev[start * P:(start + 1) * P].copy()
        prev[:] = inf
        prev[start * P:(start + 1) * P] = keep
    for t in range(1, n):
        _min_pred(prev, m, bp[t], M, P)
        _expand(m, vals, x[t * V:(t + 1) * V], cur, M, P)
        prev, cur = cur, prev
    # Best final state (constrained: s mod M == end, i.e. s = p*M + end).
    best = inf
    s_best = 0
    if end >= 0:
        for p in range(P):
            c = prev[p * M + end]
            if c < best:
                best = c
                s_best = p * M + end
    else:
        for s in range(N):
            if prev[s] < best:
                best = prev[s]
                s_best = s
    s = s_best
    states[n - 1] = s
    for t in range(n - 1, 0, -1):
        j = s >> kv
        s = np.int64(bp[t, j]) * M + j
        states[t - 1] = s
    return best


@njit(cache=True, nogil=True, parallel=True)
def viterbi_encode(x: np.ndarray, vals: np.ndarray, L: int, kv: int, start: np.ndarray,
                   end: np.ndarray, states: np.ndarray, nchunks: int) -> np.ndarray:
    """Viterbi paths of many blocks in parallel (one block per thread at a time).

    ``x``: float32 (nb, n·V) C-contiguous; ``vals``: float32 (V, 2^L); ``start``, ``end``:
    int64 (nb,) end constraints per block or −1 (see :func:`viterbi_block`); ``states``:
    int32 (nb, n) output; ``nchunks``: blocks are dealt round-robin to this many chunks, each with its own
    scratch (allocated once per chunk); a few chunks per thread, scheduled dynamically
    (``numba.parallel_chunksize(1)``), keep both cores busy when one is shared.  Returns
    float32 (nb,) path costs.  Memory per thread: 2·2^L float32 costs plus
    ``n·2^(L−kv)`` uint8 back-pointers (e.g. 4 MiB at L=16, kv=2, n=256).
    """
    nb = x.shape[0]
    V = vals.shape[0]
    n = x.shape[1] // V
    N = 1 << L
    M = N >> kv
    costs = np.empty(nb, dtype=np.float32)
    nchunks = max(1, min(nb, nchunks))
    for c in prange(nchunks):
        prev = np.empty(N, dtype=np.float32)
        cur = np.empty(N, dtype=np.float32)
        m = np.empty(M, dtype=np.float32)
        bp = np.empty((n, M), dtype=np.uint8)
        for i in range(c, nb, nchunks):
            costs[i] = viterbi_block(x[i], vals, L, kv, start[i], end[i], prev, cur, m, bp, states[i])
    return costs


# ----------------------------------------------------------------------------- bits


@njit(cache=True, nogil=True, parallel=True)
def pack_states(states: np.ndarray, L: int, kv: int, out: np.ndarray) -> None:
    """Write the top ``kv`` bits of every state, MSB-first, into ``out``.

    ``states``: int32 (nb, n) with ``n·kv`` a multiple of 8; ``out``: uint8 (nb, n·kv/8).
    For a tail-biting path the circular stream's ``L``-bit windows at bit ``t·kv`` are
    exactly the states (the overlap invariant); otherwise the packing is lossy.
    """
    nb, n = states.shape
    shift = L - kv
    for i in prange(nb):
        acc = np.int64(0)
        nacc = 0
        pos = 0
        for t in range(n):
            acc = ((acc << kv) | (np.int64(states[i, t]) >> shift)) & 0xFFFFFF
            nacc += kv
            while nacc >= 8:
                nacc -= 8
                out[i, pos] = np.uint8((acc >> nacc) & 0xFF)
                pos += 1


@njit(cache=True, nogil=True, parallel=True)
def unpack_states(codes: np.ndarray, L: int, kv: int, n: int, out: np.ndarray) -> None:
    """States ``s_t`` = ``L``-bit window at bit ``t·kv`` of each circular bitstream.

    ``codes``: uint8 (nb, ≥ n·kv/8) (only the first ``n·kv/8`` bytes are read);
    ``out``: int32 (nb, n).
    """
    nb = codes.shape[0]
    nbytes = n * kv // 8
    mask = (1 << L) - 1
    for i in prange(nb):
        acc = np.int64(0)
        nacc = 0
        pos = 0  # byte index into the circular stream
        for t in range(n):
            while nacc < L:
                acc = ((acc << 8) | np.int64(codes[i, pos])) & 0xFFFFFFFFFF
                pos = pos + 1 if pos + 1 < nbytes else 0
                nacc += 8
            out[i, t] = np.int32((acc >> (nacc - L)) & mask)
            nacc -= kv


@njit(cache=True, nogil=True, inline="always")
def _decode_block(row, vals, L, kv, sc, orow):
    """Decode one packed block ``row`` (uint8, ≥ n·kv/8) into ``orow`` (float32 (n·V,)), times ``sc``."""
    V = vals.shape[0]
    n = orow.shape[0] // V
    nbytes = n * kv // 8
    v0 = vals[0]
    v1 = vals[V - 1]
    if kv == 4:
        # Steps 2p and 2p + 1 start at bits 8p and 8p + 4: both states are windows of the 24 bits in bytes
        # p..p+2 (L ≤ 20), independent of each other, so the loop pipelines better than the shift register
        # below (benchmarks/RESULTS.md, "Kernel design measurements").
        mask = np.int64((1 << L) - 1)
        sh0 = 24 - L
        sh1 = 20 - L
        for p in range(nbytes):
            p1 = p + 1 if p + 1 < nbytes else p + 1 - nbytes
            p2 = p + 2 if p + 2 < nbytes else p + 2 - nbytes
            w = (np.int64(row[p]) << 16) | (np.int64(row[p1]) << 8) | np.int64(row[p2])
            s0 = (w >> sh0) & mask
            s1 = (w >> sh1) & mask
            if V == 1:
                orow[2 * p] = sc * v0[s0]
                orow[2 * p + 1] = sc * v0[s1]
            else:
                orow[4 * p] = sc * v0[s0]
                orow[4 * p + 1] = sc * v1[s0]
                orow[4 * p + 2] = sc * v0[s1]
                orow[4 * p + 3] = sc * v1[s1]
        return
    umask = np.uint64((1 << L) - 1)
    acc = np.uint64(0)
    nacc = 0
    pos = 0
    for t in range(n):
        if nacc < L:
            for _ in range(4):  # nacc < L <= 20, so acc stays below 2^52
                acc = (acc << np.uint64(8)) | np.uint64(row[pos])
                pos = pos + 1 if pos + 1 < nbytes else 0
                nacc += 8
        st = np.int64((acc >> np.uint64(nacc - L)) & umask)
        nacc -= kv
        if V == 1:
            orow[t] = sc * v0[st]
        else:
            orow[2 * t] = sc * v0[st]
            orow[2 * t + 1] = sc * v1[st]


@njit(cache=True, nogil=True, parallel=True)
def decode_blocks(codes: np.ndarray, vals: np.ndarray, L: int, kv: int, scales: np.ndarray,
                  out: np.ndarray) -> None:
    """Decode packed blocks: ``out[i, t·V + v] = scales[i] · vals[v, s_t]``.

    ``codes``: uint8 (nb, n·kv/8) (rows may be strided views); ``vals``: float32 (V, 2^L),
    V ∈ {1, 2}; ``scales``: float32 (nb,); ``out``: float32 (nb, n·V).  The state is a
    sliding ``L``-bit window over the circular stream, so every block decodes on its own.
    The bit buffer is refilled four bytes at a time (read-ahead past the end wraps around
    the circular stream, so it is harmless), which is about twice as fast per value as a
    byte-at-a-time refill (``benchmarks/RESULTS.md``, "Kernel design measurements").
    """
    for i in prange(codes.shape[0]):
        _decode_block(codes[i], vals, L, kv, scales[i], out[i])


#: Rows per parallel task of :func:`ip_pairs_blocks` (one decode buffer per task).
_PAIR_ROWS = 32


@njit(cache=True, nogil=True, parallel=True, fastmath=True)
def ip_pairs_blocks(queries: np.ndarray, pair_query: np.ndarray, codes: np.ndarray, pair_row: np.ndarray,
                    vals: np.ndarray, L: int, kv: int, scales: np.ndarray, nblocks: int) -> np.ndarray:
    """Rescoring: ``out[p] = ⟨queries[pair_query[p]], decode(row pair_row[p])⟩`` for every (query, row) pair p.

    ``codes`` uint8 (U·nblocks, ≥ bytes per block) — row ``u`` is blocks ``u·nblocks …`` — with ``scales``
    (U·nblocks,); ``queries`` float32 (nq, nblocks·block) work-domain queries; ``pair_query``/``pair_row``
    int64 (P,).  Pairs
    are grouped by row (counting sort), and each row is decoded once into a small buffer that stays in L1
    while every query that refers to it takes its dot product: nothing of size (U, d) is written.
    """
    nrows = codes.shape[0] // nblocks
    npairs = pair_query.shape[0]
    d = queries.shape[1]
    block = d // nblocks
    start = np.zeros(nrows + 1, dtype=np.int64)
    for p in range(npairs):
        start[pair_row[p] + 1] += 1
    for u in range(nrows):
        start[u + 1] += start[u]
    fill = start[:nrows].copy()
    order = np.empty(npairs, dtype=np.int64)
    for p in range(npairs):
        order[fill[pair_row[p]]] = p
        fill[pair_row[p]] += 1
    out = np.empty(npairs, dtype=np.float32)
    for c in prange((nrows + _PAIR_ROWS - 1) // _PAIR_ROWS):
        buf = np.empty(d, dtype=np.float32)
        for u in range(c * _PAIR_ROWS, min(nrows, (c + 1) * _PAIR_ROWS)):
            if start[u] == start[u + 1]:
                continue
            for b in range(nblocks):
                i = u * nblocks + b
                _decode_block(codes[i], vals, L, kv, scales[i], buf[b * block:(b + 1) * block])
            for t in range(start[u], start[u + 1]):
                p = order[t]
                out[p] = dot_f32(queries[pair_query[p]], buf)
    return out
