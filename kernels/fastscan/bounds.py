"""Row terms of fast-scan scores, their bounds, and the integer thresholds derived from them.

Scores (float32, in this order) are ``s = (Δ_q·S + offset_q)·b_i + a_i + bias[q, r]`` for a row ``i`` of
range ``r`` with integer sum ``S`` (:mod:`.luts`).  A block kernel compares its sums with a per-query
integer *threshold* and returns a bit mask, so only rows that may enter the heap are scored in float.
The threshold must never drop a row that could enter, whatever its row terms: for affine scores it is
derived from bounds of ``a`` and ``b`` over the rows being scanned — per 32-row block (:func:`term_bounds`,
computed once per segment) or from the range's own rows — and there is none when some ``b < 0``.

The confidence scan (RaBitQ) adds a half-width ``w_i = width_q·e_i`` around each score and keeps a
top-k heap of lower bounds ``s − w``; a row is then also needed if its upper bound reaches that heap,
so ``e``'s bound widens the threshold (:func:`threshold`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit

from .layout import BLOCK


class RowTerms(NamedTuple):
    """Per-row terms of fast-scan scores, each float32 (n,) or ``None`` (absent).

    ``shift`` (a_i) is added to the score (absent: 0); ``factor`` (b_i) multiplies it (absent: 1); ``error``
    (e_i) is the half-width of row i's confidence interval per unit of the query's width (confidence scan
    only); ``bounds`` are :func:`term_bounds` of these terms, float32 (ceil(n / 32), 4) — when absent the
    scans bound each range from its own rows, which costs a pass over them.
    """

    shift: np.ndarray | None = None
    factor: np.ndarray | None = None
    error: np.ndarray | None = None
    bounds: np.ndarray | None = None

    @classmethod
    def optional(cls, shift: np.ndarray, factor: np.ndarray, error: np.ndarray | None = None,
                 bounds: np.ndarray | None = None) -> RowTerms:
        """Terms from arrays where an empty array means absent (the index layer's convention)."""
        def present(x):
            return None if x is None or x.shape[0] == 0 else x

        return cls(present(shift), present(factor), present(error), bounds)


class RangeBounds(NamedTuple):
    """Bounds of the row terms over the rows being scanned."""

    shift_max: np.float32
    factor_min: np.float32
    factor_max: np.float32
    error_max: np.float32


def term_bounds(terms: RowTerms, n: int) -> np.ndarray:
    """Per 32-row block (max a, min b, max b, max e) of ``terms`` over ``n`` rows → float32 (ceil(n / 32), 4).

    Absent terms count as a = 0, b = 1, e = 0; padding rows of the last block do not count.
    """
    nblocks = (n + BLOCK - 1) // BLOCK
    out = np.empty((nblocks, 4), dtype=np.float32)
    columns = ((terms.shift, -np.inf, np.max, 0.0), (terms.factor, np.inf, np.min, 1.0),
               (terms.factor, -np.inf, np.max, 1.0), (terms.error, -np.inf, np.max, 0.0))
    for col, (values, fill, reduce, absent) in enumerate(columns):
        if values is None:
            out[:, col] = absent
            continue
        if values.shape[0] < n:
            raise ValueError(f"row terms have {values.shape[0]} entries for {n} rows")
        padded = np.full(nblocks * BLOCK, fill, dtype=np.float32)
        padded[:n] = values[:n]
        out[:, col] = reduce(padded.reshape(nblocks, BLOCK), axis=1)
    return out


@njit(cache=True, nogil=True, inline="always")
def range_bounds(terms, start, stop):
    """:class:`RangeBounds` over rows [start, stop): from the per-block ``terms.bounds`` when given (a
    superset of the rows, so still valid), else from the rows themselves.  ``terms`` is the scans' form
    of :class:`RowTerms` (empty arrays for absent terms)."""
    bounds = terms.bounds
    if bounds.shape[0] > 0:
        b0 = start // BLOCK
        amax = bounds[b0, 0]
        bmin = bounds[b0, 1]
        bmax = bounds[b0, 2]
        emax = bounds[b0, 3]
        for b in range(b0 + 1, (stop + BLOCK - 1) // BLOCK):
            amax = max(amax, bounds[b, 0])
            bmin = min(bmin, bounds[b, 1])
            bmax = max(bmax, bounds[b, 2])
            emax = max(emax, bounds[b, 3])
        return RangeBounds(amax, bmin, bmax, emax)
    amax = np.float32(0.0)
    bmin = bmax = np.float32(1.0)
    emax = np.float32(0.0)
    if terms.error.shape[0] > 0:
        emax = terms.error[start]
        for i in range(start + 1, stop):
            emax = max(emax, terms.error[i])
    if terms.shift.shape[0] > 0:
        amax = terms.shift[start]
        for i in range(start + 1, stop):
            amax = max(amax, terms.shift[i])
    if terms.factor.shape[0] > 0:
        bmin = bmax = terms.factor[start]
        for i in range(start + 1, stop):
            bmin = min(bmin, terms.factor[i])
            bmax = max(bmax, terms.factor[i])
    return RangeBounds(amax, bmin, bmax, emax)


@njit(cache=True, nogil=True, inline="always")
def min_sum(root, offset, scale):
    """Smallest integer sum whose score ``Δ·S + offset`` may still beat heap root ``root`` (in [0, 65535]).

    A row with S ≤ (root − offset)/Δ − 1 has score ≤ root even after float32 rounding.
    """
    if not (root > -np.inf) or not (scale > 0):
        return np.int64(0)
    x = math.floor((np.float64(root) - np.float64(offset)) / np.float64(scale)) - 1.0
    if x <= 0.0:
        return np.int64(0)
    if x >= 65535.0:
        return np.int64(65535)
    return np.int64(x)


@njit(cache=True, nogil=True, inline="always")
def min_sum_affine(root, offset, bias, shift_max, factor_min, factor_max, scale):
    """:func:`min_sum` for affine scores ``s = (Δ·S + offset)·b_i + a_i + bias`` over rows with
    ``a_i ≤ shift_max`` and ``0 ≤ factor_min ≤ b_i ≤ factor_max``: a row can beat ``root`` only if
    ``u = Δ·S + offset`` exceeds ``t/factor_max`` (``t = root − bias − shift_max ≥ 0``) or ``t/factor_min``
    (``t < 0``)."""
    if not (root > -np.inf) or not (factor_min >= 0):
        return np.int64(0)
    t = np.float64(root) - np.float64(bias) - np.float64(shift_max)
    if t >= 0.0:
        if not (factor_max > 0):
            return np.int64(65535)
        return min_sum(t / np.float64(factor_max), offset, scale)
    if not (factor_min > 0):
        return np.int64(0)
    return min_sum(t / np.float64(factor_min), offset, scale)


@njit(cache=True, nogil=True, inline="always")
def threshold(root, offset, bias, scale, affine, bounds, confident, width, floor):
    """Integer sum below which a row of the current range cannot matter to a query with heap root ``root``.

    Plain scores: it cannot beat the root.  Affine scores: the same for every row within ``bounds``
    (:class:`RangeBounds`).  Confidence scan (query width ``width``, candidate floor ``floor``): it can
    neither enter the heap of lower bounds (``s − w > root``, so ``s > root``) nor be buffered
    (``s + w ≥ root`` and ``s ≥ floor``).
    """
    if not affine:
        return min_sum(root, offset + bias, scale)
    amax, bmin, bmax, emax = bounds
    heap = min_sum_affine(root, offset, bias, amax, bmin, bmax, scale)
    if not confident:
        return heap
    interval = min_sum_affine(root, offset, bias, amax + width * emax, bmin, bmax, scale)
    buffered = min_sum_affine(floor, offset, bias, amax, bmin, bmax, scale)
    return max(interval, min(buffered, heap))
