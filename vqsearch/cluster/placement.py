"""Where replicas run, and keeping each replica slot filled with a live actor.

Each shard gets one placement group with a bundle per replica.  With at least as many live nodes as
replicas the group is ``STRICT_SPREAD`` (no two replicas of a shard on one node, so a lost node costs each
shard at most one replica); otherwise ``SPREAD`` with a warning.  Ray places successive one-bundle groups on
the least loaded node, so the shards themselves spread over the nodes too.

A :class:`ReplicaSlot` is one (shard, replica) position: a directory, a bundle and the current actor.  When
the actor is found dead (a crash, a lost node, ``ray.kill``), :meth:`ReplicaSlot.recover` starts a new one
in the same bundle, which reopens the same directory.  Ray itself restarts actors that crash (a few times);
the slot covers actors Ray will not bring back.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from typing import Any

from .errors import ShardUnavailable
from .runtime import require_ray, worker_runtime_env

LOG = logging.getLogger(__name__)

#: Ray restarts a crashed replica actor up to this many times by itself (then the slot starts a new one).
ACTOR_MAX_RESTARTS = 3
#: Concurrent reads a replica serves (searches run alongside a write; the index pins a snapshot per call).
ACTOR_CONCURRENCY = 4
#: Replica methods that change the index: they run one at a time, in the order sent (a write's undo can never
#: overtake the write), in their own concurrency group, so that reads never wait for them.
WRITE_METHODS = frozenset({"write", "delete", "compact", "load_trained_state", "close"})
CONCURRENCY_GROUPS = {"write": 1, "read": ACTOR_CONCURRENCY}


def live_nodes() -> list[str]:
    ray = require_ray()
    return [n["NodeID"] for n in ray.nodes() if n.get("Alive")]


def make_placement_groups(shards: int, replicas: int, resources: dict[str, float], timeout: float) -> list[Any]:
    """One placement group per shard (a bundle of ``resources`` per replica), ready when this returns."""
    ray = require_ray()
    from ray.util.placement_group import placement_group, remove_placement_group

    nodes = sorted(live_nodes())
    if replicas > len(nodes):
        warnings.warn(f"{replicas} replicas per shard on {len(nodes)} node(s): some replicas of a shard share a "
                      f"node, so losing that node loses them together", RuntimeWarning, stacklevel=3)
    groups: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        for shard in range(shards):
            groups.append(_shard_group(placement_group, [dict(resources)] * replicas, len(nodes),
                                       nodes[shard % len(nodes)] if nodes else None))
            ray.get(groups[-1].ready(), timeout=max(0.0, deadline - time.monotonic()))
    except Exception as exc:
        for g in groups:
            remove_placement_group(g)
        if isinstance(exc, ray.exceptions.GetTimeoutError):
            raise ShardUnavailable(f"cannot place {shards} shard(s) × {replicas} replica(s) of {resources} on "
                                   f"{len(nodes)} node(s) within {timeout:.0f} s") from None
        raise
    return groups


def _shard_group(placement_group: Any, bundles: list[dict], nodes: int, target: str | None) -> Any:
    """A shard's group: replicas strictly on distinct nodes when there are enough; a single replica placed
    on ``target`` when it can be (round-robin targets spread the shards; Ray's own load-based spreading
    depends on how fresh its view of the nodes is)."""
    if len(bundles) > 1:
        return placement_group(bundles, strategy="STRICT_SPREAD" if nodes >= len(bundles) else "SPREAD")
    try:  # a soft hint: elsewhere when the target is full or gone
        return placement_group(bundles, strategy="STRICT_PACK", _soft_target_node_id=target)
    except (TypeError, ValueError):  # a Ray without soft targets
        return placement_group(bundles, strategy="SPREAD")


class ReplicaSlot:
    """One (shard, replica) position and its current actor handle."""

    def __init__(self, actor_class: Any, shard: int, replica: int, path: str, group: Any,
                 resources: dict[str, float], create: dict[str, Any] | None, state: bytes | None) -> None:
        self.shard, self.replica, self.path = shard, replica, path
        self._actor_class = actor_class
        self._group, self._resources = group, dict(resources)
        self._lock = threading.Lock()
        self.healthy = True
        self.error: str | None = None  # why the last replacement could not start, if it could not
        self.handle = self._spawn(create, state)

    def _spawn(self, create: dict[str, Any] | None, state: bytes | None) -> Any:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        strategy = PlacementGroupSchedulingStrategy(placement_group=self._group,
                                                    placement_group_bundle_index=self.replica)
        return self._actor_class.options(
            num_cpus=self._resources.get("CPU", 0), memory=self._resources.get("memory"),
            scheduling_strategy=strategy, max_restarts=ACTOR_MAX_RESTARTS, max_task_retries=0,
            runtime_env=worker_runtime_env(),
        ).remote(self.path, self.shard, self.replica, create=create, state=state)

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        group = "write" if method in WRITE_METHODS else "read"
        return getattr(self.handle, method).options(concurrency_group=group).remote(*args, **kwargs)

    def recover(self, state: bytes | None, timeout: float) -> bool:
        """Make the slot's actor answer again: wait for Ray's restart, or start a replacement that reopens the
        directory.  Returns whether the slot is healthy (never raises for a dead actor)."""
        ray = require_ray()
        from ray.exceptions import ActorDiedError, GetTimeoutError, RayActorError

        with self._lock:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    ray.get(self.handle.ping.remote(), timeout=max(0.1, deadline - time.monotonic()))
                    self.healthy, self.error = True, None
                    return True
                except ActorDiedError as exc:
                    if exc.actor_init_failed:  # it cannot open its directory: starting another will not help
                        self.error = str(getattr(exc, "error_msg", exc)).strip().splitlines()[-1][:500]
                        LOG.error("shard %d replica %d cannot start: %s", self.shard, self.replica, self.error)
                        break
                    LOG.warning("shard %d replica %d is dead; starting a replacement", self.shard, self.replica)
                    ray.kill(self.handle, no_restart=True)
                    self.handle = self._spawn(None, state)
                except (RayActorError, GetTimeoutError):  # restarting, or not up yet: ask again
                    time.sleep(0.1)
            self.healthy = False
            return False

    def stop(self) -> None:
        ray = require_ray()
        try:
            ray.kill(self.handle, no_restart=True)
        except Exception:  # already gone
            LOG.debug("replica actor of shard %d replica %d was already gone", self.shard, self.replica)
