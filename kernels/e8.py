"""E8 lattice kernels: nearest point, the E8P codebook, small-table search and ball indexing.

All kernels are pure ``@njit(cache=True, nogil=True)`` functions over numpy arrays; parallel ones use
``prange`` over rows (vectors) or 8-D blocks.  Conventions shared by every kernel:

* A *block* is 8 consecutive coordinates of a row; a row of width ``d_work`` has
  ``d_work // 8`` blocks (the caller pads to a multiple of 8).
* Lattice points of E8 = D8 ∪ (D8 + ½) are handled exactly as **doubled** integer
  coordinates ``u = 2v`` (int32): all even (``v ∈ D8``) or all odd (``v ∈ D8 + ½``), with
  ``Σu ≡ 0 (mod 4)`` in both cases.
* Internal arithmetic is float64 so that nearest-point decisions match a float64 brute
  force; outputs are float32.

E8P 16-bit code layout (original QuIP#, see ``vqsearch.quantizers.e8_codebook``)::

    bits 15..8  abs-pattern index k into the 256 × 8 table S
    bits  7..1  sign field f: bit (7 − i) of f set ⇔ coordinate i (1 ≤ i ≤ 7) is negative
    bit      0  shift: 1 → +¼, 0 → −¼
    coordinate 0 is negative ⇔ popcount(f) + odd[k] is odd   (odd[k] = (Σ S[k]) mod 2)
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

_CHUNK = 256  # blocks per parallel work item in the block-parallel kernels (amortises scratch buffers)

# --------------------------------------------------------------------------- E8 nearest point


@njit(cache=True, nogil=True)
def _coset_nearest(y: np.ndarray, coset: int, u: np.ndarray) -> float:
    """Nearest point of D8 + coset/2 to ``y`` (float64[8]); writes doubled coords to ``u``, returns ‖y − v‖².

    Conway & Sloane: round every coordinate; if the sum of the rounded integers is odd,
    re-round the coordinate with the largest rounding error the other way.
    """
    h = 0.5 * coset
    s = 0
    worst = -1.0
    k = 0
    for i in range(8):
        z = y[i] - h
        fi = np.floor(z + 0.5)
        u[i] = np.int32(2.0 * fi) + coset
        s += np.int64(fi)
        e = abs(z - fi)
        if e > worst:
            worst = e
            k = i
    if s & 1:
        # re-round the worst coordinate the other way (towards y)
        if 2.0 * (y[k] - h) >= u[k] - coset:
            u[k] += 2
        else:
            u[k] -= 2
    dist = 0.0
    for i in range(8):
        e = y[i] - 0.5 * u[i]
        dist += e * e
    return dist


@njit(cache=True, nogil=True)
def _e8_nearest_block(y: np.ndarray, u: np.ndarray, tmp: np.ndarray) -> float:
    """Nearest E8 point to ``y`` (float64[8]) as doubled coords in ``u``; returns the squared distance."""
    d0 = _coset_nearest(y, 0, u)
    d1 = _coset_nearest(y, 1, tmp)
    if d1 < d0:
        for i in range(8):
            u[i] = tmp[i]
        return d1
    return d0


@njit(cache=True, nogil=True, parallel=True)
def e8_nearest(x: np.ndarray, out: np.ndarray) -> None:
    """Nearest E8 point of every 8-D block, as doubled coordinates.

    .. math:: out_j = 2 \\arg\\min_{v \\in E_8} \\lVert x_j - v \\rVert^2,\\quad
              E_8 = D_8 \\cup (D_8 + \\tfrac12 \\mathbf 1)

    Input contract: ``x`` float32 or float64 (m, 8); ``out`` int32 (m, 8), written in place.
    Ties (measure zero) are broken towards D8 and towards rounding half up.
    """
    m = x.shape[0]
    for c in prange((m + _CHUNK - 1) // _CHUNK):
        y = np.empty(8, dtype=np.float64)
        u = np.empty(8, dtype=np.int32)
        tmp = np.empty(8, dtype=np.int32)
        for j in range(c * _CHUNK, min(m, (c + 1) * _CHUNK)):
            for i in range(8):
                y[i] = x[j, i]
            _e8_nearest_block(y, u, tmp)
            for i in range(8):
                out[j, i] = u[i]


# --------------------------------------------------------------------------- E8P (QuIP# 2-bit)


@njit(cache=True, nogil=True)
def _e8p_encode_block(y: np.ndarray, table: np.ndarray, norm2: np.ndarray, odd: np.ndarray,
                      ay: np.ndarray, neg: np.ndarray) -> np.uint16:
    """Exact nearest E8P codeword of ``y`` (float64[8]) via the abs-pattern search (design doc §1.5).

    ``ay`` (float64[8]) and ``neg`` (int64[8]) are scratch buffers.
    """
    best = np.inf
    best_k = 0
    best_shift = 0
    for shift in range(2):
        t = 0.25 if shift == 1 else -0.25
        negp = 0
        ny2 = 0.0
        for i in range(8):
            z = y[i] - t
            ny2 += z * z
            if z < 0.0:
                negp ^= 1
                ay[i] = -z
            else:
                ay[i] = z
        for k in range(table.shape[0]):
            dot = 0.0
            mn = np.inf
            for i in range(8):
                p = ay[i] * table[k, i]
                dot += p
                if p < mn:
                    mn = p
            score = ny2 + norm2[k] - 2.0 * dot
            if odd[k] != negp:
                # parity of the sign pattern is wrong: flip the cheapest coordinate.
                score += 4.0 * mn
            if score < best:
                best = score
                best_k = k
                best_shift = shift
    # Rebuild the sign pattern of the winner.
    t = 0.25 if best_shift == 1 else -0.25
    negp = 0
    mn = np.inf
    imin = 0
    for i in range(8):
        z = y[i] - t
        neg[i] = 0
        if z < 0.0:
            neg[i] = 1
            negp ^= 1
        p = abs(z) * table[best_k, i]
        if p < mn:
            mn = p
            imin = i
    if negp != odd[best_k]:
        neg[imin] ^= 1
    f = 0
    for i in range(1, 8):
        f |= neg[i] << (7 - i)
    return np.uint16((best_k << 8) | (f << 1) | best_shift)


@njit(cache=True, nogil=True, parallel=True)
def e8p_encode_rows(x: np.ndarray, scale: np.ndarray, table: np.ndarray, norm2: np.ndarray,
                    odd: np.ndarray, out: np.ndarray) -> None:
    """Nearest E8P codeword of every block of ``scale[r] · x[r]``.

    .. math:: out_{r,b} = \\arg\\min_{c} \\lVert s_r x_{r, 8b:8b+8} - \\mathrm{E8P}(c) \\rVert^2

    Exact (equals brute force over all 65 536 codewords).  Cost: 2 × 256 × 8 multiply-adds
    per block.  Input contract: ``x`` float32 (n, 8·nb) C-contiguous; ``scale`` float32 (n,);
    ``table`` float64 (256, 8) abs patterns (positive half-integers); ``norm2`` float64 (256,)
    their squared norms; ``odd`` int64 (256,) = Σ table[k] mod 2; ``out`` uint16 (n, nb).
    """
    n, nb = out.shape
    for r in prange(n):
        y = np.empty(8, dtype=np.float64)
        ay = np.empty(8, dtype=np.float64)
        neg = np.empty(8, dtype=np.int64)
        s = np.float64(scale[r])
        for b in range(nb):
            for i in range(8):
                y[i] = s * x[r, 8 * b + i]
            out[r, b] = _e8p_encode_block(y, table, norm2, odd, ay, neg)


def _e8p_sign_table() -> np.ndarray:
    """±1 patterns of an E8P code: float32 (2, 128, 8); entry [p, f] holds the signs for sign field f
    with coordinate 0 negative iff p = 1 (p = parity(f) ⊕ odd[k]), so a block decodes as
    ``mult · (S[k] ⊙ signs[p, f] + t)`` with no per-bit loop."""
    out = np.ones((2, 128, 8), dtype=np.float32)
    for f in range(128):
        for i in range(1, 8):
            if (f >> (7 - i)) & 1:
                out[:, f, i] = -1.0
    out[1, :, 0] = -1.0
    return out


_E8P_SIGNS = _e8p_sign_table()
_PARITY7 = np.array([bin(f).count("1") & 1 for f in range(128)], dtype=np.int64)


@njit(cache=True, nogil=True, parallel=True)
def e8p_decode_rows(codes: np.ndarray, table: np.ndarray, odd: np.ndarray, mult: np.ndarray,
                    out: np.ndarray) -> None:
    """Accumulate ``mult[r] · E8P(codes[r, b])`` into ``out[r, 8b:8b+8]`` (in place, ``+=``).

    .. math:: out_{r, 8b+i} \\mathrel{+}= m_r\\,(\\sigma_i S_{k,i} + t)

    with the bit layout in the module docstring; the signs σ come from a 256-row table of ±1 patterns
    indexed by (parity, sign field).  Accumulating lets residual stages add ``q2 / ρ`` onto the first
    stage without a temporary.  Input contract: ``codes`` uint16 (n, nb) (any contiguity); ``table``
    float32 (256, 8); ``odd`` int64 (256,); ``mult`` float32 (n,); ``out`` float32 (n, 8·nb).
    """
    n, nb = codes.shape
    signs = _E8P_SIGNS
    parity7 = _PARITY7
    for r in prange(n):
        m = mult[r]
        o = out[r]
        for b in range(nb):
            c = np.int64(codes[r, b])
            k = c >> 8
            f = (c >> 1) & 127
            t = np.float32(0.25) if c & 1 else np.float32(-0.25)
            sg = signs[parity7[f] ^ odd[k], f]
            a = table[k]
            for i in range(8):
                o[8 * b + i] += m * (a[i] * sg[i] + t)


# --------------------------------------------------------------------------- small tables


@njit(cache=True, nogil=True, parallel=True)
def table_nearest_rows(x: np.ndarray, scale: np.ndarray, table: np.ndarray, norm2: np.ndarray,
                       out: np.ndarray) -> None:
    """Brute-force nearest entry of a small 8-D table for every block of ``scale[r] · x[r]``.

    .. math:: out_{r,b} = \\arg\\min_k \\lVert T_k \\rVert^2 - 2 \\langle s_r x_{r,b}, T_k \\rangle

    Input contract: ``x`` float32 (n, 8·nb); ``scale`` float32 (n,); ``table`` float64 (K, 8),
    K ≤ 256; ``norm2`` float64 (K,); ``out`` uint8 (n, nb).  Ties go to the lower index.
    """
    n, nb = out.shape
    entries = table.shape[0]
    for r in prange(n):
        y = np.empty(8, dtype=np.float64)
        s = np.float64(scale[r])
        for b in range(nb):
            for i in range(8):
                y[i] = s * x[r, 8 * b + i]
            best = np.inf
            bk = 0
            for k in range(entries):
                dot = 0.0
                for i in range(8):
                    dot += y[i] * table[k, i]
                score = norm2[k] - 2.0 * dot
                if score < best:
                    best = score
                    bk = k
            out[r, b] = bk


@njit(cache=True, nogil=True, parallel=True)
def table_decode_rows(codes: np.ndarray, table: np.ndarray, mult: np.ndarray, out: np.ndarray) -> None:
    """Accumulate ``mult[r] · table[codes[r, b]]`` into ``out[r, 8b:8b+8]`` (in place, ``+=``).

    Input contract: ``codes`` uint8 (n, nb); ``table`` float32 (K, 8); ``mult`` float32 (n,);
    ``out`` float32 (n, 8·nb).
    """
    n, nb = codes.shape
    for r in prange(n):
        m = mult[r]
        for b in range(nb):
            k = codes[r, b]
            for i in range(8):
                out[r, 8 * b + i] += m * table[k, i]


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
    for c in prange((m + _CHUNK - 1) // _CHUNK):
        scratch = np.zeros((3, 8), dtype=np.int64)
        for j in range(c * _CHUNK, min(m, (c + 1) * _CHUNK)):
            out[j] = _ball_rank(u[j], keys, cid_by_key, offsets, nsign_log2, fact, scratch)


@njit(cache=True, nogil=True, parallel=True)
def e8_ball_unrank(idx: np.ndarray, offsets: np.ndarray, leaders: np.ndarray, nsign_log2: np.ndarray,
                   fact: np.ndarray, out: np.ndarray) -> None:
    """Lattice point (doubled int32 coords) of every index ``0 ≤ idx[j] < offsets[-1]``; out (m, 8)."""
    m = idx.shape[0]
    for c in prange((m + _CHUNK - 1) // _CHUNK):
        scratch = np.zeros((3, 8), dtype=np.int64)
        for j in range(c * _CHUNK, min(m, (c + 1) * _CHUNK)):
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
            _e8_nearest_block(y, u, tmp)
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


# --------------------------------------------------------------------------- bit packing


@njit(cache=True, nogil=True, parallel=True)
def pack_bits_rows(vals: np.ndarray, width: int, out: np.ndarray) -> None:
    """Pack ``width``-bit fields (1 ≤ width ≤ 56), LSB first, into bytes.

    Field b of row r occupies bits ``[b·width, (b+1)·width)`` of the row's little-endian
    bit stream (bit 0 = LSB of byte 0).  Input contract: ``vals`` int64 (n, nb) with
    ``0 ≤ vals < 2^width``; ``out`` uint8 (n, ceil(nb·width/8)), fully overwritten.
    """
    n, nb = vals.shape
    nbytes = out.shape[1]
    mask = (np.uint64(1) << np.uint64(width)) - np.uint64(1)
    for r in prange(n):
        acc = np.uint64(0)
        nacc = 0
        o = 0
        for b in range(nb):
            acc |= (np.uint64(vals[r, b]) & mask) << np.uint64(nacc)
            nacc += width
            while nacc >= 8:
                out[r, o] = np.uint8(acc & np.uint64(255))
                acc >>= np.uint64(8)
                nacc -= 8
                o += 1
        while o < nbytes:
            out[r, o] = np.uint8(acc & np.uint64(255))
            acc >>= np.uint64(8)
            o += 1


@njit(cache=True, nogil=True, parallel=True)
def unpack_bits_rows(codes: np.ndarray, width: int, out: np.ndarray) -> None:
    """Inverse of :func:`pack_bits_rows`: ``codes`` uint8 (n, nbytes) → ``out`` int64 (n, nb)."""
    n, nb = out.shape
    mask = (np.uint64(1) << np.uint64(width)) - np.uint64(1)
    for r in prange(n):
        acc = np.uint64(0)
        nacc = 0
        o = 0
        for b in range(nb):
            while nacc < width:
                acc |= np.uint64(codes[r, o]) << np.uint64(nacc)
                nacc += 8
                o += 1
            out[r, b] = np.int64(acc & mask)
            acc >>= np.uint64(width)
            nacc -= width
