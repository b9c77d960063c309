"""vqsearch: vector-quantised embedding search and model-weight compression."""

from __future__ import annotations

from . import errors, eval, parallel, quantizers
from .errors import VQSearchError
from .index import Index, IndexConfig, IVFConfig
from .parallel import get_num_threads, set_num_threads

__version__ = "0.1.0"

__all__ = ["IVFConfig", "Index", "IndexConfig", "VQSearchError", "__version__", "errors", "eval", "get_num_threads",
           "parallel", "quantizers", "set_num_threads"]
