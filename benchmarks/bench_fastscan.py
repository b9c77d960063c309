"""Fast-scan kernels on this CPU: 4-bit PQ against FAISS ``IndexPQFastScan``, and the binary scan's two kernels.

**PQ.**  Trains FAISS PQ96x4fs (384-d inner product, bbs = 32) on the Debian-MiniLM base (or seeded random
unit vectors when the shared data is absent), builds our codes and lookup tables from the *same* FAISS
codebooks, and times a top-10 search of every query over all rows, with 2 threads and with 1 (best of
``REPEAT`` after a warm-up).  Our time includes building and quantising the tables, as FAISS's does.
Kernels: :mod:`vqsearch.kernels.fastscan` with every kernel set this CPU runs, its scalar twins and the
float-table scan :func:`~vqsearch.kernels.scan.lut_scan_topk` (the last two on a query subset: they are
slow).  Recall is of our top-10 against FAISS's top-10.

**Binary.**  The first stage of a ``binary`` (RaBitQ) scan as :class:`vqsearch.index.scanners.BinaryScanner`
runs it, on the codes of a fitted ``binary`` quantiser: the fast-scan kernels over the sign nibbles
(confidence candidates for k = 10 within ``KEEP`` rows, or a top-``KEEP`` heap, then the exact estimate of
the kept rows) against the popcount cascade (a Hamming top-``4·KEEP`` pass, then the exact estimate
picks ``KEEP``).  Batch time over every query (tables included) and single-query latency (serial kernels,
median), and the fraction of the exact top-10 neighbours among the kept rows (what rescoring can find).

Run::

    python benchmarks/bench_fastscan.py
    VQSEARCH_FASTSCAN_NQ=200 VQSEARCH_FASTSCAN_REPEAT=5 python benchmarks/bench_fastscan.py

Tuning notes behind the kernels' design are in ``benchmarks/RESULTS.md`` ("Fast-scan tuning").
"""

from __future__ import annotations

import os
import statistics
import time

import faiss
import numba
import numpy as np
from bench_common import banner, load_debian, table, timed
from vqsearch.kernels import fastscan as fs
from vqsearch.kernels.scan import (
    binary_cascade_topk,
    binary_cascade_topk_serial,
    binary_refine,
    binary_refine_serial,
    lut_scan_topk,
    lut_scan_topk_serial,
    sign_nibble_luts,
    transpose_sign_words,
)

from vqsearch import quantizers

D, M, NBITS, K = 384, 96, 4, 10
NQ = int(os.environ.get("VQSEARCH_FASTSCAN_NQ", 1000))
REPEAT = int(os.environ.get("VQSEARCH_FASTSCAN_REPEAT", 3))
TRAIN = int(os.environ.get("VQSEARCH_FASTSCAN_TRAIN", 20_000))
SLOW_NQ = 50  # queries for the scalar fallback and the float-table kernel
LATENCY_NQ = 200  # single queries timed for the latency column
KEEP = 120  # rows the binary scan keeps for rescoring: k = 10 at the default oversample 12
CONFIDENCE = 1.25  # RaBitQ interval half-width in error units, as the scanner uses
CASCADE_FACTOR = 4  # the popcount pass keeps this many rows per kept row, as the scanner does

KERNEL_NAMES = {"vbmi": ("fast-scan vbmi (AVX-512 VBMI+VNNI vpermb/vpdpbusd)", "vbmi"),
                "avx512": ("fast-scan pshufb (AVX-512BW, 64 rows)", "pshufb"),
                "avx2": ("fast-scan pshufb (AVX2, 32 rows)", "pshufb")}


def load() -> tuple[np.ndarray, np.ndarray, np.ndarray | None, str]:
    data = load_debian()
    if data is not None:
        return data["xb"], data["xq"][:NQ], data["gt"][:NQ, :K], "debian-minilm"
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((60_000, D)).astype(np.float32)
    xq = rng.standard_normal((NQ, D)).astype(np.float32)
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)
    xq /= np.linalg.norm(xq, axis=1, keepdims=True)
    return xb, xq, None, "random unit vectors (seed 0)"


def check_nibble_order(xb: np.ndarray, codes: np.ndarray, centroids: np.ndarray) -> None:
    """FAISS 4-bit codes put sub-quantiser 2j in the low nibble of byte j (our plain layout)."""
    sub = xb[:200].reshape(200, M, -1)
    nearest = ((sub[:, :, None, :] - centroids[None]) ** 2).sum(-1).argmin(-1)
    assert np.array_equal(nearest[:, 0::2], codes[:200] & 15), "low nibble is not sub-quantiser 2j"
    assert np.array_equal(nearest[:, 1::2], codes[:200] >> 4), "high nibble is not sub-quantiser 2j + 1"


def overlap(ours: np.ndarray, ref: np.ndarray) -> float:
    """Mean fraction of each row of ``ref`` found in the same row of ``ours``."""
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / len(b) for a, b in zip(ours, ref)]))


def flat_ranges(nq: int, n: int) -> np.ndarray:
    ranges = np.zeros((nq, 1, 2), np.int64)
    ranges[:, 0, 1] = n
    return ranges


# ------------------------------------------------------------------------------------ PQ
def measure_pq(threads, index, xq, n, centroids, codes, packed) -> list[list]:
    """Table rows for one thread count: FAISS, each fast-scan kernel set, the scalar twins, the float scan."""
    faiss.omp_set_num_threads(threads)
    numba.set_num_threads(threads)
    par = threads > 1
    nq = len(xq)
    ranges = flat_ranges(nq, n)
    (_, ref), t_faiss = timed(lambda: index.search(xq, K), repeat=REPEAT)
    out = [[threads, "FAISS IndexPQFastScan (PQ96x4fs)", 1e3 * t_faiss, n * nq / t_faiss / 1e6, 1.0, 1.0]]

    def ours(kernels, layout, q):
        tables = fs.ip_luts_u8(q, centroids, parallel=par)
        return fs.fastscan_topk(tables, packed[layout], ranges[:len(q)], K, parallel=par, kernels=kernels)

    def row(name, t, got, nsub):
        t_all = t * nq / nsub
        return [threads, name, 1e3 * t_all, n * nq / t_all / 1e6, t_faiss / t_all, overlap(got, ref[:nsub])]

    for set_name, kernels in fs.available_kernel_sets().items():
        if set_name == "scalar":
            continue
        name, layout = KERNEL_NAMES[set_name]
        (_, got), t = timed(lambda kernels=kernels, layout=layout: ours(kernels, layout, xq), repeat=REPEAT)
        out.append(row(name, t, got, nq))

    sub = xq[:SLOW_NQ]
    (_, got), t = timed(lambda: ours(fs.SCALAR, fs.DEFAULT_LAYOUT, sub), repeat=1)
    out.append(row(f"fast-scan scalar twins ({len(sub)} queries)", t, got, len(sub)))

    def float_scan():
        lut = fs.ip_luts(sub, centroids, parallel=par)
        tables = (lut[:, 0::2, None, :] + lut[:, 1::2, :, None]).reshape(len(sub), M // 2, 256)
        scan = lut_scan_topk if par else lut_scan_topk_serial
        e_f, e_b = np.zeros(0, np.float32), np.zeros(0, np.bool_)
        return scan(tables, codes, e_f, e_f, ranges[:len(sub)], np.zeros((len(sub), 1), np.float32), e_b, K)

    (_, got), t = timed(float_scan, repeat=1)
    out.append(row(f"float 256-entry LUT scan, scan.lut_scan_topk ({len(sub)} queries)", t, got, len(sub)))
    return out


def pq_part(xb: np.ndarray, xq: np.ndarray) -> None:
    n = xb.shape[0]
    t0 = time.perf_counter()
    index = faiss.IndexPQFastScan(D, M, NBITS, faiss.METRIC_INNER_PRODUCT)
    index.train(xb[np.random.default_rng(1).permutation(n)[:TRAIN]])
    index.add(xb)
    centroids = faiss.vector_to_array(index.pq.centroids).reshape(M, 1 << NBITS, D // M)
    codes = index.pq.compute_codes(xb)
    check_nibble_order(xb, codes, centroids)
    print(f"- faiss: bbs={index.bbs} train+add+codes {time.perf_counter() - t0:.1f}s")
    packed = {layout: fs.pack_fastscan(codes, layout) for layout in fs.LAYOUTS}
    rows_out = []
    for threads in (2, 1):
        rows_out += measure_pq(threads, index, xq, n, centroids, codes, packed)
    print()
    print("### 4-bit PQ fast-scan vs FAISS IndexPQFastScan")
    print()
    print(table(["threads", "kernel", f"ms / {len(xq)} queries", "M codes/s", "× FAISS", "recall@10 vs FAISS"],
                rows_out))


# -------------------------------------------------------------------------------- binary
class BinaryCase:
    """A fitted ``binary`` quantiser's codes and query state, laid out for both kernels as the scanner does."""

    def __init__(self, xb: np.ndarray, xq: np.ndarray) -> None:
        q = quantizers.get("binary").fit(xb)
        codes = q.encode(xb)
        self.nbytes = q.nbytes
        self.signs = np.ascontiguousarray(codes[:, : q.nbytes])
        self.n = codes.shape[0]
        self.qw = q.work_queries(xq)
        dim = self.qw.shape[1]
        r, rho = q.factors(codes)
        with np.errstate(invalid="ignore", divide="ignore"):
            self.factor = (np.where(rho > 0, r / rho, 0.0) / np.sqrt(dim)).astype(np.float32)
            self.error = np.where(rho > 0, r * np.sqrt(np.maximum(1 - rho * rho, 0)) / (rho * np.sqrt(dim)),
                                  0).astype(np.float32)
        self.level = (r * rho / np.float32(np.sqrt(dim))).astype(np.float32)
        self.qconst = (self.qw @ q.centroid).astype(np.float32)
        self.width = (CONFIDENCE * np.linalg.norm(self.qw, axis=1)).astype(np.float32)
        terms = fs.RowTerms(factor=self.factor, error=self.error)
        self.terms = terms._replace(bounds=fs.term_bounds(terms, self.n))
        self.packed = fs.pack_fastscan(self.signs)
        self.words_t = transpose_sign_words(codes, q.nbytes)
        nwords = (q.nbytes + 7) // 8
        qbytes = np.zeros((len(xq), nwords * 8), dtype=np.uint8)
        qbytes[:, : q.nbytes] = np.packbits(self.qw > 0, axis=1)
        self.qwords = qbytes.view("<u8")

    def fastscan(self, sel: slice, kernels: fs.KernelSet, confidence: bool, par: bool) -> np.ndarray:
        qw, qconst = self.qw[sel], self.qconst[sel]
        lut = sign_nibble_luts(qw, self.nbytes)
        tables = fs.quantize_luts(lut, parallel=par)
        ranges = flat_ranges(len(qw), self.n)
        bias = np.ascontiguousarray(qconst[:, None])
        if confidence:
            _, rows = fs.fastscan_candidates(tables, self.packed, ranges, K, KEEP, self.width[sel], self.terms,
                                             bias=bias, parallel=par, kernels=kernels)
        else:
            _, rows = fs.fastscan_topk(tables, self.packed, ranges, KEEP, bias=bias,
                                       terms=self.terms._replace(error=None), parallel=par, kernels=kernels)
        refine = binary_refine if par else binary_refine_serial
        _, rows, _ = refine(lut, self.signs, rows, qconst, np.zeros(0, np.float32), self.factor, qconst, self.level)
        return rows

    def cascade(self, sel: slice, par: bool) -> np.ndarray:
        qw, qconst = self.qw[sel], self.qconst[sel]
        kernel = binary_cascade_topk if par else binary_cascade_topk_serial
        _, rows, _ = kernel(qw, self.qwords[sel], self.words_t, self.nbytes, np.zeros(0, np.float32), self.factor,
                            qconst, flat_ranges(len(qw), self.n), np.zeros(0, np.bool_),
                            max(CASCADE_FACTOR * KEEP, 64), KEEP, qconst, self.level)
        return rows


def binary_part(xb: np.ndarray, xq: np.ndarray, gt: np.ndarray | None) -> None:
    case = BinaryCase(xb, xq)
    nq = len(xq)
    exact = gt if gt is not None else np.argsort(-(xq @ xb.T), axis=1)[:, :K]
    paths = []
    for set_name, kernels in fs.available_kernel_sets().items():
        if set_name != "scalar":
            paths.append((f"fast-scan {set_name}, confidence k={K} keep={KEEP}",
                          lambda s, p, kernels=kernels: case.fastscan(s, kernels, True, p)))
            paths.append((f"fast-scan {set_name}, top-{KEEP}", lambda s, p, kernels=kernels: case.fastscan(
                s, kernels, False, p)))
    paths.append((f"popcount cascade, Hamming top-{CASCADE_FACTOR * KEEP} → {KEEP}", case.cascade))
    rows_out = []
    for name, run in paths:
        row = [name]
        for threads in (2, 1):
            numba.set_num_threads(threads)
            rows, t = timed(lambda run=run, par=threads > 1: run(slice(None), par), repeat=REPEAT)
            row += [1e3 * t, nq / t]
        run(slice(0, 1), False)  # warm the serial kernels
        lat = []
        for i in range(min(LATENCY_NQ, nq)):
            t0 = time.perf_counter()
            run(slice(i, i + 1), False)
            lat.append(time.perf_counter() - t0)
        row += [1e3 * statistics.median(lat), overlap(rows, exact)]
        rows_out.append(row)
    print()
    print(f"### Binary scan kernels: fast-scan vs popcount cascade ({case.n:,} × {8 * case.nbytes}-bit codes)")
    print()
    print(table(["first stage", f"ms / {nq} queries (2 threads)", "QPS (2 threads)", f"ms / {nq} (1 thread)",
                 "QPS (1 thread)", "ms / single query (p50)", f"exact top-{K} among kept"], rows_out))


def main() -> None:
    banner("Fast-scan kernels: 4-bit PQ vs FAISS IndexPQFastScan; binary scan kernels")
    xb, xq, gt, source = load()
    print(f"- data: {source}, n={xb.shape[0]:,} d={D} queries={len(xq)}, top-{K}")
    print(f"- CPU: avx2={fs.HAS_AVX2} avx512bw={fs.HAS_AVX512} avx512vbmi+vnni={fs.HAS_VBMI}; kernel sets: "
          f"{', '.join(fs.available_kernel_sets())}")
    pq_part(xb, xq)
    binary_part(xb, xq, gt)


if __name__ == "__main__":
    main()
