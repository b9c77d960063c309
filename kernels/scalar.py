"""Uniform scalar quantisation with a per-dimension offset and step (sq8, sq4).

Level of coordinate ``j`` (L = 256 or 16 levels):

.. math:: k_j = \\min(L-1, \\max(0, \\lfloor (x_j - \\mathrm{lo}_j)\\,\\mathrm{inv}_j + 0.5 \\rfloor)),
          \\qquad \\hat x_j = k_j\\,\\mathrm{step}_j + \\mathrm{lo}_j

with ``inv = 1/step`` (0 for a constant dimension, which then always decodes to ``lo``).  All
arithmetic is float32 in the order written, so a numpy reference that uses float32 operands
(``np.float32(0.5)``) reproduces the codes bit for bit.  Rounding is half-up (``floor(v + ½)``).

4-bit layout: byte ``j`` holds dimension ``2j`` in its low nibble and ``2j+1`` in its high
nibble; for odd ``d`` the last high nibble is 0.

Input contract: ``x`` float32 (n, d) C-contiguous; ``lo``, ``step``, ``inv`` float32 (d,).

These loops are memory-bound, so the ``_serial`` variants serve most calls and the parallel ones
(row blocks) only very large batches; callers choose (:mod:`vqsearch.parallel`).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ._variants import variant

_HALF = np.float32(0.5)


@njit(cache=True, nogil=True, inline="always")
def _level(v: np.float32, top: int) -> int:
    k = math.floor(v + _HALF)
    if k < 0:
        return 0
    if k > top:
        return top
    return k


@njit(cache=True, nogil=True)
def _encode8_rows(x, lo, inv, start, stop, out) -> None:
    for i in range(start, stop):
        for j in range(x.shape[1]):
            out[i, j] = _level((x[i, j] - lo[j]) * inv[j], 255)


@njit(cache=True, nogil=True)
def _encode4_rows(x, lo, inv, start, stop, out) -> None:
    d = x.shape[1]
    for i in range(start, stop):
        for j in range(0, d - 1, 2):
            k0 = _level((x[i, j] - lo[j]) * inv[j], 15)
            k1 = _level((x[i, j + 1] - lo[j + 1]) * inv[j + 1], 15)
            out[i, j >> 1] = k0 | (k1 << 4)
        if d % 2:
            out[i, d >> 1] = _level((x[i, d - 1] - lo[d - 1]) * inv[d - 1], 15)


@njit(cache=True, nogil=True)
def _decode8_rows(codes, lo, step, start, stop, out) -> None:
    for i in range(start, stop):
        for j in range(lo.shape[0]):
            out[i, j] = np.float32(codes[i, j]) * step[j] + lo[j]


@njit(cache=True, nogil=True)
def _decode4_rows(codes, lo, step, start, stop, out) -> None:
    for i in range(start, stop):
        for j in range(lo.shape[0]):
            byte = codes[i, j >> 1]
            k = (byte >> 4) if (j & 1) else (byte & 15)
            out[i, j] = np.float32(k) * step[j] + lo[j]


@njit(cache=True, nogil=True)
def _sse_rows(x, lo, step, inv, top, start, stop, acc) -> None:
    for i in range(start, stop):
        for j in range(x.shape[1]):
            k = _level((x[i, j] - lo[j]) * inv[j], top)
            e = np.float32(k) * step[j] + lo[j] - x[i, j]
            acc[j] += e * e


_BLOCK = 256


def _sq_encode8(x: np.ndarray, lo: np.ndarray, inv: np.ndarray) -> np.ndarray:
    """uint8 (n, d) levels in [0, 255] (formula in the module docstring), over row blocks."""
    n = x.shape[0]
    out = np.empty(x.shape, dtype=np.uint8)
    for b in prange((n + _BLOCK - 1) // _BLOCK):
        _encode8_rows(x, lo, inv, b * _BLOCK, min(n, (b + 1) * _BLOCK), out)
    return out


def _sq_encode4(x: np.ndarray, lo: np.ndarray, inv: np.ndarray) -> np.ndarray:
    """uint8 (n, ceil(d/2)): levels in [0, 15], two per byte (even dimension in the low nibble)."""
    n = x.shape[0]
    out = np.empty((n, (x.shape[1] + 1) // 2), dtype=np.uint8)
    for b in prange((n + _BLOCK - 1) // _BLOCK):
        _encode4_rows(x, lo, inv, b * _BLOCK, min(n, (b + 1) * _BLOCK), out)
    return out


def _sq_decode8(codes: np.ndarray, lo: np.ndarray, step: np.ndarray) -> np.ndarray:
    """float32 (n, d) = codes · step + lo; ``codes`` uint8 (n, w >= d), first d bytes read."""
    n = codes.shape[0]
    out = np.empty((n, lo.shape[0]), dtype=np.float32)
    for b in prange((n + _BLOCK - 1) // _BLOCK):
        _decode8_rows(codes, lo, step, b * _BLOCK, min(n, (b + 1) * _BLOCK), out)
    return out


def _sq_decode4(codes: np.ndarray, lo: np.ndarray, step: np.ndarray) -> np.ndarray:
    """float32 (n, d) from nibble-packed codes uint8 (n, w >= ceil(d/2))."""
    n = codes.shape[0]
    out = np.empty((n, lo.shape[0]), dtype=np.float32)
    for b in prange((n + _BLOCK - 1) // _BLOCK):
        _decode4_rows(codes, lo, step, b * _BLOCK, min(n, (b + 1) * _BLOCK), out)
    return out


# One body each, compiled twice: parallel over row blocks, and serial for small batches.
sq_encode8 = variant(_sq_encode8, "sq_encode8", parallel=True)
sq_encode8_serial = variant(_sq_encode8, "sq_encode8_serial")
sq_encode4 = variant(_sq_encode4, "sq_encode4", parallel=True)
sq_encode4_serial = variant(_sq_encode4, "sq_encode4_serial")
sq_decode8 = variant(_sq_decode8, "sq_decode8", parallel=True)
sq_decode8_serial = variant(_sq_decode8, "sq_decode8_serial")
sq_decode4 = variant(_sq_decode4, "sq_decode4", parallel=True)
sq_decode4_serial = variant(_sq_decode4, "sq_decode4_serial")


@njit(cache=True, nogil=True)
def sq_column_sse(x: np.ndarray, lo: np.ndarray, step: np.ndarray, inv: np.ndarray,
                  levels: int) -> np.ndarray:
    """Per-dimension sum of squared quantisation errors (float64 (d,)) for candidate ranges.

    .. math:: E_j = \\sum_i (x_{ij} - \\hat x_{ij})^2

    One fused pass instead of the five temporaries numpy would allocate; used ~40 times by the
    clipping search of :class:`vqsearch.quantizers.scalar.ScalarQuantizer` on ≤ 8192 rows,
    so it stays serial (see the module docstring).
    """
    acc = np.zeros(x.shape[1], dtype=np.float64)
    _sse_rows(x, lo, step, inv, levels - 1, 0, x.shape[0], acc)
    return acc

