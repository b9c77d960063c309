"""Which shard owns an id: a stable hash, the same in every process, version and machine.

Python's ``hash`` is salted per process and NumPy has no stable integer hash, so ids are mixed with
SplitMix64's output function (golden-ratio offset, then its finaliser: a bijection on 64-bit integers with
full avalanche) and reduced modulo the shard count.  Consecutive ids (what the cluster assigns) spread
evenly; the layout file records the scheme, so a later version can add another without moving existing rows.
"""

from __future__ import annotations

import numpy as np

#: Recorded in the cluster layout; changing the function needs a new name.
HASH_SCHEME = "splitmix64-mod"

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def mix64(ids: np.ndarray) -> np.ndarray:
    """SplitMix64 output of uint64 ids (wrapping arithmetic)."""
    z = np.asarray(ids, dtype=np.uint64).copy()
    with np.errstate(over="ignore"):
        z += _GAMMA
        z ^= z >> np.uint64(30)
        z *= _M1
        z ^= z >> np.uint64(27)
        z *= _M2
        z ^= z >> np.uint64(31)
    return z


def shard_of(ids: np.ndarray, shards: int) -> np.ndarray:
    """Shard number (int64) of each id."""
    if shards == 1:
        return np.zeros(np.shape(ids), dtype=np.int64)
    return (mix64(ids) % np.uint64(shards)).astype(np.int64)


def group_by_shard(ids: np.ndarray, shards: int) -> list[np.ndarray]:
    """Row positions of ``ids`` owned by each shard (ascending positions, one array per shard)."""
    owner = shard_of(ids, shards)
    order = np.argsort(owner, kind="stable")
    bounds = np.searchsorted(owner[order], np.arange(shards + 1))
    return [order[bounds[s]:bounds[s + 1]] for s in range(shards)]
