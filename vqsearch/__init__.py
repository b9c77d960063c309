"""vqsearch: vector-quantised embedding search and model-weight compression."""

from __future__ import annotations

from . import errors, eval, parallel, quantizers
from .errors import VQSearchError
from .index import EncodedVectors, Index, IndexConfig, IVFConfig
from .parallel import get_num_threads, set_num_threads

__version__ = "0.1.0"

__all__ = ["Client", "EncodedVectors", "IVFConfig", "Index", "IndexConfig", "VQSearchError", "__version__", "errors",
           "eval", "get_num_threads", "parallel", "quantizers", "set_num_threads"]


def __getattr__(name: str) -> object:
    """``vqsearch.Client`` is imported on first use (httpx is not needed by the local index)."""
    if name == "Client":
        from .client import Client

        return Client
    raise AttributeError(f"module 'vqsearch' has no attribute {name!r}")
