"""Model-weight compression: safetensors in, Arrow shards out, decoded back on access.

>>> from vqsearch import weights                                                   # doctest: +SKIP
>>> weights.compress("model.safetensors", "out-dir", format="trellis:bits=2")      # doctest: +SKIP
>>> w = weights.load("out-dir")          # lazy mapping name -> np.ndarray (decoded on access)
>>> w = weights.load("http://host:8000/v1/models/minilm", api_key=None)  # served: Range, SHA-256, cached
>>> weights.info("out-dir")              # per tensor: format, rounding, bits, shape, SQNR, statistics
>>> weights.decompress("out-dir", "restored.safetensors", dtype="float16")
>>> model = weights.load_sentence_transformer("out-dir")  # models extra: a ready SentenceTransformer
>>> weights.compress("model.safetensors", "ft", target_bits=2.0, calibration=texts,   # doctest: +SKIP
...                  finetune=True)          # tune scales, norms, biases and codes after rounding
>>> model = weights.load_transformers("llm-dir")   # a compressed causal LM as a transformers model  # doctest: +SKIP

Modules, top-down: :mod:`.compression` (``compress``: plan → encode → shards → manifest),
:mod:`.planning` (a format per tensor, bit allocation via :mod:`.allocate`), :mod:`.formats`
(the spec grammar and format registry), :mod:`.codec` (one tensor ↔ stored arrays; with
:mod:`.packing`, :mod:`.ldlq` Hessian-aware rounding, :mod:`.calibration` torch statistics,
:mod:`.stats`), :mod:`.shards` (Arrow records, shard files, resume journal), :mod:`.manifest`
(the commit point and its documented format, copied model files), :mod:`.archive` (reading:
``load``, ``update_tensors``), :mod:`.remote` (HTTP Range reads with a disk cache),
:mod:`.info`, :mod:`.safetensors_io` (source reading, ``decompress``), :mod:`.sentence_model`,
:mod:`.finetune` (fine-tuning after rounding; :mod:`.finetune_model` the torch side,
:mod:`.finetune_codes` the stored-format side), :mod:`.causal_lm` (decoder-only models:
calibration, ``load_transformers``).
"""

from __future__ import annotations

from .archive import Archive, WeightsArchive, load, update_tensors
from .calibration import CalibrationStats
from .causal_lm import load_transformers
from .codec import EncodedTensor, decode_tensor, encode_tensor, estimate_bits
from .compression import compress
from .finetune import FinetuneOptions
from .formats import WeightFormat, available, parse_format
from .info import ModelInfo, TensorInfo, info
from .planning import DEFAULT_CANDIDATES, DEFAULT_FORMAT
from .remote import RemoteArchive, RemoteError
from .safetensors_io import decompress
from .sentence_model import load_sentence_transformer

__all__ = [
    "DEFAULT_CANDIDATES",
    "DEFAULT_FORMAT",
    "Archive",
    "CalibrationStats",
    "EncodedTensor",
    "FinetuneOptions",
    "ModelInfo",
    "RemoteArchive",
    "RemoteError",
    "TensorInfo",
    "WeightFormat",
    "WeightsArchive",
    "available",
    "compress",
    "decode_tensor",
    "decompress",
    "encode_tensor",
    "estimate_bits",
    "info",
    "load",
    "load_sentence_transformer",
    "load_transformers",
    "parse_format",
    "update_tensors",
]
