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


def ternary_dot_popcount_ref(pos_a, neg_a, pos_b, neg_b) -> np.ndarray:
    """The 4-popcount formula of quantizers.md §4.1 on packed uint8 planes, via np.bitwise_count."""

    def pc(x, y):
        return np.bitwise_count(x[:, None, :] & y[None, :, :]).astype(np.int64).sum(axis=2)

    return pc(pos_a, pos_b) + pc(neg_a, neg_b) - pc(pos_a, neg_b) - pc(neg_a, pos_b)


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


# ------------------------------------------------------------------------ fast-scan
def fastscan_pack_ref(codes: np.ndarray, layout: str) -> np.ndarray:
    """kernels.fastscan.pack_fastscan's blocks, placed byte by byte from the layout's definition."""
    n, nbytes = codes.shape
    nblocks = (n + 31) // 32
    if layout == "pshufb":  # blocks[b, j, 2u + h] = codes[32b + 16h + u, j]
        out = np.zeros((nblocks, nbytes, 32), dtype=np.uint8)
        for row in range(n):
            b, w = divmod(row, 32)
            h, u = divmod(w, 16)
            out[b, :, 2 * u + h] = codes[row]
        return out
    out = np.zeros((nblocks, (nbytes + 3) // 4, 32, 4), dtype=np.uint8)  # blocks[b, j // 4, r, j % 4]
    for row in range(n):
        b, r = divmod(row, 32)
        for j in range(nbytes):
            out[b, j // 4, r, j % 4] = codes[row, j]
    return out


def quantize_luts_ref(lut: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """kernels.fastscan.quantize_luts in float32 numpy: one scale Δ = max table width / L per query,
    entries round((t − min) / Δ) half up, offset Σ min (summed in order in float64)."""
    nq, m, _ = lut.shape
    top = min(255, 65535 // m)
    mins = lut.min(axis=2)
    width = (lut.max(axis=2) - mins).max(axis=1)
    out = np.zeros((nq, m + m % 2, 16), dtype=np.uint8)
    scale = np.zeros(nq, dtype=np.float32)
    for q in range(nq):
        if width[q] > 0:
            inv = np.float32(top) / width[q]
            out[q, :m] = np.floor((lut[q] - mins[q][:, None]) * inv + np.float32(0.5)).astype(np.uint8)
            scale[q] = width[q] / np.float32(top)
    offset = np.cumsum(mins.astype(np.float64), axis=1)[:, -1].astype(np.float32)
    return out, scale, offset


def fastscan_sums_ref(lut_u8: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """kernels.fastscan.fastscan_sums on plain codes: S[q, i] = Σ_p lut_u8[q, p, nibble p of row i] (int64)."""
    nib = unpack_nibbles(codes, lut_u8.shape[1])
    out = np.zeros((lut_u8.shape[0], codes.shape[0]), np.int64)
    for p in range(lut_u8.shape[1]):
        out += lut_u8[:, p, :][:, nib[:, p]]
    return out


def fastscan_scores_ref(lut_u8, scale, offset, codes, shift=None, factor=None) -> np.ndarray:
    """Fast-scan scores before the range bias, float32 in the kernel's order: (Δ·S + offset)·b + a."""
    s = scale[:, None] * fastscan_sums_ref(lut_u8, codes).astype(np.float32) + offset[:, None]
    if factor is not None:
        s = s * factor[None, :]
    if shift is not None:
        s = s + shift[None, :]
    return s.astype(np.float32)


def range_rows_ref(base: np.ndarray, ranges: np.ndarray, bias: np.ndarray, live, q: int):
    """(rows, float32 scores) a scan of query ``q`` sees: live rows of its ranges, scored ``base + bias``."""
    n = base.shape[1]
    rows, scores = [], []
    for r in range(ranges.shape[1]):
        idx = np.arange(max(ranges[q, r, 0], 0), min(ranges[q, r, 1], n))
        if live is not None:
            idx = idx[live[idx]]
        rows.append(idx)
        scores.append(base[q, idx] + bias[q, r])
    return np.concatenate(rows), np.concatenate(scores).astype(np.float32)


def term_bounds_ref(n: int, shift=None, factor=None, error=None) -> np.ndarray:
    """kernels.fastscan.term_bounds: per 32-row block (max a, min b, max b, max e), absent = 0 / 1 / 1 / 0."""
    out = np.zeros(((n + 31) // 32, 4), dtype=np.float32)
    for b in range(out.shape[0]):
        rows = slice(32 * b, min(32 * b + 32, n))
        out[b] = [shift[rows].max() if shift is not None else 0.0, factor[rows].min() if factor is not None else 1.0,
                  factor[rows].max() if factor is not None else 1.0, error[rows].max() if error is not None else 0.0]
    return out


# -------------------------------------------------------------------- scans / top-k
def topk_ref(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """kernels.topk.topk_rows: the k best of each row, best first, ties to the lower column (stable sort)."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


def kth_largest_ref(values: np.ndarray, k: int) -> np.float32:
    """kernels.topk.kth_largest: the k-th value of a descending sort."""
    return np.sort(values)[::-1][k - 1]


def lut_scan_scores_ref(tables, codes, row_a=None, row_b=None) -> np.ndarray:
    """kernels.scan.lut_scan_topk's scores before the bias: Σ_j T_q[j, c_ij]·b_i + a_i (float64), (nq, n)."""
    nbytes = tables.shape[1]
    s = np.stack([tables[q][np.arange(nbytes), codes[:, :nbytes]].astype(np.float64).sum(axis=1)
                  for q in range(tables.shape[0])])
    if row_b is not None:
        s = s * row_b
    if row_a is not None:
        s = s + row_a
    return s


def sign_nibble_luts_ref(qw: np.ndarray, nbytes: int) -> np.ndarray:
    """kernels.scan.sign_nibble_luts, pure Python: table p = 2j (low nibble of byte j) covers coordinates
    8j+4..8j+7, p = 2j+1 coordinates 8j..8j+3; entry v = Σ_s q_c (2·bit_{3−s}(v) − 1) over its coordinates."""
    nq, d = qw.shape
    out = np.zeros((nq, 2 * nbytes, 16), dtype=np.float64)
    for q in range(nq):
        for p in range(2 * nbytes):
            first = 8 * (p // 2) + (4 if p % 2 == 0 else 0)
            for v in range(16):
                for s in range(4):
                    c = first + s
                    if c < d:
                        out[q, p, v] += qw[q, c] * (2 * ((v >> (3 - s)) & 1) - 1)
    return out


def select_lists_ref(scores: np.ndarray, bias: np.ndarray, nprobe: int, lead: int) -> np.ndarray:
    """kernels.ivf.select_lists: the nprobe best lists of scores + bias (ties at the cut to lower ids); the
    ``lead`` best first, best first (ties: lower id), then the others in ascending id order."""
    total = scores + bias
    nq, nlist = total.shape
    kept, lead = min(nprobe, nlist), min(lead, nprobe, nlist)
    out = np.empty((nq, kept), dtype=np.int64)
    for q in range(nq):
        picked = np.argsort(-total[q], kind="stable")[:kept]  # ties to lower ids, best first
        best = picked[:lead]
        out[q] = np.concatenate([best, np.sort(picked[lead:])])
    return out


# ------------------------------------------------------------------------ transforms
def sylvester_hadamard_ref(m: int) -> np.ndarray:
    """The unnormalised Sylvester–Hadamard matrix H_m (m a power of two) by Kronecker products."""
    h = np.ones((1, 1))
    while h.shape[0] < m:
        h = np.block([[h, h], [h, -h]])
    return h


def fwht_ref(x: np.ndarray) -> np.ndarray:
    """kernels.hadamard.fwht_rows: every row times H_m (symmetric), in float64."""
    return x.astype(np.float64) @ sylvester_hadamard_ref(x.shape[1])
