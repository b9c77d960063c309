"""Model-weight compression: safetensors in, Arrow shards out, decoded back on access.

>>> from vqsearch import weights                                                   # doctest: +SKIP
>>> weights.compress("model.safetensors", "out-dir", format="trellis:bits=2,L=12")  # doctest: +SKIP
>>> w = weights.load("out-dir")          # lazy mapping name -> np.ndarray (decoded on access)
>>> weights.info("out-dir")              # per tensor: format, bits, shape, SQNR, statistics
>>> weights.decompress("out-dir", "restored.safetensors", dtype="float16")

Modules: :mod:`.formats` (weight formats, reshape rule, bit accounting), :mod:`.ldlq`
(Hessian-aware rounding), :mod:`.calibration` (torch statistics), :mod:`.allocate` (Fisher /
data-free bit allocation), :mod:`.shards` (Arrow shards, manifest, resume journal),
:mod:`.stats` (RMS, max/RMS, kurtosis, SQNR), :mod:`.reader` (lazy safetensors).
"""

from __future__ import annotations

from .api import (
    DEFAULT_CANDIDATES,
    DEFAULT_FORMAT,
    ModelInfo,
    TensorInfo,
    WeightsArchive,
    compress,
    decompress,
    info,
    load,
)
from .calibration import CalibrationStats
from .formats import WeightFormat, decode_tensor, encode_tensor, estimate_bits, parse_format

__all__ = [
    "DEFAULT_CANDIDATES",
    "DEFAULT_FORMAT",
    "CalibrationStats",
    "ModelInfo",
    "TensorInfo",
    "WeightFormat",
    "WeightsArchive",
    "compress",
    "decode_tensor",
    "decompress",
    "encode_tensor",
    "estimate_bits",
    "info",
    "load",
    "parse_format",
]
