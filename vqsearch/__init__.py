"""vqsearch: vector-quantised embedding search and model-weight compression."""

from __future__ import annotations

from . import errors, quantizers
from .errors import VQSearchError

__version__ = "0.1.0"

__all__ = ["VQSearchError", "__version__", "errors", "quantizers"]
