"""Leech lattice Λ24 kernels: nearest point and exact angular search in a ball.

Ranking of ball points, lattice membership and the packed code rows are in :mod:`.leech_codes`.

Coordinates.  Every kernel works in the integer "J" coordinates ``J = √8·Λ24 ⊂ Z^24``
(min norm 32, Λ24 squared norm 2k ↔ J norm 16k).  A J point is

.. math:: x = m\\,\\mathbf 1 + 2c + 4z,\\qquad m \\in \\{0,1\\},\\ c \\in G_{24},\\ z \\in \\mathbb Z^{24},
          \\ \\textstyle\\sum_i z_i \\equiv m \\pmod 2,

so J is the union of 2 × 4096 cosets ``(m, c)``.  A coset is numbered ``κ = 4096·m + u`` with ``u``
the index of ``c`` in the sorted Golay list (:mod:`vqsearch.quantizers.golay`).

Codeword input: ``cw`` int64 (4096,), the ascending codeword integers (bit i = coordinate i),
``golay.codeword_ints()``.

Ball tables (built by :mod:`vqsearch.quantizers.leech`): the "ball" gives every coset κ its
own norm limit ``‖x‖² ≤ 16·M_κ`` (M_κ ∈ {M, M + 1}: a plain ball Λ24(M) plus, for a chosen set of
cosets, shell M + 1).  Each coordinate of type ``t = c_i`` in a coset with ``m`` takes values
``m + 2t + 4z`` with a unit cost ``q = x²/4`` (m = 0, coset budget ``cbud[κ] = 4M_κ``) or
``q = (x² − 1)/8`` (m = 1, ``cbud[κ] = 2M_κ − 3``).
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

from .leech_codes import codeword_lookup, make_primitive

#: Cosine slack of the branch-and-bound pruning, far above float64 rounding of the bounds.
PRUNE_SLACK = 1e-9
#: Index of the lowest set bit of each byte (entry 0 unused).
_LOWBIT = np.array([(b & -b).bit_length() - 1 if b else 0 for b in range(256)], dtype=np.int64)


# --------------------------------------------------------------------------- nearest point
@njit(cache=True, nogil=True)
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


@njit(cache=True, nogil=True)
def _coset_tables(y, m, cost, flip, fround, fdir, D):
    """Byte tables of the coset costs for all codewords; returns (base cost, base parity, parity mask).

    cost(c) = base + D[0, c & 255] + D[1, (c >> 8) & 255] + D[2, c >> 16] (rounding each
    coordinate to its nearest allowed value) and parity(Σz) = p0 ⊕ popcount(c & dmask) mod 2.
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
            i = 8 * k + _LOWBIT[byte]
            D[k, byte] = D[k, byte & (byte - 1)] + cost[1, i] - cost[0, i]
    return base, p0, dmask


@njit(cache=True, nogil=True)
def _repair_tables(flip, R, A0, A1):
    """``R[k, byte]`` = min over the 8 coordinates of byte k of the repair cost flip[bit, i].

    Built from running minima over set bits (A1: of flip[1], A0: of flip[0] on the complement).
    """
    for k in range(3):
        A0[0] = np.inf
        A1[0] = np.inf
        for byte in range(1, 256):
            i = 8 * k + _LOWBIT[byte]
            prev = byte & (byte - 1)
            A0[byte] = min(A0[prev], flip[0, i])
            A1[byte] = min(A1[prev], flip[1, i])
        for byte in range(256):
            R[k, byte] = min(A1[byte], A0[255 ^ byte])


@njit(cache=True, nogil=True, inline="always")
def _parity(w):
    w ^= w >> 16
    w ^= w >> 8
    w ^= w >> 4
    w ^= w >> 2
    w ^= w >> 1
    return w & 1


@njit(cache=True, nogil=True)
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
    A0 = np.empty(256)
    A1 = np.empty(256)
    best = np.inf
    best_m = 0
    best_k = 0
    for m in range(2):
        base, p0, dmask = _coset_tables(y, m, cost, flip, fround, fdir, D)
        _repair_tables(flip, R, A0, A1)
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


@njit(cache=True, nogil=True)
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


@njit(cache=True, nogil=True, parallel=True)
def nearest_points(y, cw, out):
    """Row-parallel :func:`nearest_point`: ``y`` float64 (n, 24) C-contiguous → ``out`` int64 (n, 24)."""
    for r in prange(y.shape[0]):
        nearest_point(y[r], cw, out[r])


# --------------------------------------------------------------------------- angular search
@njit(cache=True, nogil=True)
def _probe_bounds(y, t, nlo, nhi, cw, ub, flag, thr, climit, nlow):
    """Fold the coset distances at the probe ``y = t·x̂`` into the cosine bounds ``ub`` (8192,).

    For coset κ at distance d from the probe, u = max over N ∈ {nlo, nhi} of (t² + N − d²)/(2t√N)
    (see :func:`best_direction`).  Cosets whose bound exceeds ``thr`` get ``flag[κ] = 1``.
    Pruning: the parity-free cost (a lower bound on d, three table look-ups) gives an upper
    bound on u; an unflagged coset whose upper bound is ≤ ``thr`` is skipped (its u cannot
    flag it).  Flagged cosets always get the exact u, so their ``ub`` is the max over all
    probes; ``flag[κ] = 2`` marks a coset already solved exactly (skipped).  A coset whose norm
    limit ``climit[κ]`` (= 16·M_κ, two values: ``nlow`` and above) is below ``nhi`` uses the end
    ``min(nhi, climit)`` (tighter), and none at all if that is below ``nlo``.  Returns the nearest
    coset among those evaluated exactly.
    """
    cost = np.empty((2, 24))
    flip = np.empty((2, 24))
    fround = np.empty((2, 24), dtype=np.int64)
    fdir = np.empty((2, 24), dtype=np.int64)
    D = np.empty((3, 256))
    a_lo = 1.0 / (2 * t * np.sqrt(nlo))
    c_lo = (t * t + nlo) * a_lo
    a_hi = 1.0 / (2 * t * np.sqrt(nhi))
    c_hi = (t * t + nhi) * a_hi
    nb = min(nhi, nlow)  # the group's end for cosets limited to nlow
    live_b = nlo <= nb
    a_hb = 1.0 / (2 * t * np.sqrt(nb))
    c_hb = (t * t + nb) * a_hb
    dmin = np.inf
    kmin = 0
    for m in range(2):
        base, p0, dmask = _coset_tables(y, m, cost, flip, fround, fdir, D)
        for k in range(4096):
            w = cw[k]
            kappa = 4096 * m + k
            f = flag[kappa]
            if f == 2:
                continue
            if climit[kappa] >= nhi:
                ah = a_hi
                ch = c_hi
            elif live_b:
                ah = a_hb
                ch = c_hb
            else:
                continue  # no shell of this group exists in the coset
            dk = base + D[0, w & 255] + D[1, (w >> 8) & 255] + D[2, w >> 16]
            if f == 0 and max(c_lo - dk * a_lo, ch - dk * ah) <= thr:
                continue
            if p0 ^ _parity(w & dmask) != m:
                r = np.inf
                for i in range(24):
                    r = min(r, flip[(w >> i) & 1, i])
                dk += r
            if dk < dmin:
                dmin = dk
                kmin = kappa
            u = max(c_lo - dk * a_lo, ch - dk * ah)
            if u > ub[kappa]:
                ub[kappa] = u
            if u > thr:
                flag[kappa] = 1
    return kmin


@njit(cache=True, nogil=True)
def coset_best_direction(xh, m, w, val, cost, par, nval, bm, layers, out):
    """Max of ⟨xh, x⟩/‖x‖ over the nonzero points x of coset (m, codeword integer w) in the ball.

    Exact DP over coordinates with state (exact cost b, parity π of Σz):

    .. math:: L_{i+1}[π ⊕ p_j, b + q_j] = \\max_j \\left(L_i[π, b] + v_j\\,\\hat x_i\\right)

    over the values v_j (cost q_j, parity p_j) allowed at coordinate i; the final states with
    π = m cover every norm of the ball at once (J norm 4b for m = 0, 8b + 24 for m = 1).  The
    forward pass is branch-free over b (vectorises); the argmax is recovered by backtracking
    through the stored layers (exact float equality, the sums are recomputed identically).
    Writes the argmax point to ``out`` and returns its cosine (−2 if the coset has no nonzero
    point in the ball).  ``bm`` is the coset's budget; ``layers`` float64 (25, 2, B+1) is
    scratch, B ≥ bm.
    """
    for p in range(2):
        for b in range(bm + 1):
            layers[0, p, b] = -np.inf
    layers[0, 0, 0] = 0.0
    for i in range(24):
        t = (w >> i) & 1
        xi = xh[i]
        cur = layers[i]
        nxt = layers[i + 1]
        for p in range(2):
            for b in range(bm + 1):
                nxt[p, b] = -np.inf
        for j in range(nval[m, t]):
            q = cost[m, t, j]
            if q > bm:
                break
            vx = val[m, t, j] * xi
            pj = par[m, t, j]
            for p in range(2):
                src = cur[p]
                dst = nxt[p ^ pj]
                for b in range(bm + 1 - q):
                    dst[b + q] = max(dst[b + q], src[b] + vx)
    best = -2.0
    bbest = -1
    fin = layers[24, m]
    for b in range(bm + 1):
        if fin[b] == -np.inf:
            continue
        norm = 4 * b if m == 0 else 8 * b + 24
        if norm == 0:
            continue
        c = fin[b] / np.sqrt(norm)
        if c > best:
            best = c
            bbest = b
    if bbest < 0:
        return best
    b = bbest
    p = m
    for i in range(23, -1, -1):
        t = (w >> i) & 1
        target = layers[i + 1, p, b]
        for j in range(nval[m, t]):
            q = cost[m, t, j]
            if q > b:
                break
            pp = p ^ par[m, t, j]
            if layers[i, pp, b - q] + val[m, t, j] * xh[i] == target:
                out[i] = val[m, t, j]
                b -= q
                p = pp
                break
    return best


@njit(cache=True, nogil=True)
def _ball_cosine(v, xh, cw, cbud):
    """Cosine of the lattice point v with the unit vector xh if v ≠ 0 lies in its coset's ball, else −2."""
    m = v[0] & 1
    word = 0
    n2 = 0
    dot = 0.0
    for i in range(24):
        word |= (((v[i] - m) >> 1) & 1) << i
        n2 += v[i] * v[i]
        dot += v[i] * xh[i]
    u = codeword_lookup(cw, word)
    if n2 == 0 or u < 0:
        return -2.0
    q = n2 // 4 if m == 0 else (n2 - 24) // 8
    if q > cbud[4096 * m + u]:
        return -2.0
    return dot / np.sqrt(n2)


@njit(cache=True, nogil=True)
def best_direction(x, cw, val, cost, par, nval, cbud, climit, radii, nlo, nhi, out):
    """Exact max-cosine point of the ball ``0 < ‖v‖² ≤ 16M`` (J units) for ``x`` (float64 (24,)).

    Branch and bound over the 8192 cosets.  For a probe radius t and any v of norm N in a
    coset at distance d_t from ``t·x̂``: ‖t x̂ − v‖² ≥ d_t², i.e.

    .. math:: \\cos(x, v) \\le \\frac{t^2 + N - d_t^2}{2 t \\sqrt N},

    which is convex in √N, so over a group of shells N ∈ [nlo, nhi] probed at ``radii[g]`` it is
    bounded by its value at the two ends.  Order of work: seed the best cosine with the nearest
    lattice point to the outermost probe; run the outermost probe, solve its most promising
    coset exactly (:func:`coset_best_direction`), run the other probes against that threshold
    (:func:`_probe_bounds` skips cosets that cannot beat it), then solve the remaining flagged
    cosets in decreasing bound order until the next bound is ≤ the best cosine (+
    ``PRUNE_SLACK``).  Every coset left unsolved has all its bounds ≤ the final best, so the
    result is the exact optimum.  ``cbud`` (int64 (8192,)) are the coset budgets and ``climit``
    (float64 (8192,)) the matching J-norm limits 16·M_κ.  Writes the point (int64 J
    coordinates) to ``out``; returns (cosine, cosets solved).  ``x`` must be nonzero.
    """
    nrm = 0.0
    for i in range(24):
        nrm += x[i] * x[i]
    xh = x / np.sqrt(nrm)
    bmax = 0
    nmax = 0.0
    nlow = np.inf
    for kappa in range(8192):
        bmax = max(bmax, cbud[kappa])
        nmax = max(nmax, climit[kappa])
        nlow = min(nlow, climit[kappa])
    ub = np.full(8192, -np.inf)
    flag = np.zeros(8192, dtype=np.uint8)
    y = np.empty(24)
    cand = np.zeros(24, dtype=np.int64)
    layers = np.empty((25, 2, bmax + 1))
    best = -2.0
    solved = 0
    last = radii.shape[0] - 1
    for g in range(last, -1, -1):  # outermost shells first: the optimum is usually there
        t = radii[g]
        for i in range(24):
            y[i] = xh[i] * t
        if g == last:
            # Seed: the nearest lattice point to x̂ scaled just inside the ball (shrunk until inside).
            ts = np.sqrt(nmax) * 0.95
            for _ in range(8):
                for i in range(24):
                    y[i] = xh[i] * ts
                nearest_point(y, cw, cand)
                c = _ball_cosine(cand, xh, cw, cbud)
                if c > -2.0:
                    best = c
                    out[:] = cand
                    break
                ts *= 0.9
            for i in range(24):
                y[i] = xh[i] * t
        kmin = _probe_bounds(y, t, nlo[g], nhi[g], cw, ub, flag, best + PRUNE_SLACK, climit, nlow)
        _coset_point(y, kmin >> 12, cw[kmin & 4095], cand)  # nearest point among the evaluated cosets
        c = _ball_cosine(cand, xh, cw, cbud)
        if c > best:
            best = c
            out[:] = cand
        if g == last:
            # Solve the most promising coset now: a near-optimal threshold prunes the other probes.
            top = -1
            for kappa in range(8192):
                if flag[kappa] == 1 and (top < 0 or ub[kappa] > ub[top]):
                    top = kappa
            if top >= 0:
                c = coset_best_direction(xh, top >> 12, cw[top & 4095], val, cost, par, nval, cbud[top],
                                         layers, cand)
                solved += 1
                if c > best:
                    best = c
                    out[:] = cand
                # Flagged cosets hold exact bounds: drop those the new best already beats.
                for kappa in range(8192):
                    if flag[kappa] == 1 and ub[kappa] <= best + PRUNE_SLACK:
                        flag[kappa] = 0
                flag[top] = 2
    # flagged cosets carry their exact bound; solve those that may still beat the best
    ncand = 0
    for kappa in range(8192):
        if flag[kappa] == 1 and ub[kappa] > best + PRUNE_SLACK:
            ncand += 1
    idx = np.empty(ncand, dtype=np.int64)
    j = 0
    for kappa in range(8192):
        if flag[kappa] == 1 and ub[kappa] > best + PRUNE_SLACK:
            idx[j] = kappa
            j += 1
    order = np.argsort(-ub[idx])
    for j in range(ncand):
        kappa = idx[order[j]]
        if ub[kappa] <= best + PRUNE_SLACK:
            break
        c = coset_best_direction(xh, kappa >> 12, cw[kappa & 4095], val, cost, par, nval, cbud[kappa],
                                 layers, cand)
        solved += 1
        if c > best:
            best = c
            out[:] = cand
    return best, solved


@njit(cache=True, nogil=True, parallel=True)
def best_directions(x, cw, val, cost, par, nval, cbud, radii, nlo, nhi, out, cos, solved):
    """Block-parallel :func:`best_direction`: ``x`` float64 (n, 24) → points ``out`` int64 (n, 24), cosines.

    Each answer is reduced to the primitive point of its ray (:func:`make_primitive`).  A zero
    row gets the fixed minimal vector (4, 4, 0, ..., 0) (in every ball) and cosine 0.
    """
    climit = np.empty(8192)  # J-norm limit 16·M_κ of each coset (budgets 4M_κ, or 2M_κ − 3 for m = 1)
    for kappa in range(8192):
        climit[kappa] = 4.0 * cbud[kappa] if kappa < 4096 else 8.0 * cbud[kappa] + 24.0
    for r in prange(x.shape[0]):
        nz = False
        for i in range(24):
            if x[r, i] != 0.0:
                nz = True
        if nz:
            c, s = best_direction(x[r], cw, val, cost, par, nval, cbud, climit, radii, nlo, nhi, out[r])
            make_primitive(out[r], cw)
            cos[r] = c
            solved[r] = s
        else:
            for i in range(24):
                out[r, i] = 0
            out[r, 0] = 4
            out[r, 1] = 4
            cos[r] = 0.0
            solved[r] = 0
