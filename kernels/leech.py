"""Leech lattice Λ24 kernels: nearest point, exact angular search in a ball, and ball ranking.

Coordinates.  Every kernel works in the integer "J" coordinates ``J = √8·Λ24 ⊂ Z^24``
(min norm 32, Λ24 squared norm 2k ↔ J norm 16k).  A J point is

.. math:: x = m\\,\\mathbf 1 + 2c + 4z,\\qquad m \\in \\{0,1\\},\\ c \\in G_{24},\\ z \\in \\mathbb Z^{24},
          \\ \\textstyle\\sum_i z_i \\equiv m \\pmod 2,

so J is the union of 2 × 4096 cosets ``(m, c)``.  A coset is numbered ``κ = 4096·m + u`` with ``u``
the index of ``c`` in the sorted Golay list (:mod:`vqsearch.quantizers.golay`).

Codeword input: ``cw`` int64 (4096,), the ascending codeword integers (bit i = coordinate i),
``golay.codeword_ints()``.

Ball tables (built by :mod:`vqsearch.quantizers.leech`): for the ball ``‖x‖² ≤ 16M`` each
coordinate of type ``t = c_i`` in a coset with ``m`` takes values ``m + 2t + 4z`` with a unit cost
``q = x²/4`` (m = 0, budget ``4M``) or ``q = (x² − 1)/8`` (m = 1, budget ``2M − 3``).
``val/cost/par[m, t, j]`` list those values sorted by ``(q, x)`` (``par`` = parity of z) and
``nval[m, t]`` their number.  ``F[m, ℓ, n1, b, π, :]`` counts the assignments of ℓ coordinates,
n1 of type 1, with total cost ≤ b and Σz ≡ π (mod 2).  Big counts (up to 2^96) are stored as
two int64 limbs ``[hi, lo]`` in base 2^48; ``offs[κ, :]`` are the prefix sums of the coset
sizes in coset order.  Ball rank = ``offs[κ]`` + lexicographic rank inside the coset
(coordinates 0..23, values in table order); the origin has rank 0.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

LIMB = 48
BASE = 1 << LIMB
MASK = BASE - 1
#: Cosine slack of the branch-and-bound pruning, far above float64 rounding of the bounds.
PRUNE_SLACK = 1e-9


# --------------------------------------------------------------------------- nearest point
@njit(cache=True)
def _coset_setup(y, m, cost, flip, fround, fdir):
    """Per coordinate i and type b: f = round((y_i − m − 2b)/4), cost 16e², repair cost 16(1 − 2|e|).

    With e = t − f the rounding error, 16e² is the squared distance to the nearest value of
    ``m + 2b + 4Z`` and 16((1 − |e|)² − e²) = 16(1 − 2|e|) the extra cost of the second nearest
    (``fdir`` = direction of that second choice).
    """
    for i in range(24):
        for b in range(2):
            t = (y[i] - m - 2 * b) * 0.25
            f = np.floor(t + 0.5)
            e = t - f
            cost[b, i] = 16.0 * e * e
            flip[b, i] = 16.0 * (1.0 - 2.0 * abs(e))
            fround[b, i] = np.int64(f)
            fdir[b, i] = 1 if e >= 0 else -1


@njit(cache=True)
def _coset_tables(y, m, cost, flip, fround, fdir, D, R):
    """Byte tables for all codewords at once; returns (base cost, base parity, parity-delta mask).

    cost(c) = base + D[0, c & 255] + D[1, (c >> 8) & 255] + D[2, c >> 16];
    parity(c) = p0 ⊕ popcount(c & dmask) mod 2;  repair(c) = min_k R[k, byte_k(c)].
    """
    _coset_setup(y, m, cost, flip, fround, fdir)
    base = 0.0
    p0 = 0
    dmask = 0
    for i in range(24):
        base += cost[0, i]
        p0 ^= fround[0, i] & 1
        dmask |= ((fround[0, i] ^ fround[1, i]) & 1) << i
    for k in range(3):
        D[k, 0] = 0.0
        for byte in range(1, 256):
            j = 0
            while not (byte >> j) & 1:
                j += 1
            i = 8 * k + j
            D[k, byte] = D[k, byte & (byte - 1)] + cost[1, i] - cost[0, i]
        for byte in range(256):
            r = np.inf
            for j in range(8):
                v = flip[(byte >> j) & 1, 8 * k + j]
                if v < r:
                    r = v
            R[k, byte] = r
    return base, p0, dmask


@njit(cache=True, inline="always")
def _parity(w):
    w ^= w >> 16
    w ^= w >> 8
    w ^= w >> 4
    w ^= w >> 2
    w ^= w >> 1
    return w & 1


@njit(cache=True)
def nearest_point(y, cw, out):
    """Nearest point of J to ``y`` (float64 (24,)); writes int64 J coordinates to ``out``, returns ‖y − x‖².

    Exact Golay-coset decoder (quantizers.md §3.3a): in coset (m, c) the closest point rounds
    every coordinate to ``m + 2c_i + 4Z``; when Σz has the wrong parity the single coordinate
    with the smallest extra cost ``16(1 − 2|e_i|)`` is rounded the other way (any other fix
    changes more coordinates and costs more).  All 8192 coset costs come from byte tables
    (:func:`_coset_tables`); parity and repair are evaluated only for codewords that can
    still win.
    """
    cost = np.empty((2, 24))
    flip = np.empty((2, 24))
    fround = np.empty((2, 24), dtype=np.int64)
    fdir = np.empty((2, 24), dtype=np.int64)
    D = np.empty((3, 256))
    R = np.empty((3, 256))
    best = np.inf
    best_m = 0
    best_k = 0
    for m in range(2):
        base, p0, dmask = _coset_tables(y, m, cost, flip, fround, fdir, D, R)
        for k in range(4096):
            w = cw[k]
            b0 = w & 255
            b1 = (w >> 8) & 255
            b2 = w >> 16
            c = base + D[0, b0] + D[1, b1] + D[2, b2]
            if c >= best:
                continue
            if p0 ^ _parity(w & dmask) != m:
                c += min(R[0, b0], min(R[1, b1], R[2, b2]))
                if c >= best:
                    continue
            best = c
            best_m = m
            best_k = k
    _coset_point(y, best_m, cw[best_k], out)
    d = 0.0
    for i in range(24):
        e = y[i] - out[i]
        d += e * e
    return d


@njit(cache=True)
def _coset_point(y, m, w, out):
    """Closest point to ``y`` in coset (m, codeword integer w), with the cheapest parity repair."""
    cost = np.empty((2, 24))
    flip = np.empty((2, 24))
    fround = np.empty((2, 24), dtype=np.int64)
    fdir = np.empty((2, 24), dtype=np.int64)
    _coset_setup(y, m, cost, flip, fround, fdir)
    par = 0
    jmin = 0
    fmin = np.inf
    for i in range(24):
        bit = (w >> i) & 1
        par ^= fround[bit, i] & 1
        if flip[bit, i] < fmin:
            fmin = flip[bit, i]
            jmin = i
        out[i] = m + 2 * bit + 4 * fround[bit, i]
    if par != m:
        out[jmin] += 4 * fdir[(w >> jmin) & 1, jmin]


@njit(cache=True, parallel=True)
def nearest_points(y, cw, out):
    """Row-parallel :func:`nearest_point`: ``y`` float64 (n, 24) C-contiguous → ``out`` int64 (n, 24)."""
    for r in prange(y.shape[0]):
        nearest_point(y[r], cw, out[r])


@njit(cache=True)
def coset_distances(y, cw, out):
    """``out[m, k]`` = min over the coset (m, codeword k) of ‖y − x‖² (float64 (2, 4096)); exact."""
    cost = np.empty((2, 24))
    flip = np.empty((2, 24))
    fround = np.empty((2, 24), dtype=np.int64)
    fdir = np.empty((2, 24), dtype=np.int64)
    D = np.empty((3, 256))
    R = np.empty((3, 256))
    for m in range(2):
        base, p0, dmask = _coset_tables(y, m, cost, flip, fround, fdir, D, R)
        for k in range(4096):
            w = cw[k]
            b0 = w & 255
            b1 = (w >> 8) & 255
            b2 = w >> 16
            # Branch-free: the parity is a coin flip per codeword, a branch would mispredict.
            wrong = p0 ^ _parity(w & dmask) ^ m
            out[m, k] = base + D[0, b0] + D[1, b1] + D[2, b2] + wrong * min(R[0, b0], min(R[1, b1], R[2, b2]))


# --------------------------------------------------------------------------- angular search
@njit(cache=True)
def _probe_bounds(y, t, nlo, nhi, cw, ub):
    """Coset distances d at the probe ``y = t·x̂`` folded into the cosine bounds ``ub`` (8192,).

    Same arithmetic as :func:`coset_distances`, fused with the bound update of
    :func:`best_direction` (the 8192 distances never round-trip through memory).  Returns the
    coset number of the nearest coset.
    """
    cost = np.empty((2, 24))
    flip = np.empty((2, 24))
    fround = np.empty((2, 24), dtype=np.int64)
    fdir = np.empty((2, 24), dtype=np.int64)
    D = np.empty((3, 256))
    R = np.empty((3, 256))
    a_lo = 1.0 / (2 * t * np.sqrt(nlo))
    a_hi = 1.0 / (2 * t * np.sqrt(nhi))
    c_lo = (t * t + nlo) * a_lo
    c_hi = (t * t + nhi) * a_hi
    dmin = np.inf
    kmin = 0
    for m in range(2):
        base, p0, dmask = _coset_tables(y, m, cost, flip, fround, fdir, D, R)
        for k in range(4096):
            w = cw[k]
            b0 = w & 255
            b1 = (w >> 8) & 255
            b2 = w >> 16
            wrong = p0 ^ _parity(w & dmask) ^ m
            dk = base + D[0, b0] + D[1, b1] + D[2, b2] + wrong * min(R[0, b0], min(R[1, b1], R[2, b2]))
            kappa = 4096 * m + k
            if dk < dmin:
                dmin = dk
                kmin = kappa
            u = max(c_lo - dk * a_lo, c_hi - dk * a_hi)
            if u > ub[kappa]:
                ub[kappa] = u
    return kmin


@njit(cache=True)
def coset_best_direction(xh, m, w, val, cost, par, nval, budget, dp, nd, arg, out):
    """Max of ⟨xh, x⟩/‖x‖ over the nonzero points x of coset (m, codeword integer w) in the ball.

    Exact DP over coordinates with state (exact cost b, parity of Σz): ``dp[b, π]`` = best
    partial dot product; the final states with π = m cover every norm of the ball at once
    (J norm 4b for m = 0, 8b + 24 for m = 1).  Writes the argmax point to ``out`` and returns
    its cosine (−2 if the coset has no nonzero point in the ball).  ``dp``/``nd`` float64
    (B+1, 2) and ``arg`` int64 (24, B+1, 2) are scratch, B ≥ budget[m].
    """
    bm = budget[m]
    for b in range(bm + 1):
        dp[b, 0] = -np.inf
        dp[b, 1] = -np.inf
    dp[0, 0] = 0.0
    for i in range(24):
        t = (w >> i) & 1
        for b in range(bm + 1):
            nd[b, 0] = -np.inf
            nd[b, 1] = -np.inf
        xi = xh[i]
        for b in range(bm + 1):
            for p in range(2):
                cur = dp[b, p]
                if cur == -np.inf:
                    continue
                for j in range(nval[m, t]):
                    nb = b + cost[m, t, j]
                    if nb > bm:
                        break
                    q = p ^ par[m, t, j]
                    v = cur + val[m, t, j] * xi
                    if v > nd[nb, q]:
                        nd[nb, q] = v
                        arg[i, nb, q] = j
        for b in range(bm + 1):
            dp[b, 0] = nd[b, 0]
            dp[b, 1] = nd[b, 1]
    best = -2.0
    bbest = -1
    for b in range(bm + 1):
        if dp[b, m] == -np.inf:
            continue
        norm = 4 * b if m == 0 else 8 * b + 24
        if norm == 0:
            continue
        c = dp[b, m] / np.sqrt(norm)
        if c > best:
            best = c
            bbest = b
    if bbest < 0:
        return best
    b = bbest
    p = m
    for i in range(23, -1, -1):
        t = (w >> i) & 1
        j = arg[i, b, p]
        out[i] = val[m, t, j]
        b -= cost[m, t, j]
        p ^= par[m, t, j]
    return best


@njit(cache=True)
def best_direction(x, cw, val, cost, par, nval, budget, radii, nlo, nhi, out):
    """Exact max-cosine point of the ball ``0 < ‖v‖² ≤ 16M`` (J units) for ``x`` (float64 (24,)).

    Branch and bound over the 8192 cosets.  For a probe radius t and any v of norm N in a
    coset at distance d_t from ``t·x̂``: ‖t x̂ − v‖² ≥ d_t², i.e.

    .. math:: \\cos(x, v) \\le \\frac{t^2 + N - d_t^2}{2 t \\sqrt N},

    which is convex in √N, so over a group of shells N ∈ [nlo, nhi] probed at ``radii[g]`` it is
    bounded by its value at the two ends.  The nearest lattice point to each probe (a free
    by-product) seeds the best cosine; the cosets whose bound exceeds it are then solved exactly
    (:func:`coset_best_direction`) in decreasing bound order until the next bound is ≤ the best
    cosine found (+ ``PRUNE_SLACK``): the result is the exact optimum.  Writes the point (int64
    J coordinates) to ``out``; returns (cosine, cosets solved).  ``x`` must be nonzero.
    """
    nrm = 0.0
    for i in range(24):
        nrm += x[i] * x[i]
    xh = x / np.sqrt(nrm)
    nmax = budget[1] * 8 + 24  # J-norm limit 16M (the m = 1 budget is 2M − 3)
    ub = np.full(8192, -np.inf)
    y = np.empty(24)
    cand = np.zeros(24, dtype=np.int64)
    best = -2.0
    for g in range(radii.shape[0]):
        t = radii[g]
        for i in range(24):
            y[i] = xh[i] * t
        kmin = _probe_bounds(y, t, nlo[g], nhi[g], cw, ub)
        _coset_point(y, kmin >> 12, cw[kmin & 4095], cand)  # nearest lattice point to the probe
        n2 = 0
        dot = 0.0
        for i in range(24):
            n2 += cand[i] * cand[i]
            dot += cand[i] * xh[i]
        if 0 < n2 <= nmax and dot / np.sqrt(n2) > best:
            best = dot / np.sqrt(n2)
            out[:] = cand
    # cosets that may beat the seed, in decreasing bound order
    ncand = 0
    for kappa in range(8192):
        if ub[kappa] > best + PRUNE_SLACK:
            ncand += 1
    idx = np.empty(ncand, dtype=np.int64)
    j = 0
    for kappa in range(8192):
        if ub[kappa] > best + PRUNE_SLACK:
            idx[j] = kappa
            j += 1
    order = np.argsort(-ub[idx])
    bmax = max(budget[0], budget[1])
    dp = np.empty((bmax + 1, 2))
    nd = np.empty((bmax + 1, 2))
    arg = np.empty((24, bmax + 1, 2), dtype=np.int64)
    solved = 0
    for j in range(ncand):
        kappa = idx[order[j]]
        if ub[kappa] <= best + PRUNE_SLACK:
            break
        c = coset_best_direction(xh, kappa >> 12, cw[kappa & 4095], val, cost, par, nval, budget,
                                 dp, nd, arg, cand)
        solved += 1
        if c > best:
            best = c
            out[:] = cand
    return best, solved


# --------------------------------------------------------------------------- two-limb integers
@njit(cache=True, inline="always")
def _less(ah, al, bh, bl):
    return ah < bh or (ah == bh and al < bl)


@njit(cache=True, inline="always")
def _add(ah, al, bh, bl):
    lo = al + bl
    hi = ah + bh
    if lo >= BASE:
        lo -= BASE
        hi += 1
    return hi, lo


@njit(cache=True, inline="always")
def _sub(ah, al, bh, bl):
    lo = al - bl
    hi = ah - bh
    if lo < 0:
        lo += BASE
        hi -= 1
    return hi, lo


# --------------------------------------------------------------------------- ranking
@njit(cache=True)
def _codeword_lookup(cw, word):
    lo = 0
    hi = cw.shape[0] - 1
    while lo <= hi:
        mid = (lo + hi) >> 1
        w = cw[mid]
        if w == word:
            return mid
        if w < word:
            lo = mid + 1
        else:
            hi = mid - 1
    return -1


@njit(cache=True)
def rank_point(v, cw, val, cost, par, nval, budget, F, offs):
    """Ball rank of the J point ``v`` (int64 (24,)) as limbs (hi, lo); (-1, -1) if v is not in the ball."""
    m = v[0] & 1
    word = 0
    n1 = 0
    for i in range(24):
        if (v[i] & 1) != m:
            return -1, -1
        t = ((v[i] - m) >> 1) & 1
        word |= t << i
        n1 += t
    u = _codeword_lookup(cw, word)
    if u < 0:
        return -1, -1
    b = budget[m]
    p = m
    rh = 0
    rl = 0
    for i in range(24):
        t = (word >> i) & 1
        n1 -= t
        ell = 23 - i
        found = -1
        for j in range(nval[m, t]):
            if val[m, t, j] == v[i]:
                found = j
                break
            q = cost[m, t, j]
            if q > b:
                break
            pp = p ^ par[m, t, j]
            rh, rl = _add(rh, rl, F[m, ell, n1, b - q, pp, 0], F[m, ell, n1, b - q, pp, 1])
        if found < 0 or cost[m, t, found] > b:
            return -1, -1
        b -= cost[m, t, found]
        p ^= par[m, t, found]
    if p != 0:
        return -1, -1
    kappa = 4096 * m + u
    return _add(rh, rl, offs[kappa, 0], offs[kappa, 1])


@njit(cache=True)
def unrank_point(rh, rl, cw, val, cost, par, nval, budget, F, offs, out):
    """Inverse of :func:`rank_point` for 0 ≤ rank < offs[8192]; writes int64 J coordinates to ``out``."""
    lo = 0
    hi = 8191
    while lo < hi:  # largest kappa with offs[kappa] <= rank
        mid = (lo + hi + 1) >> 1
        if _less(rh, rl, offs[mid, 0], offs[mid, 1]):
            hi = mid - 1
        else:
            lo = mid
    kappa = lo
    rh, rl = _sub(rh, rl, offs[kappa, 0], offs[kappa, 1])
    m = kappa >> 12
    w = cw[kappa & 4095]
    n1 = 0
    for i in range(24):
        n1 += (w >> i) & 1
    b = budget[m]
    p = m
    for i in range(24):
        t = (w >> i) & 1
        n1 -= t
        ell = 23 - i
        for j in range(nval[m, t]):
            q = cost[m, t, j]
            if q > b:  # unreachable for a valid rank; guards the table index
                break
            pp = p ^ par[m, t, j]
            ch = F[m, ell, n1, b - q, pp, 0]
            cl = F[m, ell, n1, b - q, pp, 1]
            if _less(rh, rl, ch, cl):
                out[i] = val[m, t, j]
                b -= q
                p = pp
                break
            rh, rl = _sub(rh, rl, ch, cl)


@njit(cache=True, parallel=True)
def rank_points(v, cw, val, cost, par, nval, budget, F, offs, out):
    """Row-parallel :func:`rank_point`: ``v`` int64 (n, 24) → ``out`` int64 (n, 2) limbs (-1 if outside)."""
    for r in prange(v.shape[0]):
        h, lo = rank_point(v[r], cw, val, cost, par, nval, budget, F, offs)
        out[r, 0] = h
        out[r, 1] = lo


@njit(cache=True, parallel=True)
def unrank_points(ranks, cw, val, cost, par, nval, budget, F, offs, out):
    """Row-parallel :func:`unrank_point`: ``ranks`` int64 (n, 2) limbs, each < offs[8192] → int64 (n, 24)."""
    for r in prange(ranks.shape[0]):
        unrank_point(ranks[r, 0], ranks[r, 1], cw, val, cost, par, nval, budget, F, offs, out[r])


@njit(cache=True, parallel=True)
def best_directions(x, cw, val, cost, par, nval, budget, radii, nlo, nhi, out, cos, solved):
    """Block-parallel :func:`best_direction`: ``x`` float64 (n, 24) → points ``out`` int64 (n, 24), cosines.

    A zero row gets the fixed minimal vector (4, 4, 0, ..., 0) (in every ball) and cosine 0.
    """
    for r in prange(x.shape[0]):
        nz = False
        for i in range(24):
            if x[r, i] != 0.0:
                nz = True
        if nz:
            c, s = best_direction(x[r], cw, val, cost, par, nval, budget, radii, nlo, nhi, out[r])
            cos[r] = c
            solved[r] = s
        else:
            for i in range(24):
                out[r, i] = 0
            out[r, 0] = 4
            out[r, 1] = 4
            cos[r] = 0.0
            solved[r] = 0


# --------------------------------------------------------------------------- bit packing
@njit(cache=True, inline="always")
def _write_bits(row, bitpos, value, nbits):
    """OR the low ``nbits`` (≤ 48) of ``value`` into ``row`` (uint8) at ``bitpos``, LSB first."""
    while nbits > 0:
        byte = bitpos >> 3
        sh = bitpos & 7
        take = min(8 - sh, nbits)
        row[byte] |= np.uint8((value & ((1 << take) - 1)) << sh)
        value >>= take
        bitpos += take
        nbits -= take


@njit(cache=True, inline="always")
def _read_bits(row, bitpos, nbits):
    value = 0
    got = 0
    while got < nbits:
        byte = bitpos >> 3
        sh = bitpos & 7
        take = min(8 - sh, nbits - got)
        value |= ((np.int64(row[byte]) >> sh) & ((1 << take) - 1)) << got
        bitpos += take
        got += take
    return value


@njit(cache=True, parallel=True)
def pack_codes(ranks, gains, levels, nbits, blocks, byte_off, codes):
    """Write block codes ``(rank − 1)·levels + gain`` (``nbits`` each, LSB-first) into ``codes`` rows.

    ``ranks`` int64 (n·blocks, 2) ball ranks ≥ 1 (limbs), ``gains`` int64 (n·blocks,) in
    [0, levels); ``codes`` uint8 (n, code_size) zero-initialised, bitstream from ``byte_off``.
    ``levels`` ≤ 4096 keeps every limb product below 2^61.
    """
    lo_bits = min(nbits, LIMB)
    hi_bits = nbits - lo_bits
    for r in prange(codes.shape[0]):
        row = codes[r]
        for j in range(blocks):
            q = r * blocks + j
            h, lo = _sub(ranks[q, 0], ranks[q, 1], 0, 1)
            lo = lo * levels + gains[q]
            h = h * levels + (lo >> LIMB)
            lo &= MASK
            pos = 8 * byte_off + j * nbits
            _write_bits(row, pos, lo, lo_bits)
            if hi_bits > 0:
                _write_bits(row, pos + LIMB, h, hi_bits)


@njit(cache=True, parallel=True)
def decode_rows(codes, byte_off, blocks, nbits, levels, gain_values, scales, size_h, size_l,
                cw, val, cost, par, nval, budget, F, offs, out, bad):
    """Decode packed block codes into float32 vectors ``out`` (n, 24·blocks).

    Block code c → gain g = c mod L, shape s = c div L (must be < the shape count
    ``size`` = |ball| − 1, given as limbs), point v = unrank(s + 1) and
    ``x̂ = scales[r] · gain_values[g] · v / ‖v‖``.  Rows with an out-of-range shape index are
    set to zero and flagged in ``bad`` (uint8 (n,)).
    """
    lo_bits = min(nbits, LIMB)
    hi_bits = nbits - lo_bits
    for r in prange(codes.shape[0]):
        row = codes[r]
        v = np.empty(24, dtype=np.int64)
        for j in range(blocks):
            pos = 8 * byte_off + j * nbits
            lo = _read_bits(row, pos, lo_bits)
            h = _read_bits(row, pos + LIMB, hi_bits) if hi_bits > 0 else 0
            qh = h // levels
            t = ((h - qh * levels) << LIMB) | lo
            ql = t // levels
            g = t - ql * levels
            if not _less(qh, ql, size_h, size_l):
                bad[r] = 1
                for i in range(24):
                    out[r, 24 * j + i] = 0.0
                continue
            qh, ql = _add(qh, ql, 0, 1)
            unrank_point(qh, ql, cw, val, cost, par, nval, budget, F, offs, v)
            nrm = 0
            for i in range(24):
                nrm += v[i] * v[i]
            f = scales[r] * gain_values[g] / np.sqrt(np.float64(nrm))
            for i in range(24):
                out[r, 24 * j + i] = v[i] * f
