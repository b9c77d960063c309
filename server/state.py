"""Per-app state and the dependencies routers use to reach it.

Nothing here is global: :func:`vqsearch.server.create_app` builds one :class:`ServerState`
and stores it on ``app.state.vq``.  Blocking work never runs on the event loop:
reads and searches go through :meth:`ServerState.read` (a thread pool bounded by
``settings.search_threads``), writes through :meth:`ServerState.write`, which first
takes the collection's single-writer lock on the event loop (so waiting writers hold
no thread) and then runs in a pool bounded by ``settings.write_threads``.  Searches
never take the writer lock: the index's read path works on pinned snapshots.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, TypeVar

import anyio
import anyio.to_thread
from fastapi import Depends, Request

from .auth import KeyRing
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

    def __post_init__(self) -> None:
        self.read_limiter = anyio.CapacityLimiter(self.settings.search_threads)
        self.write_limiter = anyio.CapacityLimiter(self.settings.write_threads)

    async def read(self, fn: Callable[..., T], *args: object) -> T:
        """Run a blocking read (search, get, stats) in the bounded read pool."""
        return await anyio.to_thread.run_sync(fn, *args, limiter=self.read_limiter)

    async def write(self, collection: Collection, fn: Callable[..., T], *args: object) -> T:
        """Run a blocking write on ``collection``, one at a time per collection."""
        async with collection.writer:
            self.registry.check_current(collection)  # dropped while this request waited: 404
            return await anyio.to_thread.run_sync(fn, *args, limiter=self.write_limiter)

    async def admin(self, fn: Callable[..., T], *args: object) -> T:
        """Run a collection create/drop (serialised across the server)."""
        async with self.admin_lock:
            return await anyio.to_thread.run_sync(fn, *args, limiter=self.write_limiter)


def get_state(request: Request) -> ServerState:
    return request.app.state.vq


StateDep = Annotated[ServerState, Depends(get_state)]


def get_collection(name: str, state: StateDep) -> Collection:
    """The collection named in the path, or a 404 ``not_found``."""
    return state.registry.get(name)


CollectionDep = Annotated[Collection, Depends(get_collection)]
