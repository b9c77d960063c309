"""A Python client for a vqsearch server: ``vqsearch.Client(url, api_key=None)`` (see :mod:`.client`), and
:class:`AsyncClient`, the same calls for asyncio code (see :mod:`.aio`)."""

from .aio import AsyncClient, AsyncRemoteCollection
from .client import Client, RemoteCollection
from .transport import RetryPolicy

__all__ = ["AsyncClient", "AsyncRemoteCollection", "Client", "RemoteCollection", "RetryPolicy"]
