"""Quantiser families and their registry.

>>> from vqsearch import quantizers
>>> q = quantizers.get("sq8").fit(xb)          # doctest: +SKIP
>>> codes = q.encode(xb); xb_hat = q.decode(codes)  # doctest: +SKIP

Every module of this folder is imported here, and each family registers itself with
:func:`~vqsearch.quantizers.registry.register` (name, aliases and a stable codec id, written into
serialised state and segment metadata; never reuse one).  :func:`codec_ids` lists them; a family is
added by adding its module (plus its kernels and its test), nothing else.
"""

from __future__ import annotations

import importlib
import pkgutil

from .base import Quantizer, ScanTerms
from .registry import (
    available,
    by_codec_id,
    codec_ids,
    coerce_params,
    from_bytes,
    get,
    parse_spec,
    register,
    split_spec,
)


def _import_families() -> None:
    """Import every module of this package, so that each family's ``@register`` runs."""
    for module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        importlib.import_module(f"{__name__}.{module}")


_import_families()

__all__ = ["Quantizer", "ScanTerms", "available", "by_codec_id", "codec_ids", "coerce_params", "from_bytes", "get",
           "parse_spec", "register", "split_spec"]
