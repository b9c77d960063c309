"""Fast-scan lookup tables: float tables of inner products, quantised to uint8.

A 4-bit sub-quantiser has 16 centroids, so its table fits one 16-byte SIMD lane.  :func:`quantize_luts`
maps float tables ``lut[q, p, c] = ⟨q_p, C_p[c]⟩`` to uint8 ``lut_u8[q, p, c] = round((lut[q, p, c] −
min_p) / Δ_q)`` with one scale per query ``Δ_q = max_p (max_p − min_p) / L`` and ``L = min(255, 65535 //
M)`` levels, so a row's sum of ``M`` entries fits in uint16 (the kernels accumulate exactly in uint16
lanes).  With ``offset_q = Σ_p min_p`` and the integer sum ``S_{q,i} = Σ_p lut_u8[q, p, c_{i,p}]``,

    Σ_p lut[q, p, c_{i,p}] ≈ offset_q + Δ_q·S_{q,i}   within M·Δ_q / 2.

One scale per query (not per table) keeps every table's sum on one integer scale, which the scans'
integer thresholds need.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange

from .._variants import variant


class QueryTables(NamedTuple):
    """Quantised tables of a query batch and the affine map of their integer sums back to scores."""

    lut_u8: np.ndarray  # uint8 (nq, M + M % 2, 16), C-contiguous; the extra table of odd M is zero
    scale: np.ndarray  # float32 (nq,): Δ_q
    offset: np.ndarray  # float32 (nq,): Σ_p min_p


def max_level(m: int) -> int:
    """Largest table entry for ``m`` sub-quantisers: a row's sum of ``m`` entries must fit in uint16."""
    return min(255, 65535 // max(m, 1))


@njit(cache=True, nogil=True, inline="always")
def _quantize_one(tab, out, mins, top):
    """Quantise one query's float tables (M, 16) into ``out`` (≥ M, 16) uint8 → (scale Δ, offset Σ_p min_p)."""
    m = tab.shape[0]
    width = np.float32(0.0)
    total = 0.0
    for p in range(m):
        lo = tab[p, 0]
        hi = tab[p, 0]
        for c in range(1, 16):
            v = tab[p, c]
            lo = v if v < lo else lo
            hi = v if v > hi else hi
        mins[p] = lo
        width = max(width, hi - lo)
        total += lo
    out[m:] = 0
    if not (width > 0):
        out[:m] = 0
        return np.float32(0.0), np.float32(total)
    inv = np.float32(top) / width  # (max_p - min_p)·inv ≤ top (+ rounding), so no clamp is needed
    half = np.float32(0.5)
    for p in range(m):
        lo = mins[p]
        for c in range(16):
            out[p, c] = np.uint8(np.int32((tab[p, c] - lo) * inv + half))  # round half up
    return width / np.float32(top), np.float32(total)


def _quantize_luts_impl(lut, padded_tables, top):
    nq = lut.shape[0]
    out = np.empty((nq, padded_tables, 16), dtype=np.uint8)
    scale = np.empty(nq, dtype=np.float32)
    offset = np.empty(nq, dtype=np.float32)
    for q in prange(nq):
        mins = np.empty(lut.shape[1], dtype=np.float32)
        scale[q], offset[q] = _quantize_one(lut[q], out[q], mins, top)
    return out, scale, offset


# nnan/nsz let LLVM simplify the min/max selects; no reassociation or contraction, so sums keep their order.
_FLAGS = {"fastmath": {"nnan", "ninf", "nsz"}}
_quantize_luts = variant(_quantize_luts_impl, "_quantize_luts", parallel=True, **_FLAGS)
_quantize_luts_serial = variant(_quantize_luts_impl, "_quantize_luts_serial", **_FLAGS)


def quantize_luts(lut: np.ndarray, parallel: bool = True) -> QueryTables:
    """Float tables (nq, M, 16) → :class:`QueryTables` (lut_u8 (nq, M + M % 2, 16), scale Δ, offset).

    Entries are at most :func:`max_level` so a row's sum fits in uint16; the extra table for odd ``M``
    is zero.  A query whose tables are all constant gets Δ = 0 and all-zero tables.
    """
    lut = np.ascontiguousarray(lut, dtype=np.float32)
    if lut.ndim != 3 or lut.shape[2] != 16:
        raise ValueError(f"lut must be (nq, M, 16), got shape {lut.shape}")
    m = lut.shape[1]
    fn = _quantize_luts if parallel else _quantize_luts_serial
    return QueryTables(*fn(lut, m + (m & 1), max_level(m)))


@njit(cache=True, nogil=True, inline="always")
def _ip_tables(x, cent_t, tab):
    """tab[p, c] = Σ_d x[p·dsub + d]·cent_t[p, d, c], summed in d order (``cent_t``: centroids (M, dsub, 16))."""
    m, dsub, ncent = cent_t.shape
    for p in range(m):
        for c in range(ncent):
            tab[p, c] = np.float32(0.0)
        for d in range(dsub):
            xd = x[p * dsub + d]
            for c in range(ncent):
                tab[p, c] += xd * cent_t[p, d, c]


def _ip_luts_impl(xq, cent_t):
    nq = xq.shape[0]
    m, _, ncent = cent_t.shape
    out = np.empty((nq, m, ncent), dtype=np.float32)
    for q in prange(nq):
        _ip_tables(xq[q], cent_t, out[q])
    return out


_ip_luts = variant(_ip_luts_impl, "_ip_luts", parallel=True)
_ip_luts_serial = variant(_ip_luts_impl, "_ip_luts_serial")


def _check_ip_args(xq, centroids):
    xq = np.ascontiguousarray(xq, dtype=np.float32)
    centroids = np.asarray(centroids, dtype=np.float32)
    m, ncent, dsub = centroids.shape if centroids.ndim == 3 else (0, 0, 0)
    if ncent != 16 or xq.ndim != 2 or xq.shape[1] != m * dsub:
        raise ValueError(f"need centroids (M, 16, dsub) and queries (nq, M·dsub), got {centroids.shape}, {xq.shape}")
    return xq, np.ascontiguousarray(centroids.transpose(0, 2, 1))


def ip_luts(xq: np.ndarray, centroids: np.ndarray, parallel: bool = True) -> np.ndarray:
    """Inner-product tables (nq, M, 16) float32 of queries (nq, M·dsub) against centroids (M, 16, dsub)."""
    xq, cent_t = _check_ip_args(xq, centroids)
    return (_ip_luts if parallel else _ip_luts_serial)(xq, cent_t)


def _ip_luts_u8_impl(xq, cent_t, padded_tables, top):
    nq = xq.shape[0]
    m = cent_t.shape[0]
    out = np.empty((nq, padded_tables, 16), dtype=np.uint8)
    scale = np.empty(nq, dtype=np.float32)
    offset = np.empty(nq, dtype=np.float32)
    for q in prange(nq):
        tab = np.empty((m, 16), dtype=np.float32)
        mins = np.empty(m, dtype=np.float32)
        _ip_tables(xq[q], cent_t, tab)
        scale[q], offset[q] = _quantize_one(tab, out[q], mins, top)
    return out, scale, offset


_ip_luts_u8 = variant(_ip_luts_u8_impl, "_ip_luts_u8", parallel=True, **_FLAGS)
_ip_luts_u8_serial = variant(_ip_luts_u8_impl, "_ip_luts_u8_serial", **_FLAGS)


def ip_luts_u8(xq: np.ndarray, centroids: np.ndarray, parallel: bool = True) -> QueryTables:
    """``quantize_luts(ip_luts(xq, centroids))`` in one pass (no float table array): the per-query search prologue."""
    xq, cent_t = _check_ip_args(xq, centroids)
    m = cent_t.shape[0]
    fn = _ip_luts_u8 if parallel else _ip_luts_u8_serial
    return QueryTables(*fn(xq, cent_t, m + (m & 1), max_level(m)))
