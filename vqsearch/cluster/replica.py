"""One replica of one shard: a Ray actor that owns an :class:`vqsearch.Index` in its own directory.

The actor keeps no state that its index directory does not: a replacement (after a crash or ``ray.kill``)
reopens the committed segments and carries on.  Writes arrive already routed (and usually already
encoded, see :meth:`vqsearch.Index.encode`); each is one atomic commit of the index.  A write that the
driver re-sends after losing its answer (``retry=True``) is recognised by its ids and applied once.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from ..errors import Conflict, EmptyInput, InvalidInput, NotFound
from ..index import EncodedVectors, Index
from .merge import empty_result, pad_to_k
from .runtime import prepare_worker

#: How long a replacement replica waits for its predecessor's writer lock (the kernel drops it when the
#: killed process is gone, which can take a moment after Ray reports the actor dead).
LOCK_WAIT_S = 30.0


class ShardReplica:
    """Actor body; :class:`~vqsearch.cluster.ShardedIndex` creates it with ``ray.remote`` options."""

    def __init__(self, path: str, shard: int, replica: int, *, create: dict[str, Any] | None,
                 state: bytes | None) -> None:
        """Open the index at ``path``, or create it with the ``Index.create`` options in ``create``.

        ``state``: the collection's trained state, loaded if this index is not trained yet (a replica that
        was created, or crashed, before the state reached it).
        """
        prepare_worker()
        self.shard, self.replica, self.path = shard, replica, path
        self._index = self._open(path, create)
        if state is not None and not self._index.is_trained:
            self._index.load_trained_state(state)

    @staticmethod
    def _open(path: str, create: dict[str, Any] | None) -> Index:
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                if create is not None and not os.path.exists(os.path.join(path, "_manifests")):
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    return Index.create(path, **create)
                return Index.open(path)
            except NotFound:
                raise NotFound(f"replica directory {path} holds no index on this node; with node-local "
                               f"storage a replica cannot move to another node (use shared storage)") from None
            except Conflict:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    # ------------------------------------------------------------ health and state
    def ping(self) -> dict[str, Any]:
        """Liveness and identity: shard, replica, node, process, row count, trained state."""
        import ray

        return {"shard": self.shard, "replica": self.replica, "node_id": ray.get_runtime_context().get_node_id(),
                "pid": os.getpid(), "count": len(self._index), "state_id": self._index.state_id}

    def load_trained_state(self, state: bytes) -> str:
        """Adopt the collection's trained state (a no-op when it is already this replica's)."""
        if not self._index.is_trained:
            self._index.load_trained_state(state)
        return self._index.state_id

    def trained_state(self) -> bytes | None:
        return self._index.trained_state() if self._index.is_trained else None

    # ------------------------------------------------------------ writes
    def write(self, mode: str, vectors: Any, ids: np.ndarray, metadata: Any = None, *, retry: bool = False) -> int:
        """``add`` or ``upsert`` rows; ``vectors`` is a float array, :class:`EncodedVectors`, or a list of
        ``(EncodedVectors, ids, metadata)`` parts (object refs from the build's encoding tasks), committed
        together.  ``retry``: the driver re-sends a write whose answer it lost; an add that already
        committed (all its ids present) is not applied twice.  Returns the replica's row count."""
        if isinstance(vectors, list):
            vectors, ids, metadata = _concat_parts(vectors)
            if vectors is None:
                return len(self._index)
        if mode == "add" and retry:
            present = self._index.contains(ids)
            if present.all():
                return len(self._index)
            if present.any():  # commits are atomic, so a lost add is all or nothing
                raise Conflict(f"shard {self.shard} replica {self.replica} holds {int(present.sum())} of "
                               f"{present.size} ids of a write it is asked to repeat")
        if mode == "add":
            self._index.add(vectors, ids=ids, metadata=metadata)
        elif mode == "upsert":
            self._index.upsert(vectors, ids=ids, metadata=metadata)
        else:
            raise InvalidInput(f"unknown write mode {mode!r}")
        return len(self._index)

    def delete(self, ids: np.ndarray, *, retry: bool = False) -> int:
        """Delete ids (all must be present unless ``retry``: a repeated delete skips ids already gone)."""
        ids = np.asarray(ids, dtype=np.uint64)
        if retry:
            ids = ids[self._index.contains(ids)]
        if ids.size:
            self._index.delete(ids)
        return len(self._index)

    def compact(self) -> None:
        self._index.compact()

    def close(self) -> None:
        self._index.close()

    # ------------------------------------------------------------ reads
    def contains(self, ids: np.ndarray) -> np.ndarray:
        return self._index.contains(ids)

    def search(self, queries: np.ndarray, k: int, filter: dict | None, oversample: int | None,
               nprobe: int | None) -> tuple[np.ndarray, np.ndarray]:
        """This shard's top ``k``, padded with id −1 when it holds fewer rows (an empty shard is no error)."""
        metric = self._index.metric
        for _ in range(3):  # a concurrent delete can shrink the shard between counting and searching
            n = len(self._index)
            if n == 0 or not self._index.is_trained:
                return empty_result(queries.shape[0], k, metric)
            try:
                d, i = self._index.search(queries, k=min(k, n), filter=filter, oversample=oversample,
                                          nprobe=nprobe)
            except EmptyInput:
                continue
            except InvalidInput:
                if len(self._index) >= min(k, n):
                    raise
                continue
            return pad_to_k(d, i, k, metric)
        return empty_result(queries.shape[0], k, metric)

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        return self._index.reconstruct(ids)

    def count(self, filter: dict | None) -> int:
        return int(self._index.count(filter))

    def get_metadata(self, ids: np.ndarray, columns: list[str] | None) -> Any:
        return self._index.get_metadata(ids, columns, missing="null")

    def stats(self) -> dict[str, Any]:
        return self._index.stats()


def _concat_parts(parts: list) -> tuple[EncodedVectors | None, np.ndarray | None, Any]:
    """One batch from the build's per-shard parts ``(EncodedVectors, ids, metadata table or None)``."""
    import pyarrow as pa
    import ray

    got = [p for p in ray.get(parts) if p is not None]
    if not got:
        return None, None, None
    encoded = EncodedVectors.concat([g[0] for g in got])
    ids = np.concatenate([g[1] for g in got])
    tables = [g[2] for g in got]
    metadata = None if all(t is None for t in tables) else pa.concat_tables(tables)
    return encoded, ids, metadata
