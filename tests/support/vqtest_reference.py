"""Plain numpy / pure-Python references for the numba kernels (independent of the code under test).

Each function states which kernel it mirrors.  They favour obviousness over speed: unpacked
bit matrices, explicit loops, float64 accumulation.
"""

from __future__ import annotations

import numpy as np


# ------------------------------------------------------------------ bits / popcount
def unpack(packed: np.ndarray, dim: int) -> np.ndarray:
    """np.packbits rows → (n, dim) int64 0/1 bits (big bit order)."""
    return np.unpackbits(packed, axis=1, count=dim).astype(np.int64)


def hamming_ref(bits_a: np.ndarray, bits_b: np.ndarray) -> np.ndarray:
    """kernels.popcount.hamming_u64, on unpacked 0/1 matrices: number of differing positions."""
    return (bits_a[:, None, :] != bits_b[None, :, :]).sum(axis=2)


def ternary_dot_ref(ta: np.ndarray, tb: np.ndarray) -> np.ndarray:
    """kernels.popcount.ternary_dot_u64, on unpacked {-1, 0, 1} matrices: integer dot products."""
    return ta.astype(np.int64) @ tb.astype(np.int64).T


def ternary_dot_popcount_ref(pa, na_, pb, nb_) -> np.ndarray:
    """The 4-popcount formula of quantizers.md §4.1 on packed uint8 planes, via np.bitwise_count."""

    def pc(x, y):
        return np.bitwise_count(x[:, None, :] & y[None, :, :]).astype(np.int64).sum(axis=2)

    return pc(pa, pb) + pc(na_, nb_) - pc(pa, nb_) - pc(na_, pb)


def byte_luts_ref(q: np.ndarray, nbytes: int) -> np.ndarray:
    """kernels.popcount.byte_luts: T[r, j, v] = Σ_k bit_{7-k}(v) q[r, 8j+k], via a (256, 8) bit matrix."""
    nq, dim = q.shape
    qp = np.zeros((nq, nbytes * 8), dtype=np.float64)
    qp[:, :dim] = q
    bits = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).astype(np.float64)  # (256, 8)
    return qp.reshape(nq, nbytes, 8) @ bits.T


# ------------------------------------------------------------------------ ADC scans
def adc_scan_ref(lut: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """kernels.pq.adc_scan8/4 on unpacked indices idx (n, m): Σ_p lut[:, p, idx[:, p]] in float64."""
    m = lut.shape[1]
    gathered = lut[:, np.arange(m)[None, :], idx[:, :m]]  # (nq, n, m)
    return gathered.astype(np.float64).sum(axis=2)


def pq_distances_ref(y: np.ndarray, cent: np.ndarray) -> np.ndarray:
    """Brute-force ‖y_p − C_p[k]‖² in float64 (n, M, K) (what kernels.pq.pq_assign minimises)."""
    m, _, dsub = cent.shape
    ys = y.reshape(len(y), m, dsub).astype(np.float64)
    return ((ys[:, :, None, :] - cent[None].astype(np.float64)) ** 2).sum(axis=3)


def unpack_nibbles(codes: np.ndarray, m: int) -> np.ndarray:
    """4-bit codes → (n, m) indices: position 2j is the low nibble of byte j, 2j+1 the high one."""
    out = np.zeros((codes.shape[0], m), dtype=np.int64)
    for p in range(m):
        byte = codes[:, p // 2].astype(np.int64)
        out[:, p] = (byte >> 4) if p % 2 else (byte & 15)
    return out


# --------------------------------------------------------------------------- scalar
def sq_encode_ref(x: np.ndarray, lo: np.ndarray, inv: np.ndarray, levels: int) -> np.ndarray:
    """kernels.scalar.sq_encode8/4 before packing: floor((x − lo)·inv + ½) clipped, float32 ops."""
    v = (x.astype(np.float32) - lo) * inv + np.float32(0.5)
    return np.clip(np.floor(v), 0, levels - 1).astype(np.int64)


def sq_decode_ref(levels_: np.ndarray, lo: np.ndarray, step: np.ndarray) -> np.ndarray:
    """kernels.scalar.sq_decode8/4 after unpacking: level·step + lo in float32."""
    return levels_.astype(np.float32) * step + lo


def pack_nibbles_ref(idx: np.ndarray) -> np.ndarray:
    """(n, m) values < 16 → (n, ceil(m/2)) bytes, pure Python: even position low nibble."""
    n, m = idx.shape
    out = np.zeros((n, (m + 1) // 2), dtype=np.uint8)
    for i in range(n):
        for p in range(m):
            out[i, p // 2] |= int(idx[i, p]) << (4 * (p % 2))
    return out


def column_sse_ref(x, lo, step, inv, levels) -> np.ndarray:
    """kernels.scalar.sq_column_sse: Σ_i (x − decode(encode(x)))² per column, float64."""
    k = sq_encode_ref(x, lo, inv, levels)
    err = sq_decode_ref(k, lo, step).astype(np.float64) - x
    return (err**2).sum(axis=0)


# -------------------------------------------------------------------------- ternary
def base3_pack_ref(t: np.ndarray) -> np.ndarray:
    """Pure-Python base-3 packing: byte j = Σ_i 3^i (t[5j+i] + 1), padding trits encode 0."""
    n, dim = t.shape
    nb = (dim + 4) // 5
    out = np.zeros((n, nb), dtype=np.uint8)
    for r in range(n):
        for j in range(nb):
            v = 0
            for i in range(5):
                c = 5 * j + i
                v += 3**i * ((int(t[r, c]) if c < dim else 0) + 1)
            out[r, j] = v
    return out


def topk_ternary_ref(x: np.ndarray, k: int) -> np.ndarray:
    """Ultra-Quantisation reference: the k largest |x_i| of each row get sign(x_i) (stable sort)."""
    t = np.zeros(x.shape, dtype=np.int64)
    for r in range(x.shape[0]):
        order = sorted(range(x.shape[1]), key=lambda i: -abs(float(x[r, i])))
        for i in order[:k]:
            t[r, i] = int(np.sign(x[r, i]))
    return t
