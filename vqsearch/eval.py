"""Search-quality metrics and a warm-up timer, shared by tests, benchmarks and the demo.

* :func:`recall_at_k` — the fraction of the exact top ``k`` ids that a search returned in its top ``k``;
* :func:`tie_aware_recall_at_k` — the same, judged by exact scores, so that a result tied with the
  ``k``-th exact neighbour counts as a hit (on data with ties, id sets are not unique);
* :func:`label_at_k` — the fraction of queries whose right answer (a row id) is among the top ``k`` ids;
* :func:`timed` — run a function after warm-up calls and report the best wall time.

Ids follow the FAISS convention: int arrays of shape ``(nq, k)``, ``-1`` for a missing result.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np

from .errors import InvalidInput

T = TypeVar("T")


def _as_2d(name: str, a: object) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 2:
        raise InvalidInput(f"{name} must be 2-D (nq, k), got shape {arr.shape}")
    return arr


def _k_of(k: int | None, *widths: int) -> int:
    k = min(widths) if k is None else k
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= min(widths):
        raise InvalidInput(f"k must be an integer in [1, {min(widths)}], got {k!r}")
    return int(k)


def recall_at_k(ids: object, truth: object, k: int | None = None) -> float:
    """Mean over queries of |top-k returned ∩ top-k exact| / k.

    ``ids`` are the search results and ``truth`` the exact neighbours, best first, ``(nq, ≥ k)`` each;
    ``k`` defaults to the narrower of the two.  Missing results (``-1``) never count as hits.
    """
    found, exact = _as_2d("ids", ids), _as_2d("truth", truth)
    if found.shape[0] != exact.shape[0]:
        raise InvalidInput(f"ids has {found.shape[0]} queries, truth has {exact.shape[0]}")
    k = _k_of(k, found.shape[1], exact.shape[1])
    if found.shape[0] == 0:
        return float("nan")
    hits = [len((set(a[:k].tolist()) - {-1}) & set(b[:k].tolist())) for a, b in zip(found, exact)]
    return float(np.mean(hits)) / k


def tie_aware_recall_at_k(found_scores: object, truth_scores: object, k: int | None = None, *,
                          higher_is_better: bool = True, atol: float = 1e-6) -> float:
    """Recall judged by exact scores: a result counts as a hit when its exact score is at least as good
    as the ``k``-th exact neighbour's (within ``atol``), so ties at the boundary are not misses.

    ``found_scores`` are the exact scores of the returned results ``(nq, ≥ k)`` (NaN for a missing
    result), ``truth_scores`` the exact top scores, best first ``(nq, ≥ k)``.  ``higher_is_better`` is
    True for similarities (cosine, inner product), False for distances (l2).
    """
    found, exact = _as_2d("found_scores", found_scores), _as_2d("truth_scores", truth_scores)
    if found.shape[0] != exact.shape[0]:
        raise InvalidInput(f"found_scores has {found.shape[0]} queries, truth_scores has {exact.shape[0]}")
    k = _k_of(k, found.shape[1], exact.shape[1])
    if found.shape[0] == 0:
        return float("nan")
    found = np.asarray(found[:, :k], dtype=np.float64)
    kth = np.asarray(exact[:, k - 1:k], dtype=np.float64)
    with np.errstate(invalid="ignore"):
        hit = found >= kth - atol if higher_is_better else found <= kth + atol
    return float(np.mean(np.sum(hit & ~np.isnan(found), axis=1))) / k


def label_at_k(ids: object, labels: object, k: int | None = None) -> float:
    """Fraction of queries whose ``label`` (the id of the row that is the right answer for it, as in the
    shared Debian-MiniLM set) is among their top ``k`` result ids."""
    found = _as_2d("ids", ids)
    want = np.asarray(labels).reshape(-1)
    if want.shape[0] != found.shape[0]:
        raise InvalidInput(f"ids has {found.shape[0]} queries, labels has {want.shape[0]}")
    k = _k_of(k, found.shape[1])
    if found.shape[0] == 0:
        return float("nan")
    return float(np.mean(np.any(found[:, :k] == want[:, None], axis=1)))


def timed(fn: Callable[[], T], *, repeat: int = 1, warmup: int = 1) -> tuple[T, float]:
    """Call ``fn`` ``warmup`` times (dropped: numba compilation, page faults, caches), then ``repeat``
    times; returns the last result and the best wall time in seconds."""
    if repeat < 1 or warmup < 0:
        raise InvalidInput(f"repeat must be >= 1 and warmup >= 0, got repeat={repeat}, warmup={warmup}")
    out: T
    for _ in range(warmup):
        out = fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best
