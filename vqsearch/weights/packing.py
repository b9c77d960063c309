"""Bit packing of element-format codes: k-bit integers and base-3 trits, row by row."""

from __future__ import annotations

import functools

import numpy as np

from ..errors import CorruptData


def pack_uint_rows(sym: np.ndarray, k: int) -> np.ndarray:
    """Pack k-bit values (uint8 (m, n), each < 2^k) into a little-endian bit stream per row.

    Value j of a row occupies bits [j·k, (j+1)·k) of the row's stream (LSB-first); rows are
    padded with zero values to a multiple of 8, so a row takes ``ceil(n/8)·k`` bytes.
    """
    m, n = sym.shape
    ng = -(-n // 8)
    v = np.zeros((m, ng * 8), dtype=np.uint64)
    v[:, :n] = sym
    v = v.reshape(m, ng, 8) << (np.arange(8, dtype=np.uint64) * np.uint64(k))
    word = np.bitwise_or.reduce(v, axis=2).astype("<u8")
    return np.ascontiguousarray(word.view(np.uint8).reshape(m, ng, 8)[:, :, :k].reshape(m, ng * k))


def unpack_uint_rows(packed: np.ndarray, k: int, n: int) -> np.ndarray:
    """Inverse of :func:`pack_uint_rows`: uint8 (m, ceil(n/8)·k) → uint8 (m, n)."""
    m = packed.shape[0]
    ng = -(-n // 8)
    if packed.shape[1] != ng * k:
        raise CorruptData(f"int{k} codes have {packed.shape[1]} bytes per row, expected {ng * k}")
    b = np.zeros((m, ng, 8), dtype=np.uint8)
    b[:, :, :k] = packed.reshape(m, ng, k)
    word = b.view("<u8").reshape(m, ng, 1)
    vals = (word >> (np.arange(8, dtype=np.uint64) * np.uint64(k))) & np.uint64((1 << k) - 1)
    return vals.reshape(m, ng * 8)[:, :n].astype(np.uint8)


_POW3 = np.array([1, 3, 9, 27, 81], dtype=np.uint8)


def pack_trits_rows(t: np.ndarray) -> np.ndarray:
    """Trits in {−1, 0, 1} (int8 (m, n)) → 5 per byte per row: byte = Σ_i 3^i·(t_{5j+i} + 1)."""
    m, n = t.shape
    nb = -(-n // 5)
    digits = np.ones((m, nb * 5), dtype=np.uint8)
    digits[:, :n] = (t + 1).astype(np.uint8)
    return (digits.reshape(m, nb, 5) @ _POW3).astype(np.uint8)


@functools.cache
def _trit_table() -> np.ndarray:
    v = np.arange(243)
    return np.stack([(v // 3**i) % 3 for i in range(5)], axis=1).astype(np.int8) - 1


def unpack_trits_rows(packed: np.ndarray, n: int) -> np.ndarray:
    m, nb = packed.shape
    if nb != -(-n // 5) or (packed.size and packed.max() > 242):
        raise CorruptData("ternary codes are malformed (wrong width or a byte > 242)")
    return _trit_table()[packed].reshape(m, nb * 5)[:, :n]
