"""Search plans over quantised codes: flat and IVF scans, two-stage rescoring (see :mod:`.index`)."""

from .config import DEFAULT_OVERSAMPLE, DEFAULT_RESCORE, DEFAULT_SCAN, PRESETS, IndexConfig
from .index import Index
from .ivf import IVFConfig
from .metric import METRICS, Metric, MetricLike, get_metric
from .results import SearchResult
from .trained_state import EncodedVectors
from .tuning import RecallWarning

__all__ = ["DEFAULT_OVERSAMPLE", "DEFAULT_RESCORE", "DEFAULT_SCAN", "METRICS", "PRESETS", "EncodedVectors", "IVFConfig",
           "Index", "IndexConfig", "Metric", "MetricLike", "RecallWarning", "SearchResult", "get_metric"]
