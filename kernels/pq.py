"""Asymmetric distance computation (ADC) scans for product-quantiser codes.

A per-query lookup table ``lut[r, p, c]`` holds the contribution of code value ``c`` at code
position ``p`` (the distance or inner product between the query's p-th sub-vector and the
p-th codebook's entry c).  The score of a database code is the sum of its looked-up entries.
The same scan serves RaBitQ-style binary scoring (one 256-entry table of query partial sums
per code byte, see :func:`vqsearch.kernels.popcount.byte_luts`).

Layouts ("plain", one row per vector, no fast-scan interleaving):

* 8-bit codes: byte ``p`` of a row is the code of sub-quantiser ``p``.
* 4-bit codes: byte ``j`` holds sub-quantiser ``2j`` in its low nibble and ``2j+1`` in its
  high nibble (faiss ``ProductQuantizer`` order); an odd ``m`` leaves the last high nibble unused.

Accumulation is in float32, in position order (the order a numpy reference should use when
it wants to match to the last few ulps).  Each kernel has a parallel variant (over queries, or
row blocks for :func:`pq_assign`) and a ``_serial`` one; callers choose (:mod:`vqsearch.parallel`).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._variants import variant


@njit(cache=True, nogil=True)
def _adc8_query(t: np.ndarray, codes: np.ndarray, out: np.ndarray) -> None:
    m = t.shape[0]
    for i in range(codes.shape[0]):
        s = np.float32(0.0)
        for p in range(m):
            s += t[p, codes[i, p]]
        out[i] = s


@njit(cache=True, nogil=True)
def _adc4_query(t: np.ndarray, codes: np.ndarray, out: np.ndarray) -> None:
    m = t.shape[0]
    half = m // 2
    for i in range(codes.shape[0]):
        s = np.float32(0.0)
        for j in range(half):
            byte = codes[i, j]
            s += t[2 * j, byte & 15]
            s += t[2 * j + 1, byte >> 4]
        if m % 2:
            s += t[m - 1, codes[i, half] & 15]
        out[i] = s


def _adc_scan8(lut: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Sum of 8-bit table look-ups.

    .. math:: S_{r,i} = \\sum_{p<m} \\mathrm{lut}_{r,\\,p,\\,\\mathrm{codes}_{i,p}}

    ``lut``: float32 (nq, m, 256); ``codes``: uint8 (n, w) with ``w >= m`` — only the first
    ``m`` bytes of each row are read, so rows may carry trailing per-vector factors.
    Returns float32 (nq, n).  Parallel over queries.
    """
    out = np.empty((lut.shape[0], codes.shape[0]), dtype=np.float32)
    for r in prange(lut.shape[0]):
        _adc8_query(lut[r], codes, out[r])
    return out


def _adc_scan4(lut: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Sum of 4-bit table look-ups over nibble-packed codes.

    .. math:: S_{r,i} = \\sum_{p<m} \\mathrm{lut}_{r,\\,p,\\,c_{i,p}},\\quad
              c_{i,2j} = \\mathrm{codes}_{i,j} \\,\\&\\, 15,\\; c_{i,2j+1} = \\mathrm{codes}_{i,j} \\gg 4

    ``lut``: float32 (nq, m, 16); ``codes``: uint8 (n, w) with ``w >= ceil(m / 2)``.
    Returns float32 (nq, n), accumulated in position order.  Parallel over queries.
    """
    out = np.empty((lut.shape[0], codes.shape[0]), dtype=np.float32)
    for r in prange(lut.shape[0]):
        _adc4_query(lut[r], codes, out[r])
    return out


adc_scan8 = variant(_adc_scan8, "adc_scan8", parallel=True)
adc_scan8_serial = variant(_adc_scan8, "adc_scan8_serial")
adc_scan4 = variant(_adc_scan4, "adc_scan4", parallel=True)
adc_scan4_serial = variant(_adc_scan4, "adc_scan4_serial")


def adc_scan(lut: np.ndarray, codes: np.ndarray, nbits: int, parallel: bool = False) -> np.ndarray:
    """The 8- or 4-bit scan (``nbits``), its parallel variant when ``parallel``."""
    if nbits == 8:
        return (adc_scan8 if parallel else adc_scan8_serial)(lut, codes)
    return (adc_scan4 if parallel else adc_scan4_serial)(lut, codes)


@njit(cache=True, nogil=True)
def _assign_rows(y, cent_t, cnorm, start, stop, out) -> None:
    m_, dsub, k_ = cent_t.shape
    acc = np.empty(k_, dtype=np.float32)
    minus2 = np.float32(-2.0)
    for i in range(start, stop):
        for p in range(m_):
            for k in range(k_):
                acc[k] = cnorm[p, k]
            for j in range(dsub):
                v = minus2 * y[i, p * dsub + j]
                for k in range(k_):
                    acc[k] += v * cent_t[p, j, k]
            best = 0
            best_v = acc[0]
            for k in range(1, k_):
                if acc[k] < best_v:
                    best_v = acc[k]
                    best = k
            out[i, p] = best


def _pq_assign(y: np.ndarray, cent_t: np.ndarray, cnorm: np.ndarray) -> np.ndarray:
    """Nearest codeword per sub-vector (PQ encoding), exhaustive.

    .. math:: c_{i,p} = \\arg\\min_k \\; \\|C_p[k]\\|^2 - 2\\langle y_{i,p}, C_p[k]\\rangle

    (‖y_{i,p}‖² is the same for every k and dropped; ties go to the lowest k).  ``y``: float32
    (n, M·dsub), sub-vector p = columns [p·dsub, (p+1)·dsub); ``cent_t``: float32 (M, dsub, K)
    — the codebooks transposed so that the inner loop runs over K contiguous values (SIMD);
    ``cnorm``: float32 (M, K).  K ≤ 256.  Returns uint8 (n, M).  Parallel over blocks of rows.

    A kernel rather than numpy's stacked matmul: M small GEMMs each hand work to BLAS threads, whose
    hand-offs on a busy machine cost far more than this loop (``benchmarks/RESULTS.md``, "Kernel design
    measurements").
    """
    n = y.shape[0]
    out = np.empty((n, cent_t.shape[0]), dtype=np.uint8)
    block = 64
    for b in prange((n + block - 1) // block):
        _assign_rows(y, cent_t, cnorm, b * block, min(n, (b + 1) * block), out)
    return out


pq_assign = variant(_pq_assign, "pq_assign", parallel=True)
pq_assign_serial = variant(_pq_assign, "pq_assign_serial")
