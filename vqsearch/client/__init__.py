"""A Python client for a vqsearch server: ``vqsearch.Client(url, api_key=None)`` (see :mod:`.client`)."""

from .client import Client, RemoteCollection
from .transport import RetryPolicy

__all__ = ["Client", "RemoteCollection", "RetryPolicy"]
