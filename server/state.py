"""Per-app state and the dependencies routers use to reach it.

Nothing here is global: :func:`vqsearch.server.create_app` builds one :class:`ServerState`
and stores it on ``app.state.vq``.  Blocking work never runs on the event loop:

* searches go through the :class:`~.batcher.SearchBatcher` (a fixed pool of
  ``settings.search_workers`` threads running batched index calls);
* other reads (get, stats, metadata of hits) through :meth:`ServerState.read`, a thread
  pool bounded by the same number;
* writes through :meth:`ServerState.write`, which first takes the collection's
  single-writer lock on the event loop (so waiting writers hold no thread) and then runs
  in a pool bounded by ``settings.write_threads``; a write that starts while searches
  are queued or running encodes with at most ``settings.ingest_workers`` numba threads
  (half the cores by default), so ingest cannot take every core from searches.  A write
  is acknowledged only after its atomic commit returns.

Searches never take the writer lock: the index's read path works on pinned snapshots.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, TypeVar

import anyio
import anyio.to_thread
from fastapi import Depends, Request

from .auth import KeyRing
from .batcher import SearchBatcher, SearchFn
from .errors import PathScrubber, default_scrubber
from .metrics import HttpMetrics
from .registry import Collection, CollectionRegistry
from .settings import Settings

T = TypeVar("T")


@dataclass
class ServerState:
    settings: Settings
    registry: CollectionRegistry
    keyring: KeyRing
    metrics: HttpMetrics = field(default_factory=HttpMetrics)
    read_limiter: anyio.CapacityLimiter = field(init=False)
    write_limiter: anyio.CapacityLimiter = field(init=False)
    admin_lock: anyio.Lock = field(default_factory=anyio.Lock)
    search_fn: SearchFn | None = None
    batcher: SearchBatcher = field(init=False)
    scrub: PathScrubber = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.read_limiter = anyio.CapacityLimiter(s.search_workers)
        self.write_limiter = anyio.CapacityLimiter(s.write_threads)
        if self.search_fn is None:
            from .search import run_batch
            self.search_fn = run_batch
        self.batcher = SearchBatcher(self.search_fn, workers=s.search_workers, max_batch=s.batch_max_queries,
                                     max_wait=s.batch_wait_ms / 1e3)
        self.scrub = default_scrubber(s.data_dir, s.models_dir)

    async def read(self, fn: Callable[..., T], *args: object) -> T:
        """Run a blocking read (get, stats, metadata) in the bounded read pool."""
        return await anyio.to_thread.run_sync(fn, *args, limiter=self.read_limiter)

    async def write(self, collection: Collection, fn: Callable[..., T], *args: object) -> T:
        """Run a blocking write on ``collection``, one at a time per collection."""
        async with collection.writer:
            self.registry.check_current(collection)  # dropped while this request waited: 404
            return await self.encode(fn, *args)

    async def encode(self, fn: Callable[..., T], *args: object) -> T:
        """Run blocking ingest work (embedding, encoding) in the write pool with capped numba threads."""
        return await anyio.to_thread.run_sync(capped_threads, self.ingest_threads(), fn, *args,
                                              limiter=self.write_limiter)

    def ingest_threads(self) -> int:
        """Encoding threads for a write starting now: ``settings.ingest_threads`` if set; otherwise every
        core while no search is queued or running (a bulk load on a quiet server), else half of them."""
        s = self.settings
        if s.ingest_threads:
            return s.ingest_threads
        if self.batcher.busy == 0 and self.batcher.queued_rows == 0:
            return os.cpu_count() or 1
        return s.ingest_workers

    async def admin(self, fn: Callable[..., T], *args: object) -> T:
        """Run a collection create/drop (serialised across the server)."""
        async with self.admin_lock:
            return await anyio.to_thread.run_sync(fn, *args, limiter=self.write_limiter)


def capped_threads(threads: int, fn: Callable[..., T], *args: object) -> T:
    """Call ``fn`` with numba's thread count for this thread capped at ``threads`` (numba's setting is
    per calling thread, so this never changes what searches on other threads use)."""
    import numba

    previous = numba.get_num_threads()
    numba.set_num_threads(min(threads, previous))
    try:
        return fn(*args)
    finally:
        numba.set_num_threads(previous)


def get_state(request: Request) -> ServerState:
    return request.app.state.vq


StateDep = Annotated[ServerState, Depends(get_state)]


def get_collection(name: str, state: StateDep) -> Collection:
    """The collection named in the path, or a 404 ``not_found``."""
    return state.registry.get(name)


CollectionDep = Annotated[Collection, Depends(get_collection)]
