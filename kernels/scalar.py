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
Row loops run in parallel.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

_HALF = np.float32(0.5)


@njit(cache=True, inline="always")
def _level(v: np.float32, top: int) -> int:
    k = math.floor(v + _HALF)
    if k < 0:
        return 0
    if k > top:
        return top
    return k


@njit(cache=True, parallel=True)
def sq_encode8(x: np.ndarray, lo: np.ndarray, inv: np.ndarray) -> np.ndarray:
    """uint8 (n, d) levels in [0, 255] (formula in the module docstring)."""
    n, d = x.shape
    out = np.empty((n, d), dtype=np.uint8)
    for i in prange(n):
        for j in range(d):
            out[i, j] = _level((x[i, j] - lo[j]) * inv[j], 255)
    return out


@njit(cache=True, parallel=True)
def sq_decode8(codes: np.ndarray, lo: np.ndarray, step: np.ndarray) -> np.ndarray:
    """float32 (n, d) = codes · step + lo; ``codes`` uint8 (n, w >= d), first d bytes read."""
    n = codes.shape[0]
    d = lo.shape[0]
    out = np.empty((n, d), dtype=np.float32)
    for i in prange(n):
        for j in range(d):
            out[i, j] = np.float32(codes[i, j]) * step[j] + lo[j]
    return out


@njit(cache=True, parallel=True)
def sq_encode4(x: np.ndarray, lo: np.ndarray, inv: np.ndarray) -> np.ndarray:
    """uint8 (n, ceil(d/2)): levels in [0, 15], two per byte (even dimension in the low nibble)."""
    n, d = x.shape
    nb = (d + 1) // 2
    out = np.zeros((n, nb), dtype=np.uint8)
    for i in prange(n):
        for j in range(d):
            k = _level((x[i, j] - lo[j]) * inv[j], 15)
            if j & 1:
                out[i, j >> 1] |= np.uint8(k << 4)
            else:
                out[i, j >> 1] |= np.uint8(k)
    return out


@njit(cache=True, parallel=True)
def sq_decode4(codes: np.ndarray, lo: np.ndarray, step: np.ndarray) -> np.ndarray:
    """float32 (n, d) from nibble-packed codes uint8 (n, w >= ceil(d/2))."""
    n = codes.shape[0]
    d = lo.shape[0]
    out = np.empty((n, d), dtype=np.float32)
    for i in prange(n):
        for j in range(d):
            byte = codes[i, j >> 1]
            k = (byte >> 4) if (j & 1) else (byte & 15)
            out[i, j] = np.float32(k) * step[j] + lo[j]
    return out


@njit(cache=True, parallel=True)
def sq_column_sse(x: np.ndarray, lo: np.ndarray, step: np.ndarray, inv: np.ndarray,
                  levels: int) -> np.ndarray:
    """Per-dimension sum of squared quantisation errors (float64 (d,)) for candidate ranges.

    .. math:: E_j = \\sum_i (x_{ij} - \\hat x_{ij})^2

    One fused pass instead of the five temporaries numpy would allocate; used by the
    clipping search of :class:`vqsearch.quantizers.scalar.ScalarQuantizer`.  Parallel over
    blocks of rows with per-block partial sums (float64, so the order of the final sum barely
    matters).
    """
    n, d = x.shape
    block = 256
    nblk = (n + block - 1) // block
    part = np.zeros((nblk, d), dtype=np.float64)
    top = levels - 1
    for b in prange(nblk):
        for i in range(b * block, min(n, (b + 1) * block)):
            for j in range(d):
                k = _level((x[i, j] - lo[j]) * inv[j], top)
                e = np.float32(k) * step[j] + lo[j] - x[i, j]
                part[b, j] += e * e
    return part.sum(axis=0)
