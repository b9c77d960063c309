"""Uniform scalar quantisers with a per-dimension offset and step: ``sq8`` and ``sq4``.

Each work dimension j gets its own clip range [lo_j, hi_j] and ``L = 2^bits`` evenly spaced
reconstruction levels ``lo_j + k·step_j`` (k = 0 … L−1, ``step_j = (hi_j − lo_j)/(L − 1)``);
values outside the range clip to the end levels.  Codes are the levels k, one byte per
dimension (sq8) or two per byte (sq4: dimension 2j in the low nibble, 2j+1 in the high
nibble, last high nibble 0 for odd d).  Only the per-dimension ``lo``/``step`` vectors are
stored (in the quantiser state), so ``bits_per_dim`` is exactly 8 or 4.

Clip range (``clip``):

* ``"mse"`` (default): per dimension, the range is ``[Q(p), Q(1 − p)]`` (quantiles of the
  training data, extended beyond the sample by an exponential tail model) with the tail mass
  ``p`` chosen to minimise the expected MSE (empirical MSE + the expected error of unseen
  tails) — a 25-point log grid over p, then golden-section refinement, vectorised over
  dimensions.  Min–max ranges waste levels on rare extremes (sq4) or are too narrow for the
  unseen tails (sq8).  Measured on N(0,1), 4096 training rows: sq4 0.0117 (min–max 0.020; the
  best uniform 16-level quantiser has 0.01154), sq8 9.3e-5 (min–max 1.2e-4; optimum 8.77e-5).
* ``"minmax"``: the training minimum and maximum (no clipping on the training data).

Round trip: decoding gives level points, and re-encoding a level point returns the same level
(float32 error ≪ step/2), so ``decode∘encode`` is idempotent on decoded points whenever the
work transform is invertible on them (``rht=False``, or ``rht=True`` with a dimension that is a
Hadamard order such as 384, 768 or 1024 — otherwise the RHT padding projects the point).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np

from .. import parallel
from ..kernels.scalar import (
    sq_column_sse,
    sq_decode4,
    sq_decode4_serial,
    sq_decode8,
    sq_decode8_serial,
    sq_encode4,
    sq_encode4_serial,
    sq_encode8,
    sq_encode8_serial,
)
from .base import Quantizer, check_choice
from .registry import register

ClipLike = Literal["mse", "minmax"]

#: Rows of the training set used for the clipping search (a seeded subsample beyond this).
CLIP_SAMPLE = 8192
_GRID_POINTS = 25
_GOLDEN_ITERS = 14
_INV_PHI = (np.sqrt(5.0) - 1.0) / 2.0


def _mean_excess(pool: np.ndarray, u: np.ndarray, min_count: int = 16) -> np.ndarray:
    """Mean excess E[Z − u | Z > u] of the sorted sample ``pool`` at thresholds ``u``.

    Thresholds beyond the ``min_count``-th largest value use that value instead (conservative:
    light tails have a decreasing mean excess).
    """
    csum = np.concatenate([[0.0], np.cumsum(pool[::-1])])  # csum[c] = sum of the c largest
    u = np.minimum(u, pool[-min_count])
    cnt = len(pool) - np.searchsorted(pool, u, side="right")
    return csum[cnt] / np.maximum(cnt, 1) - u


def _tail_scales(srt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension exponential tail scales (β_lo, β_hi) beyond the sample extremes.

    Columns of the column-sorted sample ``srt`` are standardised (median, std) and their top and
    bottom 5 % pooled over dimensions; β_j = std_j · mean-excess(pooled, standardised extreme_j).
    """
    n, d = srt.shape
    med = srt[n // 2]
    std = srt.std(axis=0)
    s = np.where(std > 0, std, 1.0)
    tail_rows = min(n, max(16, n // 20))
    up = np.sort(((srt[n - tail_rows:] - med) / s).ravel())
    down = np.sort(((med - srt[:tail_rows]) / s).ravel())
    if len(up) < 16:
        return np.full(d, 1e-12), np.full(d, 1e-12)
    beta_hi = s * _mean_excess(up, (srt[-1] - med) / s)
    beta_lo = s * _mean_excess(down, (med - srt[0]) / s)
    tiny = 1e-12
    beta_lo = np.maximum(np.where(std > 0, beta_lo, tiny), tiny)
    return beta_lo, np.maximum(np.where(std > 0, beta_hi, tiny), tiny)


class ScalarQuantizer(Quantizer):
    """Per-dimension uniform scalar quantiser; subclasses fix ``bits`` (8 or 4).

    Parameters
    ----------
    rht : bool, default False
        Randomized Hadamard transform before quantising.  Off by default: the per-dimension
        ranges already adapt to unequal variances, and on MiniLM embeddings the RHT changed the
        error by < 1 % (sq4 relative error 0.01013 without, 0.01011 with) while costing a
        transform per encode and decode.  Turn it on for heavy-tailed or outlier coordinates.
    seed : int, default 0
        Seed of the RHT signs and of the training subsample.
    clip : {"mse", "minmax"}, default "mse"
        How the per-dimension range is fitted (see the module docstring).  "mse" costs about
        40 fused passes over ≤ 8192 training rows.
    """

    bits: ClassVar[int] = 8
    data_free = False
    min_train = 1

    def __init__(self, *, rht: bool = False, seed: int = 0, clip: ClipLike = "mse") -> None:
        super().__init__(rht=rht, seed=seed)
        self.clip = check_choice("clip", clip, ("mse", "minmax"))
        self._lo: np.ndarray | None = None
        self._step: np.ndarray | None = None
        self._inv: np.ndarray | None = None

    @property
    def levels(self) -> int:
        return 1 << self.bits

    # --------------------------------------------------------------- fitting
    def _set_range(self, lo: np.ndarray, hi: np.ndarray) -> None:
        lo = np.asarray(lo, dtype=np.float32)
        step = np.maximum((np.asarray(hi, dtype=np.float32) - lo) / np.float32(self.levels - 1),
                          np.float32(0.0))
        self._set_state(lo, step)

    def _set_state(self, lo: np.ndarray, step: np.ndarray) -> None:
        self._lo = np.ascontiguousarray(lo, dtype=np.float32)
        self._step = np.ascontiguousarray(step, dtype=np.float32)
        # A constant dimension (step 0) always encodes to level 0 and decodes to lo.
        with np.errstate(divide="ignore"):
            inv = np.where(self._step > 0, np.float32(1.0) / self._step, np.float32(0.0))
        self._inv = inv.astype(np.float32)

    def _fit(self, xw: np.ndarray) -> None:
        if self.clip == "minmax" or xw.shape[0] < 2:
            self._set_range(xw.min(axis=0), xw.max(axis=0))
            return
        if xw.shape[0] > CLIP_SAMPLE:
            rows = np.random.default_rng(self.seed).choice(xw.shape[0], CLIP_SAMPLE, replace=False)
            xw = np.ascontiguousarray(xw[np.sort(rows)])
        self._fit_mse_clip(xw)

    def _fit_mse_clip(self, xs: np.ndarray) -> None:
        """Choose per-dimension tail mass p minimising the expected MSE (grid + golden section).

        The objective is the empirical MSE of the sample plus the expected error of the unseen
        tails: each side carries mass 1/(n+1) beyond the sample extreme, modelled as the extreme
        plus an exponential excess whose scale β is the mean excess beyond that extreme.  β is
        read off the mean-excess function of the standardised samples pooled over all
        dimensions (a per-dimension estimate from a few order statistics is too noisy to place
        8-bit ranges).  Without the tail term the empirical MSE never rewards a range wider than
        the sample, and 8-bit ranges overfit it (N(0,1), 4096 samples: 1.2e-4 instead of 9e-5).
        The same model extends the quantile function beyond the sample (p < ½/n), so ranges
        wider than min–max are candidates too.
        """
        n, d = xs.shape
        srt = np.sort(xs, axis=0).astype(np.float64)
        cols = np.arange(d)
        xmin, xmax = srt[0], srt[-1]
        beta_lo, beta_hi = _tail_scales(srt)
        p_edge = 0.5 / n  # Hazen position of the sample extreme

        def quantile(p: np.ndarray, upper: bool) -> np.ndarray:
            pos = np.clip(p * n - 0.5, 0.0, n - 1.0)
            if upper:
                pos = (n - 1.0) - pos
            i0 = np.minimum(np.floor(pos).astype(np.int64), n - 2)
            frac = pos - i0
            q = srt[i0, cols] * (1 - frac) + srt[i0 + 1, cols] * frac
            ext = np.log(p_edge / np.minimum(p, p_edge))  # ≥ 0, > 0 only beyond the sample
            return q + ext * beta_hi if upper else q - ext * beta_lo

        def tail(gap: np.ndarray, beta: np.ndarray) -> np.ndarray:
            # E[(excess beyond the end level)^2] for extreme + Exp(β), end level at extreme + gap.
            inside = gap**2 - 2 * beta * gap + 2 * beta**2
            return np.where(gap >= 0, 2 * beta**2 * np.exp(-np.maximum(gap, 0) / beta), inside)

        def cost(t: np.ndarray) -> np.ndarray:  # t = log10 p, per dimension
            p = 10.0**t
            self._set_range(quantile(p, False), quantile(p, True))
            lo, hi = self._lo.astype(np.float64), self._lo + self._step * np.float64(self.levels - 1)
            emp = sq_column_sse(xs, self._lo, self._step, self._inv, self.levels) / n
            return emp + (tail(xmin - lo, beta_lo) + tail(hi - xmax, beta_hi)) / (n + 1)

        grid = np.linspace(np.log10(1e-3 / n), np.log10(0.2), _GRID_POINTS)
        vals = np.stack([cost(np.full(d, t)) for t in grid])  # (G, d)
        best = np.argmin(vals, axis=0)
        best_t, best_v = grid[best], vals[best, cols]
        # Golden section inside the neighbouring grid cells, one new point per dim per step.
        a = grid[np.maximum(best - 1, 0)]
        b = grid[np.minimum(best + 1, _GRID_POINTS - 1)]
        c, e = b - _INV_PHI * (b - a), a + _INV_PHI * (b - a)
        fc, fe = cost(c), cost(e)
        for _ in range(_GOLDEN_ITERS):
            left = fc < fe  # minimum lies in [a, e]
            b = np.where(left, e, b)
            a = np.where(left, a, c)
            new = np.where(left, b - _INV_PHI * (b - a), a + _INV_PHI * (b - a))
            fnew = cost(new)
            c, e, fc, fe = (np.where(left, new, e), np.where(left, c, new),
                            np.where(left, fnew, fe), np.where(left, fc, fnew))
            for t, f in ((c, fc), (e, fe)):
                better = f < best_v
                best_t, best_v = np.where(better, t, best_t), np.where(better, f, best_v)
        p = 10.0**best_t
        self._set_range(quantile(p, False), quantile(p, True))

    # ----------------------------------------------------------- protocol
    def weight_tile(self) -> None:
        """Any vector length: each coordinate has its own range."""
        return None

    def _code_size(self) -> int:
        return self._d_work if self.bits == 8 else (self._d_work + 1) // 2

    def _encode(self, xw: np.ndarray) -> np.ndarray:
        n, d = xw.shape
        par = parallel.elementwise_parallel(n, n * d)
        if self.bits == 8:
            return (sq_encode8 if par else sq_encode8_serial)(xw, self._lo, self._inv)
        return (sq_encode4 if par else sq_encode4_serial)(xw, self._lo, self._inv)

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        n, d = len(codes), self._d_work
        par = parallel.elementwise_parallel(n, n * d)
        if self.bits == 8:
            return (sq_decode8 if par else sq_decode8_serial)(codes, self._lo, self._step)
        return (sq_decode4 if par else sq_decode4_serial)(codes, self._lo, self._step)

    def _state(self) -> dict[str, np.ndarray]:
        return {"lo": self._lo, "step": self._step}

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        lo, step = arrays["lo"], arrays["step"]
        if lo.shape != (self._d_work,) or step.shape != (self._d_work,):
            raise ValueError(f"lo/step must have shape ({self._d_work},), got {lo.shape}, {step.shape}")
        self._set_state(lo, step)

    @property
    def lo(self) -> np.ndarray:
        """Per-dimension lowest level (work domain), float32 (d_work,)."""
        self._require_fitted()
        return self._lo

    @property
    def step(self) -> np.ndarray:
        """Per-dimension level spacing (work domain), float32 (d_work,)."""
        self._require_fitted()
        return self._step


@register(aliases=("scalar8", "int8"))
class SQ8(ScalarQuantizer):
    name = "sq8"
    codec_id = 1
    description = "uniform scalar, 8 bits/dim, per-dimension MSE-clipped range"
    bits = 8


@register(aliases=("scalar4", "int4"))
class SQ4(ScalarQuantizer):
    name = "sq4"
    codec_id = 2
    description = "uniform scalar, 4 bits/dim (two per byte), per-dimension MSE-clipped range"
    bits = 4
