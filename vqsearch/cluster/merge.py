"""Exact merge of per-shard top-k lists into the collection's top-k.

Every shard scores with the same trained state, so scores from different shards are comparable and the
merged list is what one index holding all rows would rank from the same candidates.  The cost is a
partition over ``shards × k`` entries per query (see benchmarks/RESULTS.md, cluster section).
"""

from __future__ import annotations

import numpy as np


def missing_distance(metric: str) -> float:
    """Distance of an absent hit (id -1): worst possible for the metric."""
    return float(np.inf) if metric == "l2" else float(-np.inf)


def empty_result(nq: int, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """``(distances, ids)`` of ``nq`` queries without any hit."""
    return (np.full((nq, k), missing_distance(metric), dtype=np.float32),
            np.full((nq, k), -1, dtype=np.int64))


def pad_to_k(distances: np.ndarray, ids: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Widen ``(nq, m ≤ k)`` results to ``k`` columns with absent hits."""
    nq, m = ids.shape
    if m >= k:
        return distances, ids
    d, i = empty_result(nq, k, metric)
    d[:, :m] = distances
    i[:, :m] = ids
    return d, i


def merge_topk(parts: list[tuple[np.ndarray, np.ndarray]], k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` of several ``(distances, ids)`` results, each ``(nq, k_i)`` → ``(nq, k)``, best first.

    Higher is better for ``cosine``/``ip`` (similarities), lower for ``l2``; absent hits (id −1) sort last
    and pad the result.  The merge is deterministic: equal inputs give equal outputs.
    """
    if not parts:
        raise ValueError("nothing to merge")
    nq = parts[0][1].shape[0]
    if len(parts) == 1:
        d, i = parts[0]
        return pad_to_k(np.asarray(d, np.float32)[:, :k], np.asarray(i, np.int64)[:, :k], k, metric)
    dist = np.concatenate([np.asarray(p[0], np.float32) for p in parts], axis=1)
    ids = np.concatenate([np.asarray(p[1], np.int64) for p in parts], axis=1)
    key = dist if metric == "l2" else -dist
    key = np.where(ids >= 0, key, np.inf)  # absent hits last, whatever distance they carry
    width = min(k, key.shape[1])
    if key.shape[1] > width:  # partition first: O(m) per query instead of sorting all shards × k entries
        part = np.argpartition(key, width - 1, axis=1)[:, :width]
        part = np.sort(part, axis=1)  # shard order among the kept entries, so that ties sort stably
        key = np.take_along_axis(key, part, axis=1)
    else:
        part = np.broadcast_to(np.arange(key.shape[1]), (nq, key.shape[1]))
    order = np.take_along_axis(part, np.argsort(key, axis=1, kind="stable"), axis=1)
    out_d = np.take_along_axis(dist, order, axis=1)
    out_i = np.take_along_axis(ids, order, axis=1)
    out_d = np.where(out_i >= 0, out_d, np.float32(missing_distance(metric)))
    return pad_to_k(out_d.astype(np.float32), out_i, k, metric)
