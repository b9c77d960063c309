"""The seam a server uses to keep collections either in-process or on a Ray cluster.

A server asks :func:`backend_for` once (``vqsearch serve --ray-address ADDRESS`` → a :class:`RayBackend`,
otherwise a :class:`LocalBackend`) and then creates and opens collections through it; both kinds of
collection answer the same calls (:class:`CollectionBackend`), so the HTTP layer does not care which it has.
Shard and replica counts are collection-create options that only the Ray backend accepts above 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import InvalidInput


@runtime_checkable
class CollectionBackend(Protocol):
    """The calls a collection answers, whether a :class:`vqsearch.Index` or a ``ShardedIndex``."""

    @property
    def dim(self) -> int: ...

    @property
    def metric(self) -> str: ...

    @property
    def is_trained(self) -> bool: ...

    @property
    def config(self) -> Any: ...  # the vqsearch.IndexConfig every shard uses

    def __len__(self) -> int: ...

    def add(self, vectors: np.ndarray, ids: object = None, metadata: Any = None) -> np.ndarray: ...

    def upsert(self, vectors: np.ndarray, ids: object, metadata: Any = None) -> np.ndarray: ...

    def delete(self, ids: object) -> None: ...

    def search(self, queries: np.ndarray, k: int = 10, filter: dict | None = None, oversample: int | None = None,
               nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]: ...

    def get_metadata(self, ids: object, columns: list[str] | None = None, *, missing: str = "raise") -> Any: ...

    def reconstruct(self, ids: object) -> np.ndarray: ...

    def stats(self) -> dict[str, Any]: ...

    def compact(self) -> None: ...

    def close(self) -> None: ...


class LocalBackend:
    """Collections as in-process :class:`vqsearch.Index` objects (one shard, one replica)."""

    name = "local"

    def create(self, path: str | Path, *, dim: int, metric: str = "cosine", preset: str = "default",
               shards: int = 1, replicas: int = 1, **index_options: Any) -> CollectionBackend:
        if shards != 1 or replicas != 1:
            raise InvalidInput("shards and replicas need a Ray cluster (start the server with --ray-address)")
        from ..index import Index

        return Index.create(path, dim=dim, metric=metric, preset=preset, **index_options)

    def open(self, path: str | Path, *, on_corrupt: str = "raise") -> CollectionBackend:
        """Open the collection at ``path``; ``on_corrupt="skip"`` leaves damaged segments out."""
        from ..index import Index

        return Index.open(path, on_corrupt=on_corrupt)  # type: ignore[arg-type]


class RayBackend:
    """Collections as :class:`~vqsearch.cluster.ShardedIndex` on the Ray cluster at ``address``."""

    name = "ray"

    def __init__(self, address: str | None = "auto") -> None:
        from .runtime import ensure_connected

        ensure_connected(address)
        self.address = address

    def create(self, path: str | Path, *, dim: int, metric: str = "cosine", preset: str = "default",
               shards: int = 1, replicas: int = 1, **index_options: Any) -> CollectionBackend:
        from .sharded import ShardedIndex

        return ShardedIndex.create(path, dim, shards=shards, replicas=replicas, metric=metric, preset=preset,
                                   **index_options)

    def open(self, path: str | Path, *, on_corrupt: str = "raise") -> CollectionBackend:
        """Open the sharded collection at ``path`` (its replicas reopen their committed segments).  Damaged
        segments are not skipped here: each replica's index reports them, and a replica is repaired alone."""
        from .sharded import ShardedIndex

        if on_corrupt != "raise":
            raise InvalidInput(f"on_corrupt={on_corrupt!r} is not available for sharded collections; repair the "
                               "damaged replica directory instead")
        return ShardedIndex.open(path)


def backend_for(ray_address: str | None) -> LocalBackend | RayBackend:
    """:class:`RayBackend` for a Ray address (``"auto"`` = the cluster this machine belongs to), else local."""
    return LocalBackend() if ray_address is None else RayBackend(ray_address)
