"""Micro-batching of concurrent searches: many requests, one batched ``Index.search`` call.

Single-query searches spend most of their time in per-call set-up (thread-count changes,
lookup tables, snapshot pinning, numpy glue under the GIL); a batch pays it once.  So
requests do not call the index themselves: they queue their query rows here, and a small
fixed pool of worker threads (one per core by default) takes the queue in batches.

* **Grouping.** Only rows with the same index and the same search parameters (``k``,
  filter, ``oversample``, ``nprobe``) share a call; each group is a FIFO, and groups are
  served round-robin so one hot parameter set cannot starve the others.
* **Gathering.** When a worker is idle the first request is dispatched at once (no added
  latency on a quiet server).  While every worker is busy, requests accumulate and the next
  free worker takes up to ``max_batch`` rows of the oldest group.  With ``max_wait > 0`` a
  worker that finds a group smaller than ``max_batch`` while another batch is running waits
  at most that long for more rows.
* **Isolation.** A request is split into chunks of at most ``max_batch`` rows, so a large
  request cannot hold a worker for long and its chunks interleave with other requests.  A
  cancelled request (client gone, deadline passed) drops its chunks that have not started;
  a chunk already running finishes and its rows are discarded, without touching the other
  requests of that batch.  If a batched call fails, each request of the batch is retried
  alone, so an error reaches only the request that caused it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: (distances float32 (n, k), ids int64 (n, k)) for the rows of one chunk.
Result = tuple[np.ndarray, np.ndarray]
#: The blocking search a batch runs: (target, queries, params) → Result.
SearchFn = Callable[[Any, np.ndarray, "BatchParams"], Result]


@dataclass(frozen=True)
class BatchParams:
    """Parameters a batch shares.  ``filter_key`` is the filter's canonical JSON (``filter`` itself is a dict)."""

    k: int
    filter_key: str | None
    oversample: int | None
    nprobe: int | None
    filter: Any = field(default=None, compare=False, hash=False)


@dataclass(eq=False)
class _Chunk:
    rows: np.ndarray
    future: asyncio.Future[Result]
    deadline: float
    enqueued: float


class _Group:
    __slots__ = ("chunks", "rows", "target", "params")

    def __init__(self, target: Any, params: BatchParams) -> None:
        self.target = target
        self.params = params
        self.chunks: deque[_Chunk] = deque()
        self.rows = 0


class DeadlineExceeded(Exception):
    """The request's deadline passed before its chunk could start."""


class SearchBatcher:
    """Queue of search chunks served by ``workers`` threads in batches of at most ``max_batch`` rows.

    All methods except the worker body run on the event loop; no lock is needed for the queue.
    """

    def __init__(self, search: SearchFn, *, workers: int, max_batch: int, max_wait: float = 0.0,
                 thread_init: Callable[[], None] | None = None) -> None:
        if workers < 1 or max_batch < 1 or max_wait < 0:
            raise ValueError("workers and max_batch must be >= 1, max_wait >= 0")
        self._search = search
        self.workers = workers
        self.max_batch = max_batch
        self.max_wait = max_wait
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vq-search",
                                                           initializer=thread_init)
        self._groups: OrderedDict[Hashable, _Group] = OrderedDict()
        self._busy = 0
        self._waiting = False  # a gather timer is armed
        self.batches = 0  # calls made (for metrics and tests)
        self.batched_rows = 0
        self._closed = False

    # ------------------------------------------------------------ public
    @property
    def busy(self) -> int:
        return self._busy

    @property
    def queued_rows(self) -> int:
        return sum(g.rows for g in self._groups.values())

    async def search(self, target: Any, key: Hashable, queries: np.ndarray, params: BatchParams,
                     deadline: float) -> Result:
        """Search ``queries`` (float32 (n, dim)) on ``target``; rows of equal ``key`` may share a call.

        ``deadline`` is a ``time.monotonic()`` value: chunks not started by then fail with
        :class:`DeadlineExceeded`.  Cancelling the awaiting task drops the chunks not yet started.
        """
        if self._closed:
            raise RuntimeError("the search batcher is closed")
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        chunks = [_Chunk(queries[s:s + self.max_batch], loop.create_future(), deadline, now)
                  for s in range(0, queries.shape[0], self.max_batch)]
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group(target, params)
        for c in chunks:
            group.chunks.append(c)
            group.rows += c.rows.shape[0]
        self._dispatch()
        try:
            parts = [await c.future for c in chunks]
        finally:
            for c in chunks:  # cancelled or failed: chunks still queued are skipped at dispatch
                if not c.future.done():
                    c.future.cancel()
        if len(parts) == 1:
            return parts[0]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def close(self) -> None:
        """Fail queued chunks and stop the threads (running batches finish)."""
        self._closed = True
        for g in self._groups.values():
            for c in g.chunks:
                if not c.future.done():
                    c.future.set_exception(RuntimeError("the server is shutting down"))
        self._groups.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------ scheduling (event loop)
    def _take(self, group: _Group, now: float) -> list[_Chunk]:
        """Up to ``max_batch`` rows of live chunks from the front of ``group``."""
        taken: list[_Chunk] = []
        rows = 0
        while group.chunks:
            c = group.chunks[0]
            n = c.rows.shape[0]
            if c.future.done():  # cancelled by its request
                group.chunks.popleft()
                group.rows -= n
                continue
            if now > c.deadline:
                group.chunks.popleft()
                group.rows -= n
                c.future.set_exception(DeadlineExceeded())
                continue
            if taken and rows + n > self.max_batch:
                break
            group.chunks.popleft()
            group.rows -= n
            taken.append(c)
            rows += n
        return taken

    def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while self._busy < self.workers and self._groups:
            key, group = next(iter(self._groups.items()))
            if (self.max_wait > 0 and self._busy > 0 and group.rows < self.max_batch and not self._waiting
                    and time.monotonic() - group.chunks[0].enqueued < self.max_wait):
                self._waiting = True  # gather: another batch runs, so more rows are likely to come
                loop.call_later(self.max_wait, self._gathered)
                return
            taken = self._take(group, time.monotonic())
            if group.chunks:
                self._groups.move_to_end(key)  # round-robin between parameter groups
            else:
                del self._groups[key]
            if not taken:
                continue
            self._busy += 1
            self.batches += 1
            rows = sum(c.rows.shape[0] for c in taken)
            self.batched_rows += rows
            fut = loop.run_in_executor(self._pool, self._run, group.target, group.params, taken)
            fut.add_done_callback(lambda f, taken=taken: self._finished(f, taken))

    def _gathered(self) -> None:
        self._waiting = False
        self._dispatch()

    def _finished(self, fut: asyncio.Future[list[Result | BaseException]], taken: list[_Chunk]) -> None:
        self._busy -= 1
        try:
            results = fut.result()
        except BaseException as exc:  # the executor itself failed (shutdown): fail the whole batch
            results = [exc] * len(taken)
        for c, r in zip(taken, results):
            if c.future.done():
                continue  # its request was cancelled while the batch ran
            if isinstance(r, BaseException):
                c.future.set_exception(r)
            else:
                c.future.set_result(r)
        if not self._closed:
            self._dispatch()

    # ------------------------------------------------------------ worker thread
    def _run(self, target: Any, params: BatchParams, taken: list[_Chunk]) -> list[Result | BaseException]:
        rows = [c.rows for c in taken]
        xq = rows[0] if len(rows) == 1 else np.concatenate(rows)
        try:
            dist, ids = self._search(target, xq, params)
        except Exception as exc:
            if len(taken) == 1:
                return [exc]
            return [self._run_one(target, params, r) for r in rows]  # find whose rows fail
        out: list[Result | BaseException] = []
        s = 0
        for r in rows:
            out.append((dist[s:s + r.shape[0]], ids[s:s + r.shape[0]]))
            s += r.shape[0]
        return out

    def _run_one(self, target: Any, params: BatchParams, rows: np.ndarray) -> Result | BaseException:
        try:
            return self._search(target, rows, params)
        except Exception as exc:
            return exc

