"""Errors of sharded collections (typed like the rest of :mod:`vqsearch.errors`)."""

from __future__ import annotations

from ..errors import VQSearchError


class ShardUnavailable(VQSearchError, RuntimeError):
    """No replica of a shard answered (all dead, restarting or timed out).

    ``shards`` lists the shard numbers concerned.  Searches can ask for ``allow_partial=True`` instead, and get
    the other shards' results flagged as partial.
    """

    code = "shard_unavailable"
    http_status = 503

    def __init__(self, message: str = "", shards: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.shards = tuple(shards)

    def __reduce__(self):  # keep ``shards`` across processes (Ray ships exceptions by pickle)
        return (type(self), (self.message, self.shards))


class ClusterTimeout(VQSearchError, TimeoutError):
    """Work on the cluster (encoding a large write, a bulk build) did not finish in the allowed time; nothing
    was written."""

    code = "timeout"
    http_status = 504


class PartialWrite(VQSearchError, RuntimeError):
    """A write was committed by some shards and refused by another, and could not be undone.

    ``committed`` lists the shards that hold the write.  Adds are undone on those shards before this is
    raised, so it only comes from upserts (which replace rows and cannot be rolled back) and deletes.
    """

    code = "partial_write"
    http_status = 500

    def __init__(self, message: str = "", committed: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.committed = tuple(committed)

    def __reduce__(self):
        return (type(self), (self.message, self.committed))


__all__ = ["ClusterTimeout", "PartialWrite", "ShardUnavailable"]
