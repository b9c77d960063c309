"""Fast-scan code layout: plain 4-bit PQ codes re-laid into blocks of 32 rows.

Input is the plain PQ layout, uint8 ``(n, B)`` with ``B = ceil(M / 2)``: byte ``j`` holds sub-quantiser
``2j`` in its low nibble and ``2j + 1`` in its high nibble (odd ``M``: the last high nibble is a phantom
sub-quantiser whose table is all zeros).  :func:`pack_fastscan` groups rows into blocks of
:data:`BLOCK` (the last block padded with zero codes) in one of two layouts, chosen so that one SIMD
load brings the bytes one instruction needs:

* ``"pshufb"`` — ``blocks[b, j, t]`` uint8 ``(nblocks, B, 32)``: for each code byte ``j`` the 32 rows'
  bytes are contiguous; byte position ``t = 2u + h`` (``u < 16``, ``h ∈ {0, 1}``) holds row
  ``32b + 16h + u``, so read as sixteen uint16 lanes the low bytes are rows 0–15 of the block and the
  high bytes rows 16–31 (the accumulation splits a uint16 lane into its two bytes).  Kernels: AVX2
  ``vpshufb`` (32 rows) and AVX-512BW (64 rows = two blocks per instruction).
* ``"vbmi"`` — ``blocks[b, c, r, i]`` uint8 ``(nblocks, C, 32, 4)`` with ``C = ceil(B / 4)``: code bytes
  ``4c..4c+3`` of row ``32b + r`` (sub-quantisers ``8c..8c+7``, zero-padded), i.e. row-major 4-byte
  chunks, so that ``vpdpbusd`` can add the four bytes of one dword — four sub-quantisers of one row.

The layout is a property of the packed array (3-D vs 4-D), so either runs on any CPU: the scans use the
SIMD kernel the host has, or a scalar twin with identical results.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .._cpu import HAS_VBMI

#: Rows per block.
BLOCK = 32
#: Layout :func:`pack_fastscan` produces by default: the fastest one this host runs natively
#: (``vpermb`` + ``vpdpbusd`` need two instructions per 64 lookups where ``vpshufb`` needs four).
DEFAULT_LAYOUT = "vbmi" if HAS_VBMI else "pshufb"
LAYOUTS = ("pshufb", "vbmi")


class PackedCodes(NamedTuple):
    """Codes re-laid for fast-scan: ``blocks`` of 32 rows (3-D ``"pshufb"`` or 4-D ``"vbmi"``), ``n`` real rows."""

    blocks: np.ndarray
    n: int

    @property
    def layout(self) -> str:
        """``"pshufb"`` or ``"vbmi"`` (from the number of dimensions of :attr:`blocks`)."""
        if self.blocks.ndim not in (3, 4):
            raise ValueError(f"packed fast-scan codes are 3-D (pshufb) or 4-D (vbmi), got shape {self.blocks.shape}")
        return LAYOUTS[self.blocks.ndim - 3]


def pack_fastscan(codes: np.ndarray, layout: str | None = None) -> PackedCodes:
    """Plain PQ4 codes uint8 (n, B) → :class:`PackedCodes` in ``layout`` (default :data:`DEFAULT_LAYOUT`).

    Blocks: ``"pshufb"`` (ceil(n / 32), B, 32); ``"vbmi"`` (ceil(n / 32), ceil(B / 4), 32, 4).
    """
    layout = DEFAULT_LAYOUT if layout is None else layout
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    if codes.ndim != 2:
        raise ValueError(f"codes must be 2-D (n, B), got shape {codes.shape}")
    n, nbytes = codes.shape
    nblocks = (n + BLOCK - 1) // BLOCK
    if layout == "pshufb":
        padded = np.zeros((nblocks * BLOCK, nbytes), dtype=np.uint8)
        padded[:n] = codes
        # row 32b + 16h + u → byte position 2u + h
        out = padded.reshape(nblocks, 2, 16, nbytes).transpose(0, 3, 2, 1)
        return PackedCodes(np.ascontiguousarray(out).reshape(nblocks, nbytes, BLOCK), n)
    if layout == "vbmi":
        nchunks = (nbytes + 3) // 4
        padded = np.zeros((nblocks * BLOCK, nchunks * 4), dtype=np.uint8)
        padded[:n, :nbytes] = codes
        return PackedCodes(np.ascontiguousarray(padded.reshape(nblocks, BLOCK, nchunks, 4).transpose(0, 2, 1, 3)), n)
    raise ValueError(f"unknown fast-scan layout {layout!r} (expected 'pshufb' or 'vbmi')")


def unpack_fastscan(packed: PackedCodes, nbytes: int | None = None, padding: bool = False) -> np.ndarray:
    """Inverse of :func:`pack_fastscan` → plain codes uint8 (n, nbytes) (``"vbmi"`` pads B to a multiple of 4).

    ``padding=True`` also returns the zero rows that fill the last block.
    """
    blocks = packed.blocks
    nblocks = blocks.shape[0]
    if packed.layout == "pshufb":
        width = blocks.shape[1]
        plain = blocks.reshape(nblocks, width, 16, 2).transpose(0, 3, 2, 1).reshape(nblocks * BLOCK, width)
    else:
        width = blocks.shape[1] * 4
        plain = blocks.transpose(0, 2, 1, 3).reshape(nblocks * BLOCK, width)
    rows = nblocks * BLOCK if padding else packed.n
    return np.ascontiguousarray(plain[:rows, : width if nbytes is None else nbytes])
