"""Top-k selection without sorting all scores: bounded min-heaps, larger score = better.

A heap of size k is a pair of arrays ``(vals, idx)`` whose root ``vals[0]`` is the
smallest kept score; a new score enters only if it beats the root, so scanning n
scores costs O(n) comparisons plus O(log k) per accepted item.  Empty slots hold
``-inf`` / ``-1``.  ``heap_to_sorted`` turns a heap into descending order.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._variants import variant


@njit(cache=True, nogil=True, inline="always")
def heap_replace_root(vals, idx, v, i):
    """Replace the root (smallest) with (v, i) and sift down; caller checks v > vals[0]."""
    k = vals.shape[0]
    pos = 0
    while True:
        child = 2 * pos + 1
        if child >= k:
            break
        right = child + 1
        if right < k and vals[right] < vals[child]:
            child = right
        if vals[child] >= v:
            break
        vals[pos] = vals[child]
        idx[pos] = idx[child]
        pos = child
    vals[pos] = v
    idx[pos] = i


@njit(cache=True, nogil=True)
def heap_to_sorted(vals, idx):
    """Sort a heap in place into descending score order (ties: smaller index first)."""
    order = np.argsort(-vals, kind="mergesort")
    v2 = vals[order]
    i2 = idx[order]
    vals[:] = v2
    idx[:] = i2


@njit(cache=True, nogil=True, parallel=True)
def topk_rows(scores, k):
    """Top-k of each row of a (nq, n) float32 matrix → (vals (nq, k) descending, cols (nq, k) int64)."""
    nq, n = scores.shape
    vals = np.full((nq, k), -np.inf, dtype=np.float32)
    cols = np.full((nq, k), -1, dtype=np.int64)
    for q in prange(nq):
        hv = vals[q]
        hi = cols[q]
        row = scores[q]
        for j in range(n):
            s = row[j]
            if s > hv[0]:
                heap_replace_root(hv, hi, s, j)
        heap_to_sorted(hv, hi)
    return vals, cols


@njit(cache=True, nogil=True, parallel=True)
def merge_topk(vals_a, ids_a, vals_b, ids_b, k):
    """Merge two per-query sorted candidate lists (e.g. from two segments) into the best k."""
    nq = vals_a.shape[0]
    out_v = np.full((nq, k), -np.inf, dtype=np.float32)
    out_i = np.full((nq, k), -1, dtype=np.int64)
    for q in prange(nq):
        a = 0
        b = 0
        na = vals_a.shape[1]
        nb = vals_b.shape[1]
        for t in range(k):
            take_a = a < na and (b >= nb or vals_a[q, a] >= vals_b[q, b])
            if take_a:
                out_v[q, t] = vals_a[q, a]
                out_i[q, t] = ids_a[q, a]
                a += 1
            elif b < nb:
                out_v[q, t] = vals_b[q, b]
                out_i[q, t] = ids_b[q, b]
                b += 1
    return out_v, out_i


@njit(cache=True, nogil=True, inline="always")
def dot_f32(x, y):
    """⟨x, y⟩ of two float32 vectors in float32 (callers compile with fastmath, so it vectorises)."""
    s = np.float32(0.0)
    for j in range(x.shape[0]):
        s += x[j] * y[j]
    return s


def _rows_dot_impl(a, ai, b, bi):
    m = ai.shape[0]
    out = np.empty(m, dtype=np.float32)
    for t in prange(m):
        out[t] = dot_f32(a[ai[t]], b[bi[t]])
    return out


#: out[t] = ⟨a[ai[t]], b[bi[t]]⟩ without materialising the gathered rows (rescoring of candidate lists).
rows_dot = variant(_rows_dot_impl, "rows_dot", parallel=True, fastmath=True)
rows_dot_serial = variant(_rows_dot_impl, "rows_dot_serial", fastmath=True)


@njit(cache=True, nogil=True)
def kth_largest(values, k):
    """The k-th largest of the float32 ``values`` (1 ≤ k ≤ n; not NaN), in linear time without sorting.

    Radix select on the order-preserving integer image of the floats, 11 + 11 + 10 bits: each pass is a
    histogram (no data-dependent branches, unlike quickselect, whose mispredicted comparisons dominate its
    cost; ``benchmarks/RESULTS.md``, "Kernel design measurements") and narrows the candidates to one bucket.
    """
    n = values.shape[0]
    keys = np.empty(n, dtype=np.uint32)
    bits = values.view(np.int32)
    for j in range(n):
        b = np.int64(bits[j])
        keys[j] = np.uint32((~b) & 0xFFFFFFFF) if b < 0 else np.uint32(b | 0x80000000)
    hist = np.empty(2048, dtype=np.int64)
    prefix = np.uint32(0)
    mask = np.uint32(0)
    remaining = k
    for shift, width in ((21, 11), (10, 11), (0, 10)):
        hist[:] = 0
        nb = 1 << width
        for j in range(n):
            key = keys[j]
            if key & mask == prefix:
                hist[(key >> np.uint32(shift)) & np.uint32(nb - 1)] += 1
        bucket = nb - 1
        while hist[bucket] < remaining:
            remaining -= hist[bucket]
            bucket -= 1
        prefix |= np.uint32(bucket << shift)
        mask |= np.uint32((nb - 1) << shift)
    b = np.int64(prefix)
    out = np.empty(1, dtype=np.int32)
    out[0] = np.int32(b & 0x7FFFFFFF) if b & 0x80000000 else np.int32(~b)
    return out.view(np.float32)[0]


@njit(cache=True, nogil=True)
def top_k_unordered(scores, k):
    """Indices of the ``k`` largest of the float32 ``scores`` (k ≤ n), in ascending index order; ties at the
    cut go to lower indices.  The cut is :func:`kth_largest`; the kept indices are compacted without
    branches (write always, advance when kept), as a data-dependent branch mispredicts about half the time."""
    n = scores.shape[0]
    cut = kth_largest(scores.copy(), k)
    take_eq = k
    for j in range(n):
        take_eq -= scores[j] > cut
    picked = np.empty(n + 1, dtype=np.int64)
    out = 0
    for j in range(n):
        v = scores[j]
        eq = (v == cut) & (take_eq > 0)
        take_eq -= eq
        picked[out] = j
        out += (v > cut) | eq
    return picked[:k]
