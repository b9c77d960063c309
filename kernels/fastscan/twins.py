"""Scalar twins of the SIMD block kernels: plain numba, the same arguments, identical outputs.

They run wherever the compile target lacks a kernel's instruction set, and the tests compare every SIMD
kernel the host runs against its twin.  Arguments follow the block-kernel contract of
:mod:`.block_kernels`: byte offsets into the flat uint8 tables (``lut``, as laid out by
:func:`~.block_kernels.expand_luts`) and packed codes, the number of steps (``blocks.shape[1]``), and per
query a minimum sum; outputs are the sums of each row and a bit mask of the rows reaching the minimum.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, inline="always")
def _pshufb_rows(width, lut, lut_off, lut_stride, codes, code_off, code_off2, nsteps, min_sums, sums, masks):
    flat_lut = lut.reshape(-1)
    flat_codes = codes.reshape(-1)
    for t in range(min_sums.shape[0]):
        base = lut_off + t * lut_stride
        mask = np.int64(0)
        for half in range(width // 32):
            block_off = code_off if half == 0 else code_off2
            for pos in range(32):
                s = 0
                for j in range(nsteps):
                    c = flat_codes[block_off + 32 * j + pos]
                    s += flat_lut[base + 128 * j + (c & 15)] + flat_lut[base + 128 * j + 64 + (c >> 4)]
                row = 32 * half + 16 * (pos & 1) + (pos >> 1)  # byte 2u + h holds row 16h + u
                sums[t, row] = s
                if s >= min_sums[t]:
                    mask |= np.int64(1) << row
        masks[t] = mask


@njit(cache=True, nogil=True)
def avx2_twin(lut, lut_off, lut_stride, codes, code_off, code_off2, nsteps, min_sums, sums, masks):
    """Twin of the ``"avx2"`` kernel: one pshufb-layout block (32 rows)."""
    _pshufb_rows(32, lut, lut_off, lut_stride, codes, code_off, code_off2, nsteps, min_sums, sums, masks)


@njit(cache=True, nogil=True)
def avx512_twin(lut, lut_off, lut_stride, codes, code_off, code_off2, nsteps, min_sums, sums, masks):
    """Twin of the ``"avx512"`` kernel: two pshufb-layout blocks (64 rows) at ``code_off`` and ``code_off2``."""
    _pshufb_rows(64, lut, lut_off, lut_stride, codes, code_off, code_off2, nsteps, min_sums, sums, masks)


@njit(cache=True, nogil=True)
def vbmi_twin(lut, lut_off, lut_stride, codes, code_off, code_off2, nsteps, min_sums, sums, masks):
    """Twin of the ``"vbmi"`` kernel: one vbmi-layout block (32 rows)."""
    flat_lut = lut.reshape(-1)
    flat_codes = codes.reshape(-1)
    for t in range(min_sums.shape[0]):
        base = lut_off + t * lut_stride
        mask = np.int64(0)
        for row in range(32):
            s = 0
            for j in range(nsteps):
                for i in range(4):
                    c = flat_codes[code_off + 128 * j + 4 * row + i]
                    table = base + 128 * j + 16 * i  # low nibbles' table; the high nibbles' is 64 bytes on
                    s += flat_lut[table + (c & 15)] + flat_lut[table + 64 + (c >> 4)]
            sums[t, row] = s
            if s >= min_sums[t]:
                mask |= np.int64(1) << row
        masks[t] = mask


TWINS = {"avx2": avx2_twin, "avx512": avx512_twin, "vbmi": vbmi_twin}
