"""Model-weight compression: safetensors in, Arrow shards out, decoded back on access.

>>> from vqsearch import weights                                                   # doctest: +SKIP
>>> weights.compress("model.safetensors", "out-dir", format="trellis:bits=2,L=12")  # doctest: +SKIP
>>> w = weights.load("out-dir")          # lazy mapping name -> np.ndarray (decoded on access)
>>> weights.info("out-dir")              # per tensor: format, bits, shape, SQNR, statistics
>>> weights.decompress("out-dir", "restored.safetensors", dtype="float16")
>>> weights.compress("model.safetensors", "ft", target_bits=2.0, calibration=texts,   # doctest: +SKIP
...                  finetune=True)          # tune scales, norms, biases and codes after rounding
>>> model = weights.load_transformers("llm-dir")   # a compressed causal LM as a transformers model  # doctest: +SKIP

Modules: :mod:`.formats` (weight formats, reshape rule, bit accounting), :mod:`.ldlq`
(Hessian-aware rounding), :mod:`.calibration` (torch statistics), :mod:`.allocate` (Fisher /
data-free bit allocation), :mod:`.shards` (Arrow shards, manifest, resume journal),
:mod:`.stats` (RMS, max/RMS, kurtosis, SQNR), :mod:`.reader` (lazy safetensors),
:mod:`.finetune` (fine-tuning after rounding; :mod:`.finetune_model` torch side,
:mod:`.finetune_codes` stored-format side), :mod:`.causal_lm` (decoder-only models).
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
from .causal_lm import load_transformers
from .finetune import FinetuneOptions
from .formats import WeightFormat, decode_tensor, encode_tensor, estimate_bits, parse_format

__all__ = [
    "DEFAULT_CANDIDATES",
    "DEFAULT_FORMAT",
    "CalibrationStats",
    "FinetuneOptions",
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
    "load_transformers",
    "parse_format",
]
