"""Per-tensor statistics that predict quantisation difficulty, and the error measure SQNR.

* ``rms``: sqrt(mean w²) — sets the absolute error of any fixed-rate format (MSE ∝ RMS²·2^(−2b)).
* ``max_over_rms``: max|w| / RMS — the dynamic range an absmax-scaled format must cover; ≈ 4.5–5.5
  for Gaussian tensors of 10⁵–10⁷ entries, much larger when a few outliers dominate.
* ``kurtosis``: Pearson kurtosis E[(w − μ)⁴] / σ⁴ (3 for a Gaussian): heavy tails hurt
  fixed-length codes, and are what the randomized Hadamard transform removes.
* ``activation_kurtosis``: the outlier-feature measure of He et al., "Understanding and Minimising
  Outlier Features in Transformer Training" (2024): with s_j = E_tokens[x_j²] the mean square of
  input feature j, Kurt = mean_j(s_j²) / mean_j(s_j)² (1 when every feature has the same energy,
  large when a few features carry most of it).  It is computed from the diagonal of the
  uncentred input covariance H = E[x xᵀ] collected for Hessian-aware rounding.
* ``sqnr_db``: 10·log10(‖W‖² / ‖W − Ŵ‖²).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class TensorStats:
    """Statistics of one weight tensor (``activation_kurtosis`` is None without calibration)."""

    rms: float
    max_over_rms: float
    kurtosis: float
    activation_kurtosis: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def rms(w: np.ndarray) -> float:
    """Root mean square (float64 accumulation)."""
    w = np.asarray(w)
    if w.size == 0:
        return 0.0
    return float(np.sqrt(np.mean(np.square(w, dtype=np.float64))))


def kurtosis(w: np.ndarray) -> float:
    """Pearson kurtosis E[(w − μ)⁴]/σ⁴ (3 for Gaussian data); NaN for constant tensors."""
    x = np.asarray(w, dtype=np.float64).ravel()
    if x.size < 2:
        return float("nan")
    c = x - x.mean()
    var = np.mean(c * c)
    if var == 0:
        return float("nan")
    return float(np.mean(c**4) / var**2)


def activation_kurtosis(hessian_diag: np.ndarray) -> float:
    """He et al.'s outlier-feature kurtosis from the per-feature mean squares s_j = H_jj."""
    s = np.asarray(hessian_diag, dtype=np.float64)
    m = float(np.mean(s))
    if m <= 0:
        return float("nan")
    return float(np.mean(s * s) / (m * m))


def tensor_stats(w: np.ndarray, hessian_diag: np.ndarray | None = None) -> TensorStats:
    """All statistics of ``w`` (any shape, numeric)."""
    r = rms(w)
    mx = float(np.max(np.abs(w))) if np.size(w) else 0.0
    return TensorStats(
        rms=r,
        max_over_rms=mx / r if r > 0 else float("nan"),
        kurtosis=kurtosis(w),
        activation_kurtosis=None if hessian_diag is None else activation_kurtosis(hessian_diag),
    )


def sqnr_db(w: np.ndarray, w_hat: np.ndarray) -> float:
    """Signal-to-quantisation-noise ratio in dB; +inf for an exact reconstruction."""
    w = np.asarray(w, dtype=np.float64)
    err = float(np.sum((w - np.asarray(w_hat, dtype=np.float64)) ** 2))
    sig = float(np.sum(w * w))
    if err == 0:
        return math.inf
    if sig == 0:
        return -math.inf
    return 10.0 * math.log10(sig / err)
