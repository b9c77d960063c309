"""IEEE float16 storage: the near-lossless reference code (2 bytes per dimension)."""

from __future__ import annotations

import numpy as np

from ..errors import NonFiniteInput
from .base import Quantizer
from .registry import register


@register(aliases=("fp16", "f16"))
class Float16(Quantizer):
    name = "float16"
    codec_id = 7
    description = "IEEE half precision, 16 bits/dim (rescoring reference)"
    data_free = True

    def __init__(self, *, rht: bool = False, seed: int = 0) -> None:
        super().__init__(rht=rht, seed=seed)

    def _code_size(self) -> int:
        return 2 * self._d_work

    def _encode(self, xw: np.ndarray) -> np.ndarray:
        big = np.abs(xw) > np.finfo(np.float16).max
        if big.any():
            row = int(np.flatnonzero(big.any(axis=1))[0])
            raise NonFiniteInput(f"values beyond the float16 range (±65504) in row {row}; scale the vectors "
                                 f"or use another quantiser")
        return xw.astype("<f2").view(np.uint8)

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        return codes.view("<f2").astype(np.float32)
