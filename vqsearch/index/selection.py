"""Choosing among candidates: the best k per query, and pruning candidates that cannot win.

Scores are ranking scores (higher = nearer, see :mod:`.metric`); references are packed row references
(:mod:`.rowref`), ``-1`` where a slot is empty.
"""

from __future__ import annotations

import numpy as np

from .rowref import NO_ROW, RowRefs


def top_k(scores: np.ndarray, refs: RowRefs, k: int,
          *payload: np.ndarray | None) -> tuple[np.ndarray | None, ...]:
    """The best ``k`` of each row of ``(scores, refs)``, best first; pads with ``(-inf, -1)``.

    Arrays in ``payload`` (same shape as ``scores``) are reordered alongside and returned after
    ``(scores, refs)``, padded with 0; ``None`` stays ``None``.  Slots whose score is not finite come
    back with reference ``-1``.
    """
    n_queries, width = scores.shape
    if width < k:
        pad = k - width
        scores = np.concatenate([scores, np.full((n_queries, pad), -np.inf, np.float32)], axis=1)
        refs = np.concatenate([refs, np.full((n_queries, pad), NO_ROW, np.int64)], axis=1)
        payload = tuple(None if p is None else np.concatenate([p, np.zeros((n_queries, pad), p.dtype)], axis=1)
                        for p in payload)
        width = k
    if width > k:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(width), (n_queries, width))
    best = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-best, axis=1, kind="stable")
    best = np.take_along_axis(best, order, axis=1)

    def reorder(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else np.take_along_axis(np.take_along_axis(a, part, axis=1), order, axis=1)

    kept = np.where(np.isfinite(best), reorder(refs), NO_ROW)
    return (best.astype(np.float32), kept, *(reorder(p) for p in payload))


def confident_candidates(scores: np.ndarray, refs: RowRefs, width: np.ndarray, k: int) -> RowRefs:
    """``refs`` with every candidate that cannot reach the top ``k`` set to ``-1``.

    Each scan score lies within ``± width`` of the exact score (with the scanner's confidence); a
    candidate whose upper bound is below the k-th largest lower bound of its query is beaten by k others,
    so rescoring it is wasted work.
    """
    if scores.shape[1] <= k:
        return refs
    valid = refs >= 0
    lower = np.where(valid, scores - width, -np.inf)
    kth = -np.partition(-lower, k - 1, axis=1)[:, k - 1:k]
    return np.where(valid & (scores + width >= kth), refs, NO_ROW)
