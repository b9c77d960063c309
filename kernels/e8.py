"""E8 lattice kernels: nearest point, the E8P codebook, small-table search and bit packing.

Ball codebooks (ranking, unranking, encode and decode of ball indices) are in :mod:`.e8_ball`.

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

#: Blocks per parallel work item in the block-parallel kernels (amortises scratch buffers).
BLOCKS_PER_TASK = 256

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
def e8_nearest_block(y: np.ndarray, u: np.ndarray, tmp: np.ndarray) -> float:
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
    for c in prange((m + BLOCKS_PER_TASK - 1) // BLOCKS_PER_TASK):
        y = np.empty(8, dtype=np.float64)
        u = np.empty(8, dtype=np.int32)
        tmp = np.empty(8, dtype=np.int32)
        for j in range(c * BLOCKS_PER_TASK, min(m, (c + 1) * BLOCKS_PER_TASK)):
            for i in range(8):
                y[i] = x[j, i]
            e8_nearest_block(y, u, tmp)
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
