"""Quantiser families and their registry.

>>> from vqsearch import quantizers
>>> q = quantizers.get("sq8").fit(xb)          # doctest: +SKIP
>>> codes = q.encode(xb); xb_hat = q.decode(codes)  # doctest: +SKIP

Stable codec ids (written into serialised state and segment metadata; never reuse one):

==== =========== ==========================================
id   name        family
==== =========== ==========================================
1    sq8         scalar, 8 bits
2    sq4         scalar, 4 bits
3    binary      sign bits (1 bit/dim)
4    ternary     1.58-bit {-1, 0, +1}
5    pq          product quantiser
6    opq         PQ after a learned rotation
7    float16     IEEE half precision (lossless-ish reference)
10   e8p         QuIP# E8P codebook (2 bits) and RVQ (3, 4 bits)
11   e8          scaled E8 lattice in a ball, any rate
13   leech       Leech lattice Λ24
20   trellis     QTIP bitshift trellis
==== =========== ==========================================
"""

from __future__ import annotations

from . import binary, e8, float16, leech, pq, scalar, ternary, trellis  # noqa: F401  (registration side effects)
from .base import Quantizer
from .registry import available, by_codec_id, coerce_params, from_bytes, get, parse_spec, register, split_spec

__all__ = ["Quantizer", "available", "by_codec_id", "coerce_params", "from_bytes", "get", "parse_spec", "register",
           "split_spec"]
