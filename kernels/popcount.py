"""Popcount kernels over packed bit arrays: Hamming distance, ternary bitplane dot products,
and the per-byte lookup tables used to score packed bits against a float query.

Bit layout shared with :mod:`vqsearch.quantizers.binary` and :mod:`~.ternary`: bits are packed
with ``np.packbits`` (big bit order: bit 7 of byte 0 is coordinate 0, padding bits are 0), and
the popcount kernels read the packed bytes as ``uint64`` words (rows zero-padded to a multiple
of 8 bytes).  Popcounts of XOR/AND combinations do not depend on the order of bits inside a
word, so the word view needs no bit reversal.

``np.bitwise_count`` is not supported inside ``@njit`` by numba 0.68, so :func:`popcount64`
uses the SWAR formula; LLVM recognises it and emits a single ``popcnt`` on x86-64.

Each kernel comes as a parallel variant (``prange`` over the rows of the first operand, the
query axis) and a ``_serial`` one; callers choose by the amount of work (:mod:`vqsearch.parallel`).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

_M1 = np.uint64(0x5555555555555555)
_M2 = np.uint64(0x3333333333333333)
_M4 = np.uint64(0x0F0F0F0F0F0F0F0F)
_H01 = np.uint64(0x0101010101010101)
_S1 = np.uint64(1)
_S2 = np.uint64(2)
_S4 = np.uint64(4)
_S56 = np.uint64(56)


@njit(cache=True, nogil=True, inline="always")
def popcount64(x: np.uint64) -> np.int64:
    """Number of set bits of a uint64 (SWAR: pairwise, nibble, byte sums, then one multiply).

    All constants are uint64 so numba never promotes the arithmetic to float64.
    """
    x = x - ((x >> _S1) & _M1)
    x = (x & _M2) + ((x >> _S2) & _M2)
    x = (x + (x >> _S4)) & _M4
    return np.int64((x * _H01) >> _S56)


# ------------------------------------------------------------------------ Hamming
@njit(cache=True, nogil=True)
def _hamming_row(a: np.ndarray, b: np.ndarray, i: int, out: np.ndarray) -> None:
    nw = a.shape[1]
    for j in range(b.shape[0]):
        s = 0
        for w in range(nw):
            s += popcount64(a[i, w] ^ b[j, w])
        out[i, j] = s


@njit(cache=True, nogil=True, parallel=True)
def hamming_u64(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise Hamming distances between packed bit rows.

    .. math:: H_{ij} = \\sum_w \\operatorname{popcount}(a_{iw} \\oplus b_{jw})

    ``a``: uint64 (rows of a, w), ``b``: uint64 (rows of b, w), same word count, padding bits zero in both.
    Returns int32 (rows of a, rows of b).  Parallel over rows of ``a``.
    """
    out = np.empty((a.shape[0], b.shape[0]), dtype=np.int32)
    for i in prange(a.shape[0]):
        _hamming_row(a, b, i, out)
    return out


@njit(cache=True, nogil=True)
def hamming_u64_serial(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """:func:`hamming_u64` on one thread."""
    out = np.empty((a.shape[0], b.shape[0]), dtype=np.int32)
    for i in range(a.shape[0]):
        _hamming_row(a, b, i, out)
    return out


# -------------------------------------------------------------------- ternary dot
@njit(cache=True, nogil=True)
def _ternary_row(pos_a, neg_a, pos_b, neg_b, i, out) -> None:
    nw = pos_a.shape[1]
    for j in range(pos_b.shape[0]):
        s = 0
        for w in range(nw):
            same = (pos_a[i, w] & pos_b[j, w]) | (neg_a[i, w] & neg_b[j, w])
            diff = (pos_a[i, w] & neg_b[j, w]) | (neg_a[i, w] & pos_b[j, w])
            s += popcount64(same) - popcount64(diff)
        out[i, j] = s


@njit(cache=True, nogil=True, parallel=True)
def ternary_dot_u64(pos_a: np.ndarray, neg_a: np.ndarray, pos_b: np.ndarray, neg_b: np.ndarray) -> np.ndarray:
    """Pairwise dot products of ternary vectors stored as bitplanes (P = ``pos_*``, the "+1" bits; N = ``neg_*``,
    the "−1" bits).

    .. math:: \\langle a, b\\rangle = |P_a \\wedge P_b| + |N_a \\wedge N_b|
              - |P_a \\wedge N_b| - |N_a \\wedge P_b|

    computed as ``popcount((Pa&Pb) | (Na&Nb)) − popcount((Pa&Nb) | (Na&Pb))``: the two ANDs
    inside each OR are disjoint when P and N of each vector are disjoint (which the callers
    check), so 2 popcounts per word replace 4.  Inputs: uint64 (n, w) planes, equal word counts.
    Returns int32 (rows of a, rows of b), parallel over rows of the first operand.
    """
    out = np.empty((pos_a.shape[0], pos_b.shape[0]), dtype=np.int32)
    for i in prange(pos_a.shape[0]):
        _ternary_row(pos_a, neg_a, pos_b, neg_b, i, out)
    return out


@njit(cache=True, nogil=True)
def ternary_dot_u64_serial(pos_a: np.ndarray, neg_a: np.ndarray, pos_b: np.ndarray,
                           neg_b: np.ndarray) -> np.ndarray:
    """:func:`ternary_dot_u64` on one thread."""
    out = np.empty((pos_a.shape[0], pos_b.shape[0]), dtype=np.int32)
    for i in range(pos_a.shape[0]):
        _ternary_row(pos_a, neg_a, pos_b, neg_b, i, out)
    return out


# ------------------------------------------------------------------- byte tables
@njit(cache=True, nogil=True)
def _byte_luts_row(q: np.ndarray, r: int, out: np.ndarray) -> None:
    dim = q.shape[1]
    for j in range(out.shape[1]):
        t = out[r, j]
        t[0] = np.float32(0.0)
        for b in range(8):  # bit b (LSB = 0) of the byte value is coordinate 8j + 7 - b
            c = 8 * j + 7 - b
            val = q[r, c] if c < dim else np.float32(0.0)
            size = 1 << b
            for v in range(size):
                t[v + size] = t[v] + val


@njit(cache=True, nogil=True, parallel=True)
def byte_luts(q: np.ndarray, nbytes: int) -> np.ndarray:
    """Per-byte partial-sum tables of float queries, for scoring packed bits with table look-ups.

    .. math:: T_{r, j, v} = \\sum_{k=0}^{7} \\mathrm{bit}_{7-k}(v)\\, q_{r, 8j+k}

    i.e. entry ``v`` of table ``j`` is the sum of the query coordinates whose bits are set in
    byte value ``v`` under ``np.packbits`` big bit order.  Coordinates ``8j+k >= q.shape[1]``
    count as 0 (padding).  ``q``: float32 (nq, D); returns float32 (nq, nbytes, 256), built by
    doubling (255 additions per table).  Parallel over queries.
    """
    out = np.empty((q.shape[0], nbytes, 256), dtype=np.float32)
    for r in prange(q.shape[0]):
        _byte_luts_row(q, r, out)
    return out


@njit(cache=True, nogil=True)
def byte_luts_serial(q: np.ndarray, nbytes: int) -> np.ndarray:
    """:func:`byte_luts` on one thread."""
    out = np.empty((q.shape[0], nbytes, 256), dtype=np.float32)
    for r in range(q.shape[0]):
        _byte_luts_row(q, r, out)
    return out
