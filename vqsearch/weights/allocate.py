"""Bit allocation across tensors (Orr, Ribar & Luschi, "Optimal Formats for Weight Quantisation", §7.3).

Objective.  The model's output error is approximated by a sensitivity-weighted sum of the
tensors' squared quantisation errors, Σ_t s_t · n_t · MSE_t(format_t), subject to an average
bit budget Σ_t bits_t ≤ b̄ · Σ_t n_t (bits_t counts *everything* the tensor stores).

Sensitivity s_t:

* ``"fisher"`` (with calibration): s_t = F̄_t, the mean squared gradient per element
  (:mod:`.calibration`) — Orr et al.'s diagonal-Fisher rule.
* ``"proxy"`` (data-free): s_t = 1 / (n_t · RMS_t²), i.e. every tensor's *relative* error
  ‖δ_t‖²/‖W_t‖² counts the same.  Rationale: a linear layer with relative weight error ε² adds
  relative noise ≈ ε² to its output whatever its size, and an embedding table with relative
  row error ε² perturbs each token's input by ε²; so each tensor is "one noise source".  It
  favours small tensors and starves big ones (the 30k-row word-embedding table), which matches
  what we measured on MiniLM (noise of relative MSE 0.068 on the word embeddings alone costs
  0.008 of mean cosine; on one layer's value matrices alone 0.013; on the FFN inputs 0.017).

Closed form (continuous rates, model MSE_t = c·RMS_t²·2^(−2 b_t)): :func:`fisher_bits`,
b_t = b̄ + δ_t − Σ_s n_s δ_s / Σ_s n_s with δ_t = log2 RMS_t + ½ log2 s_t, with tensors below
``min_bits`` clipped and the rest re-levelled (water-filling).  At the optimum the marginal gain
per parameter, −∂(s_t n_t c RMS_t² 2^(−2b_t))/∂b_t / n_t, is the same for every unclipped tensor.

Discrete formats (what :func:`allocate` does): each tensor has a few candidate formats, each
with its measured bits and measured relative MSE on a row sample of that tensor, so real
overheads and real (non-Gaussian) errors are used instead of the model.  Minimising the
objective under the budget is a multiple-choice knapsack; we take each tensor's lower convex
hull of (bits, distortion) and greedily buy the hull step with the largest distortion decrease
per bit until the budget is spent (the Lagrangian solution, optimal up to the last step).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import InvalidInput


def fisher_bits(
    numel: Sequence[float],
    rms: Sequence[float],
    sensitivity: Sequence[float],
    target_bits: float,
    *,
    min_bits: float = 2.0,
    max_bits: float = math.inf,
) -> np.ndarray:
    """Continuous optimal rates b_t of Orr et al. §7.3 with clipping to [min_bits, max_bits].

    Minimises Σ_t n_t s_t RMS_t² 2^(−2 b_t) subject to Σ_t n_t b_t = b̄ Σ_t n_t.
    """
    n = np.asarray(numel, dtype=np.float64)
    r = np.asarray(rms, dtype=np.float64)
    s = np.asarray(sensitivity, dtype=np.float64)
    if not (n.shape == r.shape == s.shape) or n.ndim != 1 or n.size == 0:
        raise InvalidInput("numel, rms and sensitivity must be 1-D sequences of the same length")
    if (n <= 0).any() or (r <= 0).any() or (s <= 0).any():
        raise InvalidInput("numel, rms and sensitivity must be positive")
    if not min_bits <= target_bits <= max_bits:
        raise InvalidInput(f"target_bits {target_bits} is outside [{min_bits}, {max_bits}]")
    delta = np.log2(r) + 0.5 * np.log2(s)
    total = target_bits * n.sum()
    fixed = np.zeros(n.size, dtype=bool)
    bits = np.empty(n.size)
    for _ in range(n.size + 1):
        free = ~fixed
        budget = total - np.sum(n[fixed] * bits[fixed])
        level = (budget - np.sum(n[free] * delta[free])) / np.sum(n[free])
        cand = level + delta
        lo = free & (cand < min_bits)
        hi = free & (cand > max_bits)
        bits[free] = cand[free]
        if not lo.any() and not hi.any():
            break
        bits[lo], bits[hi] = min_bits, max_bits
        fixed |= lo | hi
        if fixed.all():
            break
    return bits


@dataclass
class Option:
    """One candidate format for one tensor: total stored bits and predicted distortion."""

    format: str
    bits: float
    distortion: float


@dataclass
class Choice:
    """The allocation's decision for one tensor."""

    name: str
    format: str
    bits: float
    distortion: float
    sensitivity: float
    options: list[Option] = field(default_factory=list)


def _hull(options: list[Option]) -> list[Option]:
    """Lower convex hull of (bits, distortion), increasing bits, strictly decreasing distortion."""
    pts = sorted(options, key=lambda o: (o.bits, o.distortion))
    mono: list[Option] = []
    for o in pts:  # drop dominated options (more bits, no less distortion)
        if mono and o.distortion >= mono[-1].distortion:
            continue
        if mono and o.bits == mono[-1].bits:
            mono[-1] = o
            continue
        mono.append(o)
    hull: list[Option] = []
    for o in mono:
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            # b is above the segment a→o: remove it (slopes must become less steep)
            if (b.distortion - a.distortion) * (o.bits - a.bits) >= (o.distortion - a.distortion) * (b.bits - a.bits):
                hull.pop()
            else:
                break
        hull.append(o)
    return hull


def allocate(
    options: dict[str, list[Option]],
    budget_bits: float,
    sensitivity: dict[str, float] | None = None,
) -> dict[str, Choice]:
    """Pick one option per tensor minimising total distortion with total bits ≤ ``budget_bits``.

    ``options[name]`` lists the candidate formats of a tensor with their *total* bits and their
    (already sensitivity-weighted) distortion.  Raises ``InvalidInput`` when even the cheapest
    option of every tensor exceeds the budget.
    """
    hulls = {name: _hull(opts) for name, opts in options.items()}
    for name, h in hulls.items():
        if not h:
            raise InvalidInput(f"tensor {name!r} has no candidate format")
    pos = {name: 0 for name in hulls}
    spent = sum(h[0].bits for h in hulls.values())
    if spent > budget_bits * (1 + 1e-12):
        raise InvalidInput(f"the cheapest formats need {spent / 1e6:.3f} Mbit, more than the budget "
                           f"{budget_bits / 1e6:.3f} Mbit: raise target_bits or add cheaper candidates")
    heap: list[tuple[float, str]] = []

    def push(name: str) -> None:
        h, i = hulls[name], pos[name]
        if i + 1 < len(h):
            gain = (h[i].distortion - h[i + 1].distortion) / (h[i + 1].bits - h[i].bits)
            heapq.heappush(heap, (-gain, name))

    for name in hulls:
        push(name)
    skipped: list[str] = []
    while heap:
        _, name = heapq.heappop(heap)
        h, i = hulls[name], pos[name]
        step = h[i + 1].bits - h[i].bits
        if spent + step <= budget_bits:
            spent += step
            pos[name] = i + 1
            push(name)
        else:
            skipped.append(name)  # too expensive now; a cheaper step of another tensor may still fit
    sens = sensitivity or {}
    return {name: Choice(name, h[pos[name]].format, h[pos[name]].bits, h[pos[name]].distortion,
                         sens.get(name, float("nan")), options[name]) for name, h in hulls.items()}
