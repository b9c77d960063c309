"""vqsearch: vector-quantised embedding search and model-weight compression."""

from __future__ import annotations

from . import errors, quantizers
from .errors import VQSearchError
from .index import EncodedVectors, Index, IndexConfig, IVFConfig

__version__ = "0.1.0"


def set_num_threads(n: int) -> None:
    """Threads used by the numba kernels (scan, encode, decode); default: all cores."""
    import numba

    numba.set_num_threads(int(n))


__all__ = ["EncodedVectors", "IVFConfig", "Index", "IndexConfig", "VQSearchError", "__version__", "errors",
           "quantizers", "set_num_threads"]
