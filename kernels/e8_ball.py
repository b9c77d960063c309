"""E8 ball codebooks: ranking and unranking of ball points, and the encode and decode kernels of ball indices.

Points use the doubled integer coordinates ``u = 2v`` of :mod:`.e8`; blocks are 8 consecutive coordinates of
a row.  Internal arithmetic is float64 so that nearest-point decisions match a float64 brute force.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .e8 import BLOCKS_PER_TASK, e8_nearest_block

# --------------------------------------------------------------------------- E8 ball indexing
#
# A ball codebook is a union of *classes*: orbits of a sorted abs pattern ("leader") under
# coordinate permutations and the sign changes that stay in E8.  For a leader ℓ (descending
# doubled abs values):
#   * even type (all ℓ_i even, Σℓ ≡ 0 mod 4): every sign pattern of the non-zero coordinates is
#     valid → 2^nnz sign choices;
#   * odd type (all ℓ_i odd): the number of negative coordinates must be ≡ Σℓ/2 (mod 2) →
#     2^7 choices (coordinate 7's sign is implied).
# index = offset[class] + perm_rank · n_signs + sign_rank, where perm_rank is the rank of the
# arrangement of abs values among the distinct permutations of the multiset (lexicographic,
# smaller value first) and sign_rank packs the free sign bits (bit j ↔ j-th free coordinate).
# A class may be truncated (the codebook then holds only its first offset[c+1] − offset[c] ranks).


@njit(cache=True, nogil=True)
def _ball_rank(u: np.ndarray, keys: np.ndarray, cid_by_key: np.ndarray, offsets: np.ndarray,
               nsign_log2: np.ndarray, fact: np.ndarray, scratch: np.ndarray) -> np.int64:
    """Index of the lattice point ``u`` (doubled int coords) in the ball codebook, or -1 if absent.

    ``scratch`` is an int64 (3, 8) work buffer.
    """
    for i in range(8):
        scratch[0, i] = abs(u[i])
    # insertion sort, descending
    for i in range(1, 8):
        v = scratch[0, i]
        j = i - 1
        while j >= 0 and scratch[0, j] < v:
            scratch[0, j + 1] = scratch[0, j]
            j -= 1
        scratch[0, j + 1] = v
    if scratch[0, 0] >= 64:
        return np.int64(-1)
    key = np.int64(0)
    for j in range(8):
        key |= scratch[0, j] << (6 * j)
    pos = np.searchsorted(keys, key)
    if pos >= keys.shape[0] or keys[pos] != key:
        return np.int64(-1)
    cid = cid_by_key[pos]
    # distinct values ascending with multiplicities
    nd = 0
    for j in range(7, -1, -1):
        if nd > 0 and scratch[1, nd - 1] == scratch[0, j]:
            scratch[2, nd - 1] += 1
        else:
            scratch[1, nd] = scratch[0, j]
            scratch[2, nd] = 1
            nd += 1
    # tot = arrangements of the remaining multiset; those starting with value j number
    # tot·counts[j]/rem, an exact integer ≤ 8!, so it is computed as a rounded float product
    # (exact: relative error ~1e-16 on values < 2^16) instead of an int64 division.
    tot = fact[8]
    for j in range(nd):
        tot //= fact[scratch[2, j]]
    prank = np.int64(0)
    for i in range(8):
        w = abs(u[i])
        inv = 1.0 / (8 - i)
        for j in range(nd):
            m = np.int64(tot * scratch[2, j] * inv + 0.5)
            if scratch[1, j] == w:
                tot = m
                scratch[2, j] -= 1
                break
            prank += m
    srank = np.int64(0)
    if scratch[0, 0] & 1:  # odd type: signs of coordinates 0..6
        for i in range(7):
            if u[i] < 0:
                srank |= np.int64(1) << i
    else:
        j = 0
        for i in range(8):
            if u[i] != 0:
                if u[i] < 0:
                    srank |= np.int64(1) << j
                j += 1
    within = (prank << nsign_log2[cid]) + srank
    if within >= offsets[cid + 1] - offsets[cid]:  # beyond a truncated class
        return np.int64(-1)
    return offsets[cid] + within


@njit(cache=True, nogil=True)
def _ball_unrank(idx: np.int64, offsets: np.ndarray, leaders: np.ndarray, nsign_log2: np.ndarray,
                 fact: np.ndarray, u: np.ndarray, scratch: np.ndarray) -> None:
    """Inverse of :func:`_ball_rank` for ``0 ≤ idx < offsets[-1]``; writes doubled coords to ``u``.

    ``scratch`` is an int64 (3, 8) work buffer.
    """
    cid = np.searchsorted(offsets, idx, side="right") - 1
    r = idx - offsets[cid]
    nsl = nsign_log2[cid]
    prank = r >> nsl
    srank = r & ((np.int64(1) << nsl) - 1)
    nd = 0
    half_sum = 0
    for j in range(7, -1, -1):
        w = np.int64(leaders[cid, j])
        half_sum += w
        if nd > 0 and scratch[1, nd - 1] == w:
            scratch[2, nd - 1] += 1
        else:
            scratch[1, nd] = w
            scratch[2, nd] = 1
            nd += 1
    tot = fact[8]
    for j in range(nd):
        tot //= fact[scratch[2, j]]
    for i in range(8):
        inv = 1.0 / (8 - i)
        for j in range(nd):
            m = np.int64(tot * scratch[2, j] * inv + 0.5)  # arrangements of the rest starting with value j
            if prank < m:
                u[i] = scratch[1, j]
                tot = m
                scratch[2, j] -= 1
                break
            prank -= m
    if leaders[cid, 0] & 1:
        par = (half_sum >> 1) & 1
        for i in range(7):
            if (srank >> i) & 1:
                u[i] = -u[i]
                par ^= 1
        if par:
            u[7] = -u[7]
    else:
        j = 0
        for i in range(8):
            if u[i] != 0:
                if (srank >> j) & 1:
                    u[i] = -u[i]
                j += 1


@njit(cache=True, nogil=True, parallel=True)
def e8_ball_rank(u: np.ndarray, keys: np.ndarray, cid_by_key: np.ndarray, offsets: np.ndarray,
                 nsign_log2: np.ndarray, fact: np.ndarray, out: np.ndarray) -> None:
    """Index of each lattice point ``u[j]`` (doubled int32 coords, (m, 8)) in the ball codebook.

    ``out`` int64 (m,) gets -1 for points outside the codebook.  Tables come from
    ``vqsearch.quantizers.e8_codebook.e8_ball_tables``; ``fact`` is int64 [0!, …, 8!].
    """
    m = u.shape[0]
    for c in prange((m + BLOCKS_PER_TASK - 1) // BLOCKS_PER_TASK):
        scratch = np.zeros((3, 8), dtype=np.int64)
        for j in range(c * BLOCKS_PER_TASK, min(m, (c + 1) * BLOCKS_PER_TASK)):
            out[j] = _ball_rank(u[j], keys, cid_by_key, offsets, nsign_log2, fact, scratch)


@njit(cache=True, nogil=True, parallel=True)
def e8_ball_unrank(idx: np.ndarray, offsets: np.ndarray, leaders: np.ndarray, nsign_log2: np.ndarray,
                   fact: np.ndarray, out: np.ndarray) -> None:
    """Lattice point (doubled int32 coords) of every index ``0 ≤ idx[j] < offsets[-1]``; out (m, 8)."""
    m = idx.shape[0]
    for c in prange((m + BLOCKS_PER_TASK - 1) // BLOCKS_PER_TASK):
        scratch = np.zeros((3, 8), dtype=np.int64)
        for j in range(c * BLOCKS_PER_TASK, min(m, (c + 1) * BLOCKS_PER_TASK)):
            _ball_unrank(idx[j], offsets, leaders, nsign_log2, fact, out[j], scratch)


@njit(cache=True, nogil=True)
def _ball_class_search(y: np.ndarray, leaders: np.ndarray, skip: int, u: np.ndarray,
                       order: np.ndarray, ay: np.ndarray) -> float:
    """Nearest point to ``y`` over the union of all classes except ``skip``; doubled coords → ``u``.

    For one class (leader ℓ, descending) the best point is found in closed form: pair the
    largest |y_i| with the largest ℓ_k (rearrangement inequality), take the signs of y, and for
    odd classes whose sign parity is wrong flip the coordinate with the smallest |y_i|·ℓ_k,
    which is the last in sorted order (a swap argument shows this beats every other pairing):

    .. math:: d_c = \\lVert y \\rVert^2 + \\lVert \\ell/2 \\rVert^2 - \\langle |y|_{\\downarrow}, \\ell \\rangle
              + [\\text{parity wrong}]\\; 2\\,|y|_{(8)}\\,\\ell_8

    Returns the squared distance.  ``order`` (int64[8]) and ``ay`` (float64[8]) are scratch.
    """
    negp = 0
    ny2 = 0.0
    for i in range(8):
        order[i] = i
        ay[i] = abs(y[i])
        ny2 += y[i] * y[i]
        if y[i] < 0.0:
            negp ^= 1
    for i in range(1, 8):  # argsort |y| descending (insertion sort)
        oi = order[i]
        v = ay[oi]
        j = i - 1
        while j >= 0 and ay[order[j]] < v:
            order[j + 1] = order[j]
            j -= 1
        order[j + 1] = oi
    best = np.inf
    best_c = 0
    for c in range(leaders.shape[0]):
        if c == skip:
            continue
        dot = 0.0
        nl = 0.0
        hs = 0
        for k in range(8):
            lk = np.float64(leaders[c, k])
            dot += ay[order[k]] * lk
            nl += lk * lk
            hs += leaders[c, k]
        d = ny2 + 0.25 * nl - dot
        if leaders[c, 0] & 1 and ((hs >> 1) & 1) != negp:
            d += 2.0 * ay[order[7]] * leaders[c, 7]
        if d < best:
            best = d
            best_c = c
    hs = 0
    for k in range(8):
        i = order[k]
        lk = leaders[best_c, k]
        hs += lk
        u[i] = -lk if y[i] < 0.0 else lk
    if leaders[best_c, 0] & 1 and ((hs >> 1) & 1) != negp:
        u[order[7]] = -u[order[7]]
    return best


@njit(cache=True, nogil=True, parallel=True)
def e8_ball_encode_rows(x: np.ndarray, scale: np.ndarray, keys: np.ndarray, cid_by_key: np.ndarray,
                        offsets: np.ndarray, leaders: np.ndarray, nsign_log2: np.ndarray, fact: np.ndarray,
                        out: np.ndarray) -> int:
    """Nearest ball-codeword index of every block of ``scale[r] · x[r]``; returns the number of overloads.

    Each block y is decoded to its nearest E8 point (exact, Conway–Sloane); if that point is in
    the codebook it is the nearest codeword.  Otherwise (overload) the nearest codeword is found
    by the closed-form per-class search of :func:`_ball_class_search` over all classes (cost
    8 multiply-adds per class).  The only approximation: if the winner falls in the unfilled
    part of the truncated last class, the search is repeated without that class.

    Input contract: ``x`` float32 (n, 8·nb); ``scale`` float32 (n,); ball tables as in
    :func:`e8_ball_rank` plus ``leaders`` int32 (C, 8); ``out`` int64 (n, nb).
    """
    n, nb = out.shape
    over = np.zeros(n, dtype=np.int64)
    last = leaders.shape[0] - 1
    for r in prange(n):
        y = np.empty(8, dtype=np.float64)
        ay = np.empty(8, dtype=np.float64)
        order = np.empty(8, dtype=np.int64)
        u = np.empty(8, dtype=np.int32)
        tmp = np.empty(8, dtype=np.int32)
        scratch = np.zeros((3, 8), dtype=np.int64)
        s = np.float64(scale[r])
        for b in range(nb):
            for i in range(8):
                y[i] = s * x[r, 8 * b + i]
            e8_nearest_block(y, u, tmp)
            idx = _ball_rank(u, keys, cid_by_key, offsets, nsign_log2, fact, scratch)
            if idx < 0:
                over[r] += 1
                _ball_class_search(y, leaders, -1, u, order, ay)
                idx = _ball_rank(u, keys, cid_by_key, offsets, nsign_log2, fact, scratch)
                if idx < 0:  # landed in the unfilled part of the truncated class
                    _ball_class_search(y, leaders, last, u, order, ay)
                    idx = _ball_rank(u, keys, cid_by_key, offsets, nsign_log2, fact, scratch)
            out[r, b] = idx
    return int(over.sum())


@njit(cache=True, nogil=True, parallel=True)
def e8_ball_decode_rows(idx: np.ndarray, offsets: np.ndarray, leaders: np.ndarray,
                        nsign_log2: np.ndarray, fact: np.ndarray, mult: np.ndarray, out: np.ndarray) -> int:
    """``out[r, 8b:8b+8] = mult[r] · point(idx[r, b])``; returns the number of invalid indices.

    .. math:: out_{r,8b+i} = m_r \\, u_i / 2

    Indices outside ``[0, offsets[-1])`` decode to zeros and are counted, so the caller can
    raise a typed error.  Input contract: ``idx`` int64 (n, nb); ``mult`` float32 (n,);
    ``out`` float32 (n, 8·nb).
    """
    n, nb = idx.shape
    size = offsets[offsets.shape[0] - 1]
    bad = np.zeros(n, dtype=np.int64)
    for r in prange(n):
        u = np.empty(8, dtype=np.int32)
        scratch = np.zeros((3, 8), dtype=np.int64)
        h = np.float32(0.5) * mult[r]
        for b in range(nb):
            c = idx[r, b]
            if c < 0 or c >= size:
                bad[r] += 1
                for i in range(8):
                    out[r, 8 * b + i] = 0.0
                continue
            _ball_unrank(c, offsets, leaders, nsign_log2, fact, u, scratch)
            for i in range(8):
                out[r, 8 * b + i] = h * u[i]
    return int(bad.sum())


@njit(cache=True, nogil=True, parallel=True)
def e8_lut_decode_rows(idx: np.ndarray, lut: np.ndarray, mult: np.ndarray, out: np.ndarray) -> int:
    """Table version of :func:`e8_ball_decode_rows` for small codebooks: ``lut`` int8 (size, 8) holds
    every point's doubled coordinates; same contract and return value (invalid-index count)."""
    n, nb = idx.shape
    size = lut.shape[0]
    bad = np.zeros(n, dtype=np.int64)
    for r in prange(n):
        h = np.float32(0.5) * mult[r]
        for b in range(nb):
            c = idx[r, b]
            if c < 0 or c >= size:
                bad[r] += 1
                for i in range(8):
                    out[r, 8 * b + i] = 0.0
                continue
            for i in range(8):
                out[r, 8 * b + i] = h * lut[c, i]
    return int(bad.sum())
