"""Search plans over quantised codes: flat and IVF scans, two-stage rescoring."""

from .index import DEFAULT_OVERSAMPLE, DEFAULT_RESCORE, DEFAULT_SCAN, Index, IndexConfig
from .ivf import IVFConfig
from .trained_state import EncodedVectors

__all__ = ["DEFAULT_OVERSAMPLE", "DEFAULT_RESCORE", "DEFAULT_SCAN", "EncodedVectors", "IVFConfig", "Index",
           "IndexConfig"]
