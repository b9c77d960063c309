"""Leech lattice Λ24 ball codes: ranking and unranking of ball points, lattice membership and the
bit-packed code rows (encode side :func:`pack_codes`, decode side :func:`decode_rows`).

Coordinates, coset numbering and the ball tables ``val/cost/par/nval/cbud/F/offs`` are as described in
:mod:`.leech`.  Ball rank = ``offs[κ]`` + lexicographic rank inside the coset (coordinates 0..23, values in
table order); the origin has rank 0.  Counts up to 2^96 are two int64 limbs ``[hi, lo]`` in base 2^48.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

#: Bits per limb of the two-limb integers (ball ranks and counts up to 2^96).
LIMB = 48
BASE = 1 << LIMB
MASK = BASE - 1


# --------------------------------------------------------------------------- two-limb integers
@njit(cache=True, nogil=True, inline="always")
def _less(ah, al, bh, bl):
    return ah < bh or (ah == bh and al < bl)


@njit(cache=True, nogil=True, inline="always")
def _add(ah, al, bh, bl):
    lo = al + bl
    hi = ah + bh
    if lo >= BASE:
        lo -= BASE
        hi += 1
    return hi, lo


@njit(cache=True, nogil=True, inline="always")
def _sub(ah, al, bh, bl):
    lo = al - bl
    hi = ah - bh
    if lo < 0:
        lo += BASE
        hi -= 1
    return hi, lo


# --------------------------------------------------------------------------- ranking
@njit(cache=True, nogil=True)
def codeword_lookup(cw, word):
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


@njit(cache=True, nogil=True)
def rank_point(v, cw, val, cost, par, nval, cbud, F, offs):
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
    u = codeword_lookup(cw, word)
    if u < 0:
        return -1, -1
    kappa = 4096 * m + u
    b = cbud[kappa]
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
    return _add(rh, rl, offs[kappa, 0], offs[kappa, 1])


@njit(cache=True, nogil=True)
def unrank_point(rh, rl, cw, val, cost, par, nval, cbud, F, offs, out):
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
    b = cbud[kappa]
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


@njit(cache=True, nogil=True, parallel=True)
def rank_points(v, cw, val, cost, par, nval, cbud, F, offs, out):
    """Row-parallel :func:`rank_point`: ``v`` int64 (n, 24) → ``out`` int64 (n, 2) limbs (-1 if outside)."""
    for r in prange(v.shape[0]):
        h, lo = rank_point(v[r], cw, val, cost, par, nval, cbud, F, offs)
        out[r, 0] = h
        out[r, 1] = lo


@njit(cache=True, nogil=True, parallel=True)
def unrank_points(ranks, cw, val, cost, par, nval, cbud, F, offs, out):
    """Row-parallel :func:`unrank_point`: ``ranks`` int64 (n, 2) limbs, each < offs[8192] → int64 (n, 24)."""
    for r in prange(ranks.shape[0]):
        unrank_point(ranks[r, 0], ranks[r, 1], cw, val, cost, par, nval, cbud, F, offs, out[r])


@njit(cache=True, nogil=True)
def in_lattice(v, cw):
    """Membership of the int64 point v (24,) in J: v ≡ m (mod 2), ((v − m)/2 mod 2) ∈ G24, Σv ≡ 4m (mod 8)."""
    m = v[0] & 1
    word = 0
    total = 0
    for i in range(24):
        if (v[i] & 1) != m:
            return False
        word |= (((v[i] - m) >> 1) & 1) << i
        total += v[i]
    return codeword_lookup(cw, word) >= 0 and (total - 4 * m) % 8 == 0


@njit(cache=True, nogil=True)
def make_primitive(v, cw):
    """Replace the J point v by the shortest lattice point on its ray (v/k for the largest k with v/k ∈ J).

    Collinear ball points (v and 2v, 3v ...) have the same cosine; the encoder always emits the
    primitive one so that re-encoding a decoded vector reproduces its code.
    """
    g = 0
    for i in range(24):
        a = abs(v[i])
        while a:
            g, a = a, g % a
    tmp = np.empty(24, dtype=np.int64)
    for k in range(g, 1, -1):
        if g % k:
            continue
        for i in range(24):
            tmp[i] = v[i] // k
        if in_lattice(tmp, cw):
            v[:] = tmp
            return


# --------------------------------------------------------------------------- bit packing
@njit(cache=True, nogil=True, inline="always")
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


@njit(cache=True, nogil=True, inline="always")
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


@njit(cache=True, nogil=True, parallel=True)
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


@njit(cache=True, nogil=True, parallel=True)
def decode_rows(codes, byte_off, blocks, nbits, levels, gain_values, scales, size_h, size_l,
                cw, val, cost, par, nval, cbud, F, offs, out, bad):
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
            unrank_point(qh, ql, cw, val, cost, par, nval, cbud, F, offs, v)
            nrm = 0
            for i in range(24):
                nrm += v[i] * v[i]
            f = scales[r] * gain_values[g] / np.sqrt(np.float64(nrm))
            for i in range(24):
                out[r, 24 * j + i] = v[i] * f
