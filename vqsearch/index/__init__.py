"""Search plans over quantised codes: flat and IVF scans, two-stage rescoring."""

from .index import DEFAULT_OVERSAMPLE, DEFAULT_RESCORE, DEFAULT_SCAN, Index, IndexConfig
from .ivf import IVFConfig

__all__ = ["DEFAULT_OVERSAMPLE", "DEFAULT_RESCORE", "DEFAULT_SCAN", "IVFConfig", "Index", "IndexConfig"]
