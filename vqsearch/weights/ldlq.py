"""Hessian-aware rounding: block LDLQ / GPTQ error feedback (quantizers.md §1.8, §3.5).

A linear layer ``y = W x`` with inputs of covariance ``H = E[x xᵀ]`` (n × n) loses
``ℓ(Ŵ) = tr((Ŵ − W) H (Ŵ − W)ᵀ)`` in expected squared output error.  Rows of W are independent
under ℓ, so all rows are processed together.  Columns are quantised in blocks Q of ``g``
consecutive input dimensions (g = the vector length of the format: 8 for E8/E8P, 24 for Leech,
16 for 16 × 16 trellis tiles), left to right; after each block the not-yet-quantised columns R
absorb its error (the optimal-brain-surgeon update restricted to R):

    W_R ← W_R − E_Q · U_QQ⁻¹ · U_QR,        E_Q = W_Q − Q(W_Q),

where ``U`` is the upper Cholesky factor of ``H⁻¹`` (``H⁻¹ = Uᵀ U``).  This is GPTQ's rule for
vector blocks, and the same linear feedback as QuIP#'s BlockLDLQ (which orders the blocks from
last to first with the LDL factor of H).  Why it is right: with V = U⁻¹ (upper), H = V Vᵀ, so for
any trailing set S, (H_SS)⁻¹ = U_SSᵀ U_SS and the OBS update for fixed E_Q is
−E_Q [(H_SS⁻¹)_QQ]⁻¹ (H_SS⁻¹)_QR = −E_Q U_QQ⁻¹ U_QR.

Numerics: H is damped, ``H + λ·mean(diag H)·I`` (λ = ``damp``, 1 % by default as in GPTQ and
quantizers.md §11), and factored in float64; if the Cholesky factorisation still fails the
damping is raised tenfold (logged) up to λ = 1.  Updates within a super-block of ``lazy``
columns are applied eagerly and to the rest of the matrix once per super-block (GPTQ's lazy
batch), which keeps the O(m·n²) work in large matrix products.

Use it **after** the randomized Hadamard transform (quantizers.md §11): without incoherence,
feedback dumps error onto rarely active inputs that the calibration set under-represents.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from ..errors import InvalidInput

log = logging.getLogger(__name__)

#: Columns per lazy-update super-block (rounded to a multiple of the block width).
LAZY_COLUMNS = 128
_MAX_DAMP = 1.0


def proxy_loss(w: np.ndarray, w_hat: np.ndarray, h: np.ndarray) -> float:
    """tr((W − Ŵ) H (W − Ŵ)ᵀ): the expected squared output error for inputs of covariance H."""
    e = np.asarray(w, dtype=np.float64) - np.asarray(w_hat, dtype=np.float64)
    return float(np.sum((e @ np.asarray(h, dtype=np.float64)) * e))


def damped_inverse_cholesky(h: np.ndarray, damp: float = 0.01) -> tuple[np.ndarray, float]:
    """Upper Cholesky factor U of (H + λ·mean(diag H)·I)⁻¹ (float64) and the λ finally used.

    Dead inputs (zero diagonal) get unit curvature, like GPTQ, so the factorisation exists and
    their (unconstrained) weights do not pull on the others.
    """
    h = np.array(h, dtype=np.float64, copy=True)
    if h.ndim != 2 or h.shape[0] != h.shape[1]:
        raise InvalidInput(f"Hessian must be square, got shape {h.shape}")
    if not np.isfinite(h).all():
        raise InvalidInput("Hessian contains NaN or inf")
    h = 0.5 * (h + h.T)
    diag = np.diag(h).copy()
    dead = diag <= 0
    if dead.any():
        h[dead, :] = 0.0
        h[:, dead] = 0.0
        h[dead, dead] = 1.0
        diag = np.diag(h).copy()
    scale = float(np.mean(diag))
    lam = max(float(damp), 0.0)
    eye = np.eye(h.shape[0])
    while True:
        try:
            lower = np.linalg.cholesky(h + lam * scale * eye)
            # H⁻¹ from the factor (two triangular solves via inv of the lower factor), then its Cholesky.
            linv = np.linalg.inv(lower)
            hinv = linv.T @ linv
            u = np.linalg.cholesky(0.5 * (hinv + hinv.T)).T
            if np.isfinite(u).all():
                return u, lam
        except np.linalg.LinAlgError:
            pass
        if lam >= _MAX_DAMP:
            raise InvalidInput(f"Hessian is not positive definite even with damping {lam:g}")
        new = min(_MAX_DAMP, lam * 10 if lam > 0 else 1e-4)
        log.warning("LDLQ: Cholesky failed with damping %g; retrying with %g", lam, new)
        lam = new


def ldlq(
    w: np.ndarray,
    h: np.ndarray,
    quantize_block: Callable[[int, np.ndarray], np.ndarray],
    block: int,
    *,
    damp: float = 0.01,
    lazy: int = LAZY_COLUMNS,
) -> np.ndarray:
    """Quantise ``w`` (m × n) block by block with error feedback; returns Ŵ (float32).

    Parameters
    ----------
    w : (m, n) float array
        Weights in the domain of ``h`` (after the input-side RHT when one is used).
    h : (n, n) array
        Input covariance (proxy Hessian), same domain as ``w``.
    quantize_block : callable (j, target) -> dequantised target
        Quantises columns ``[j·block, (j+1)·block)`` (all rows at once; ``target`` is float32
        (m, block)) and returns their reconstruction.  It is called exactly once per block, in
        order, so it may record codes as a side effect.
    block : int
        Block width g; must divide n.
    damp : float, default 0.01
        Relative damping λ (see the module docstring).
    lazy : int, default 128
        Super-block width for lazy updates (no effect on the result beyond float rounding).
    """
    m, n = w.shape
    if block < 1 or n % block:
        raise InvalidInput(f"LDLQ block width {block} must divide the number of columns {n}")
    if h.shape != (n, n):
        raise InvalidInput(f"Hessian shape {h.shape} does not match {n} columns")
    u, _ = damped_inverse_cholesky(h, damp)
    work = np.array(w, dtype=np.float64, copy=True)
    out = np.empty((m, n), dtype=np.float32)
    sb = max(block, (lazy // block) * block)
    for s0 in range(0, n, sb):
        s1 = min(n, s0 + sb)
        err = np.empty((m, s1 - s0), dtype=np.float64)
        for c0 in range(s0, s1, block):
            c1 = c0 + block
            target = work[:, c0:c1].astype(np.float32)
            q = np.asarray(quantize_block(c0 // block, target), dtype=np.float32)
            if q.shape != target.shape:
                raise InvalidInput(f"quantize_block returned shape {q.shape}, expected {target.shape}")
            out[:, c0:c1] = q
            # Scaled error E_Q U_QQ⁻¹ (U_QQ is upper triangular with a positive diagonal).
            e = np.linalg.solve(u[c0:c1, c0:c1].T, (work[:, c0:c1] - q).T).T
            err[:, c0 - s0:c1 - s0] = e
            if c1 < s1:
                work[:, c1:s1] -= e @ u[c0:c1, c1:s1]
        if s1 < n:
            work[:, s1:] -= err @ u[s0:s1, s1:]
    return out
