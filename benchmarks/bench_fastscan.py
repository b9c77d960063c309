"""4-bit PQ fast-scan against FAISS ``IndexPQFastScan`` on the same codebooks, codes and queries.

Trains FAISS PQ96x4fs (384-d inner product, bbs = 32) on the Debian-MiniLM base (or seeded random
unit vectors when the shared data is absent), builds our codes and lookup tables from the *same*
FAISS codebooks, and times a top-10 search of every query over all rows, with 2 threads and with 1
(best of ``REPEAT`` after a warm-up).  Our time includes building and quantising the tables, as
FAISS's does.  Kernels: :mod:`vqsearch.kernels.fastscan` in each layout / instruction set this CPU
runs, its scalar fallback and the float-table scan :func:`~vqsearch.kernels.scan.lut_scan_topk`
(the last two on a query subset: they are slow).  Recall is of our top-10 against FAISS's top-10.

Run::

    python benchmarks/bench_fastscan.py
    VQSEARCH_FASTSCAN_NQ=200 VQSEARCH_FASTSCAN_REPEAT=5 python benchmarks/bench_fastscan.py

Tuning notes (Debian-MiniLM, 1,000 queries × 60,179 rows, top-10, one thread, scan only, M codes/s;
znver5 box shared with other jobs, ±5 %):

* pshufb AVX2 (32 rows/call) by queries per code load 1/2/4/8: 860 / 981 / 1,047 / 866 (8 spills).
* pshufb AVX-512BW (64 rows/call) 1/2/4/8: 1,167 / 1,355 / 1,524 / 1,604; tables stored
  lane-broadcast instead of ``vbroadcasti32x4`` (a shuffle-port µop) → 1,700–1,820.  AVX2 gains nothing.
* unrolling the code-byte loop ×2: no change on either.
* integer threshold + bit mask from the SIMD kernel vs scoring every row in float: 2.9× (1,521 vs 528).
* top-k heap on integer sums instead of floats: no measurable change; a buffer compacted with
  ``np.partition`` instead of the heap: slower (k = 10: 21 → 28 ms, k = 100: 52 → 65 ms).
* ``vpavgb`` pair averaging (6 instead of 8 ops per code byte, but ~7-bit tables): +17 % in a
  kernel micro-benchmark; not used, it doubles the error bound.
* vbmi layout (``vpermb`` + ``vpdpbusd``): kernel micro-benchmark 3.6–3.7 G row-queries/s vs
  1.8–2.0 for pshufb AVX-512; whole scan 2,700–2,850.  Queries per load 1/2/4/8 in the micro-benchmark:
  2,323 / 3,019 / 3,645 / 3,711; an 8-byte-chunk variant with ``vpermi2b`` (128-byte tables): 2,763 at
  2 queries, spills at 4.
* row tiles of 256 KiB shared by 4 query groups: +2 %.  Dynamic prange chunks
  (``set_parallel_chunksize``): noisy, and the function can no longer be cached.
"""

from __future__ import annotations

import os
import time

import faiss
import numba
import numpy as np
from bench_common import banner, load_debian, table, timed
from vqsearch.kernels import fastscan as fs
from vqsearch.kernels.scan import lut_scan_topk, lut_scan_topk_serial

D, M, NBITS, K = 384, 96, 4, 10
NQ = int(os.environ.get("VQSEARCH_FASTSCAN_NQ", 1000))
REPEAT = int(os.environ.get("VQSEARCH_FASTSCAN_REPEAT", 3))
TRAIN = int(os.environ.get("VQSEARCH_FASTSCAN_TRAIN", 20_000))
SLOW_NQ = 50  # queries for the scalar fallback and the float-table kernel


def load() -> tuple[np.ndarray, np.ndarray, str]:
    data = load_debian()
    if data is not None:
        return data["xb"], data["xq"][:NQ], "debian-minilm"
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((60_000, D)).astype(np.float32)
    xq = rng.standard_normal((NQ, D)).astype(np.float32)
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)
    xq /= np.linalg.norm(xq, axis=1, keepdims=True)
    return xb, xq, "random unit vectors (seed 0)"


def check_nibble_order(xb: np.ndarray, codes: np.ndarray, centroids: np.ndarray) -> None:
    """FAISS 4-bit codes put sub-quantiser 2j in the low nibble of byte j (our plain layout)."""
    sub = xb[:200].reshape(200, M, -1)
    nearest = ((sub[:, :, None, :] - centroids[None]) ** 2).sum(-1).argmin(-1)
    assert np.array_equal(nearest[:, 0::2], codes[:200] & 15), "low nibble is not sub-quantiser 2j"
    assert np.array_equal(nearest[:, 1::2], codes[:200] >> 4), "high nibble is not sub-quantiser 2j + 1"


def recall(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / K for a, b in zip(ours, ref)]))


KERNELS = [("fast-scan vbmi (AVX-512 VBMI+VNNI vpermb/vpdpbusd)", "vbmi", fs.HAS_VBMI, None),
           ("fast-scan pshufb (AVX-512BW, 64 rows)", "pshufb", fs.HAS_AVX512, None),
           ("fast-scan pshufb (AVX2, 32 rows)", "pshufb", fs.HAS_AVX2, False)]


def measure(threads, index, xq, n, centroids, codes, blocks) -> list[list]:
    """Table rows for one thread count: FAISS, each fast-scan kernel, the fallback and the float-table scan."""
    faiss.omp_set_num_threads(threads)
    numba.set_num_threads(threads)
    par = threads > 1
    nq = len(xq)
    bias = np.zeros((nq, 1), np.float32)
    ranges = np.zeros((nq, 1, 2), np.int64)
    ranges[:, 0, 1] = n
    e_f, e_b, no_bounds = np.zeros(0, np.float32), np.zeros(0, np.bool_), np.zeros((0, 4), np.float32)
    (_, ref), t_faiss = timed(lambda: index.search(xq, K), repeat=REPEAT)
    out = [[threads, "FAISS IndexPQFastScan (PQ96x4fs)", 1e3 * t_faiss, n * nq / t_faiss / 1e6, 1.0, 1.0]]

    def ours(topk, layout, q):
        lut_u8, scale, offset = fs.ip_luts_u8(q, centroids, parallel=par)
        return topk(lut_u8, scale, offset, bias[:len(q)], blocks[layout], n, ranges[:len(q)], e_b, e_f, e_f, no_bounds,
                    K)

    def row(name, t, got, nsub):
        t_all = t * nq / nsub
        return [threads, name, 1e3 * t_all, n * nq / t_all / 1e6, t_faiss / t_all, recall(got, ref[:nsub])]

    for name, layout, available, wide in KERNELS:
        if not available:
            continue
        if wide is None:
            topk = fs.fastscan_topk if par else fs.fastscan_topk_serial
        else:  # the AVX2 kernels alone, as on a CPU without AVX-512
            topk = fs._bind(fs._scan_impl, "_bench_fastscan_avx2" + ("" if par else "_serial"), True, wide=wide,
                            **({"parallel": True} if par else {}))
        (_, got), t = timed(lambda topk=topk, layout=layout: ours(topk, layout, xq), repeat=REPEAT)
        out.append(row(name, t, got, nq))

    sub = xq[:SLOW_NQ]
    fallback = fs.fastscan_topk_fallback if par else fs.fastscan_topk_fallback_serial
    (_, got), t = timed(lambda: ours(fallback, fs.DEFAULT_LAYOUT, sub), repeat=1)
    out.append(row(f"fast-scan scalar fallback ({len(sub)} queries)", t, got, len(sub)))

    def float_scan():
        lut = fs.ip_luts(sub, centroids, parallel=par)
        tables = (lut[:, 0::2, None, :] + lut[:, 1::2, :, None]).reshape(len(sub), M // 2, 256)
        scan = lut_scan_topk if par else lut_scan_topk_serial
        return scan(tables, codes, e_f, e_f, ranges[:len(sub)], bias[:len(sub)], e_b, K)

    (_, got), t = timed(float_scan, repeat=1)
    out.append(row(f"float 256-entry LUT scan, scan.lut_scan_topk ({len(sub)} queries)", t, got, len(sub)))
    return out


def main() -> None:
    banner("4-bit PQ fast-scan vs FAISS IndexPQFastScan")
    xb, xq, source = load()
    n, nq = xb.shape[0], xq.shape[0]
    print(f"- data: {source}, n={n:,} d={D} queries={nq}, PQ{M}x{NBITS} inner product, top-{K}")
    t0 = time.perf_counter()
    index = faiss.IndexPQFastScan(D, M, NBITS, faiss.METRIC_INNER_PRODUCT)
    index.train(xb[np.random.default_rng(1).permutation(n)[:TRAIN]])
    index.add(xb)
    centroids = faiss.vector_to_array(index.pq.centroids).reshape(M, 1 << NBITS, D // M)
    codes = index.pq.compute_codes(xb)
    check_nibble_order(xb, codes, centroids)
    print(f"- faiss: bbs={index.bbs} train+add+codes {time.perf_counter() - t0:.1f}s; CPU: avx2={fs.HAS_AVX2} "
          f"avx512bw={fs.HAS_AVX512} avx512vbmi+vnni={fs.HAS_VBMI}")
    blocks = {layout: fs.pack_fastscan(codes, layout) for layout in ("vbmi", "pshufb")}

    rows_out = []
    for threads in (2, 1):
        rows_out += measure(threads, index, xq, n, centroids, codes, blocks)
    print()
    print(table(["threads", "kernel", f"ms / {nq} queries", "M codes/s", "× FAISS", "recall@10 vs FAISS"],
                rows_out))


if __name__ == "__main__":
    main()
