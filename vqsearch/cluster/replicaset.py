"""Calls to the replicas of every shard: reads to one healthy replica each, writes to all of them.

Reads (search, lookups) go to one replica per shard, chosen round-robin among the healthy ones; when it
fails, the next replica of that shard gets the call, and the failed slot is recovered in the background.
Writes go to every replica of their shard and count as done only when every replica committed: a replica
that died is recovered first (a replacement reopens its directory) and the write is sent again with
``retry=True`` so that it is applied once.  Errors raised by the index itself (bad input, unknown ids)
come back as the same vqsearch exception, without the remote traceback.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..errors import VQSearchError
from .errors import ShardUnavailable
from .placement import ReplicaSlot
from .runtime import require_ray

LOG = logging.getLogger(__name__)

#: A write is sent at most this many times to one replica (the first try, then after each recovery).
WRITE_ATTEMPTS = 3


class ReplicaSet:
    """The slots of all shards (``slots[shard][replica]``) and the call patterns over them."""

    def __init__(self, slots: list[list[ReplicaSlot]], *, state: Callable[[], bytes | None],
                 timeout: float, recover_timeout: float) -> None:
        self.slots = slots
        self._state = state  # the collection's trained state, for replacements
        self.timeout = timeout
        self.recover_timeout = recover_timeout
        self._turn = [itertools.count(s) for s in range(len(slots))]
        self._recovering: dict[tuple[int, int], Any] = {}
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="vqsearch-recover")

    @property
    def shards(self) -> int:
        return len(self.slots)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        for slot in itertools.chain.from_iterable(self.slots):
            slot.stop()

    # ------------------------------------------------------------ health
    def recover_later(self, slot: ReplicaSlot) -> None:
        """Mark ``slot`` unhealthy and recover it in the background (once at a time)."""
        slot.healthy = False
        key = (slot.shard, slot.replica)
        job = self._recovering.get(key)
        if job is None or job.done():
            self._recovering[key] = self._pool.submit(slot.recover, self._state(), self.recover_timeout)

    def recover(self, slot: ReplicaSlot) -> bool:
        return slot.recover(self._state(), self.recover_timeout)

    def _read_order(self, shard: int) -> list[ReplicaSlot]:
        """Healthy replicas of ``shard`` to try, rotating.  Replicas being recovered are not waited for (a read
        fails fast instead); a shard without a healthy replica gets its recovery (re)started."""
        slots = self.slots[shard]
        start = next(self._turn[shard]) % len(slots)
        healthy = [s for s in slots[start:] + slots[:start] if s.healthy]
        if not healthy:
            for slot in slots:
                self.recover_later(slot)
        return healthy

    # ------------------------------------------------------------ reads
    def read(self, calls: dict[int, tuple[str, tuple, dict]], *, allow_missing: bool = False,
             timeout: float | None = None) -> tuple[dict[int, Any], list[int]]:
        """Run ``calls[shard] = (method, args, kwargs)`` on one replica of each shard, in parallel.

        Returns ``(results by shard, shards that no replica answered)``; without ``allow_missing`` a missing
        shard raises :class:`ShardUnavailable`.
        """
        ray = require_ray()
        from ray.exceptions import GetTimeoutError, RayActorError

        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        candidates = {s: self._read_order(s) for s in calls}
        pending: dict[Any, tuple[int, ReplicaSlot]] = {}

        def submit(shard: int) -> bool:
            if not candidates[shard]:
                return False
            slot = candidates[shard].pop(0)
            method, args, kwargs = calls[shard]
            pending[slot.call(method, *args, **kwargs)] = (shard, slot)
            return True

        results: dict[int, Any] = {}
        missing: list[int] = []
        for shard in calls:
            if not submit(shard):
                missing.append(shard)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            if not ready:  # out of time: the slow replicas count as unavailable
                for ref, (shard, slot) in pending.items():
                    LOG.warning("shard %d replica %d did not answer in time", shard, slot.replica)
                    _cancel(ref)
                    missing.append(shard)
                pending.clear()
                break
            ref = ready[0]
            shard, slot = pending.pop(ref)
            try:
                results[shard] = ray.get(ref)
            except (RayActorError, GetTimeoutError) as exc:
                LOG.warning("shard %d replica %d failed (%s); trying another replica", shard, slot.replica,
                            type(exc).__name__)
                self.recover_later(slot)
                if not submit(shard):
                    missing.append(shard)
            except Exception as exc:
                raise unwrap(exc) from None
        if missing and not allow_missing:
            missing.sort()
            raise ShardUnavailable(f"no replica of shard(s) {missing} answered; they are being restarted "
                                   f"(retry shortly, or search with allow_partial=True)", tuple(missing))
        return results, sorted(missing)

    # ------------------------------------------------------------ writes
    def write(self, calls: dict[int, tuple[str, tuple, dict]],
              timeout: float | None = None) -> tuple[dict[int, Any], dict[int, Exception]]:
        """Run ``calls[shard]`` on every replica of each shard; retried calls get ``retry=True``.

        Returns ``(a result per shard that every replica committed, the error of each shard that did not)``.
        A shard fails with the index's own error (bad input; no replica should then have committed) or with
        :class:`ShardUnavailable` when a replica stayed unreachable.
        """
        ray = require_ray()
        from ray.exceptions import GetTimeoutError, RayActorError

        limit = self.timeout if timeout is None else timeout
        attempts = {(s, r.replica): 0 for s in calls for r in self.slots[s]}
        pending: dict[Any, tuple[int, ReplicaSlot]] = {}
        failed: dict[int, Exception] = {}
        done: dict[int, Any] = {}

        def submit(shard: int, slot: ReplicaSlot, retry: bool) -> None:
            attempts[(shard, slot.replica)] += 1
            if not slot.healthy and not self.recover(slot):
                why = f" ({slot.error})" if slot.error else ""
                failed.setdefault(shard, ShardUnavailable(
                    f"shard {shard} replica {slot.replica} is unavailable{why}; the write was not acknowledged",
                    (shard,)))
                return
            method, args, kwargs = calls[shard]
            kwargs = dict(kwargs, retry=True) if retry else kwargs
            pending[slot.call(method, *args, **kwargs)] = (shard, slot)

        for shard in calls:
            for slot in self.slots[shard]:
                submit(shard, slot, retry=False)
        deadline = time.monotonic() + limit
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                for shard, slot in pending.values():
                    failed.setdefault(shard, ShardUnavailable(
                        f"shard {shard} replica {slot.replica} did not commit within {limit:.0f} s", (shard,)))
                pending.clear()
                break
            ref = ready[0]
            shard, slot = pending.pop(ref)
            try:
                result = ray.get(ref)
                done.setdefault(shard, result)
            except (RayActorError, GetTimeoutError) as exc:
                LOG.warning("shard %d replica %d failed during a write (%s); recovering it", shard, slot.replica,
                            type(exc).__name__)
                slot.healthy = False
                if attempts[(shard, slot.replica)] < WRITE_ATTEMPTS:
                    submit(shard, slot, retry=True)
                else:
                    failed.setdefault(shard, ShardUnavailable(
                        f"shard {shard} replica {slot.replica} failed {WRITE_ATTEMPTS} times", (shard,)))
            except Exception as exc:
                failed.setdefault(shard, unwrap(exc))
        return {s: r for s, r in done.items() if s not in failed}, failed


def _cancel(ref: Any) -> None:
    try:
        require_ray().cancel(ref)
    except Exception:  # not cancellable (already done, or an actor task Ray cannot interrupt): let it finish
        LOG.debug("could not cancel a slow call", exc_info=True)


def unwrap(exc: Exception) -> Exception:
    """The vqsearch error behind a Ray task error (without the remote traceback), else ``exc`` itself."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, VQSearchError):
        return cause
    return exc
