"""``vqsearch.client.AsyncClient``: the client for asyncio code.

Every method is the synchronous client's (:mod:`.client`), run in a worker thread with
:func:`asyncio.to_thread`, so requests, answers, errors and retries are exactly the same and the
event loop never blocks.  The price is a thread per call in flight (the loop's default executor
bounds them); that suits applications making tens of concurrent calls, which is what a
search server's clients do, and keeps one implementation of the protocol instead of two.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa

from ..index.results import SearchResult
from ..storage import ScrollPage, VersionInfo
from .client import Client, RemoteCollection

T = TypeVar("T")
_END = object()


async def _run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.to_thread(fn, *args, **kwargs)


class AsyncClient:
    """:class:`~vqsearch.Client` for asyncio: the same arguments, every method awaitable."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 60.0, **kwargs: Any) -> None:
        self.sync = Client(url, api_key, timeout, **kwargs)

    async def aclose(self) -> None:
        await _run(self.sync.close)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<vqsearch.AsyncClient {self.sync.url}>"

    async def create_collection(self, name: str, dim: int | None = None, **kwargs: Any) -> AsyncRemoteCollection:
        return AsyncRemoteCollection(await _run(self.sync.create_collection, name, dim, **kwargs))

    async def collection(self, name: str) -> AsyncRemoteCollection:
        return AsyncRemoteCollection(await _run(self.sync.collection, name))

    async def list_collections(self) -> list[dict[str, Any]]:
        return await _run(self.sync.list_collections)

    async def delete_collection(self, name: str) -> None:
        await _run(self.sync.delete_collection, name)

    async def set_alias(self, alias: str, collection: str) -> None:
        await _run(self.sync.set_alias, alias, collection)

    async def delete_alias(self, alias: str) -> None:
        await _run(self.sync.delete_alias, alias)

    async def list_aliases(self) -> dict[str, str]:
        return await _run(self.sync.list_aliases)


class AsyncRemoteCollection:
    """:class:`~vqsearch.client.RemoteCollection` for asyncio; ``scroll`` is an async iterator of pages."""

    def __init__(self, remote: RemoteCollection) -> None:
        self.sync = remote
        self.name, self.dim, self.metric, self.embedder = remote.name, remote.dim, remote.metric, remote.embedder

    def __repr__(self) -> str:
        return f"<vqsearch AsyncRemoteCollection {self.name!r}>"

    async def info(self) -> dict[str, Any]:
        return await _run(self.sync.info)

    async def add(self, vectors: Any = None, ids: object = None, metadata: Any = None, **kwargs: Any) -> np.ndarray:
        return await _run(self.sync.add, vectors, ids, metadata, **kwargs)

    async def upsert(self, vectors: Any = None, ids: object = None, metadata: Any = None, **kwargs: Any) -> np.ndarray:
        return await _run(self.sync.upsert, vectors, ids, metadata, **kwargs)

    async def delete(self, ids: object) -> None:
        await _run(self.sync.delete, ids)

    async def update_metadata(self, ids: object, values: Mapping[str, Any] | Any) -> None:
        await _run(self.sync.update_metadata, ids, values)

    async def search(self, queries: Any, k: int = 10, filter: dict | None = None,
                     include: Sequence[str] | None = None,
                     **kwargs: Any) -> tuple[np.ndarray, np.ndarray] | SearchResult:
        return await _run(self.sync.search, queries, k, filter, include, **kwargs)

    async def count(self, filter: dict | None = None) -> int:
        return await _run(self.sync.count, filter)

    async def get(self, ids: object, include: Sequence[str] | None = None, **kwargs: Any) -> pa.Table:
        return await _run(self.sync.get, ids, include, **kwargs)

    async def versions(self) -> list[VersionInfo]:
        return await _run(self.sync.versions)

    async def scroll(self, filter: dict | None = None, batch: int = 1000,
                     include: Sequence[str] | None = None) -> AsyncIterator[ScrollPage]:
        pages = self.sync.scroll(filter, batch, include)
        while True:
            page = await _run(next, pages, _END)
            if page is _END:
                return
            yield page
