"""Search quality and speed on the shared Debian-MiniLM set, against FAISS and hnswlib in the same run.

For every configuration: bytes/vector resident during search (everything the search touches),
build time, recall@10 (vs the exact top-10), label@10 (the query's package in the top 10),
QPS for one batch of all 1,000 queries (median of 5 runs), and p50/p99 latency of single queries.

Run::

    python benchmarks/search.py                      # all configurations
    python benchmarks/search.py --only vq            # only vqsearch rows (prefix match on the name)
    VQSEARCH_THREADS=2 python benchmarks/search.py

Then the kernel table: scan throughput of vqsearch kernels vs FAISS on the same codes.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import faiss
import hnswlib
import numpy as np
from bench_common import banner, load_debian, table

import vqsearch
from vqsearch.eval import label_at_k, recall_at_k
from vqsearch.index import scanners

THREADS = int(os.environ.get("VQSEARCH_THREADS", 2))
SINGLE_QUERIES = int(os.environ.get("VQSEARCH_SINGLE_QUERIES", 200))
K = 10

# name → Index.create keyword arguments (and per-search kwargs under "search").
VQ_CONFIGS: dict[str, dict] = {
    "vq preset=default": {"preset": "default"},
    "vq preset=default, IVF nlist=1024 nprobe=256": {"preset": "default", "ivf": {"nlist": 1024, "nprobe": 256}},
    "vq preset=default, popcount cascade scan": {"preset": "default", "popcount": True},
    "vq preset=compact": {"preset": "compact"},
    "vq preset=accurate": {"preset": "accurate"},
    "vq binary, no rescoring": {"rescore": None, "ivf": None},
    "vq pq:m=96,nbits=4 (4-bit LUT), no rescoring": {"scan": "pq:m=96,nbits=4", "rescore": None, "ivf": None},
}

# Rescoring curve: flat binary scan (oversample 10), residual rescoring codes at several rates.
# (leech:bits=3 is left out: its exact shape search encodes ~0.1 M values/s, ~4 minutes for this corpus.)
RESCORE_CURVE = [
    "pq:m=96,nbits=8", "e8p", "e8:bits=2,rht=true", "leech:bits=2,rht=true", "trellis:bits=2,L=12,rht=true",
    "e8p:bits=3,rht=true", "trellis:bits=3,L=12,rht=true",
    "sq4", "e8p:bits=4,rht=true", "trellis:bits=4,L=12,rht=true", "sq8",
]


#: Timed batch runs per configuration; the table reports the median.
BATCH_RUNS = 5


def measure(search: Callable[[np.ndarray], np.ndarray], xq: np.ndarray) -> dict[str, float]:
    """Batch QPS (median of ``BATCH_RUNS``, warm-up dropped) and single-query latency percentiles of
    ``search(xq) -> ids``."""
    search(xq)  # warm-up: numba compilation of both the batch (parallel) and the single-query (serial) kernels,
    search(xq[:1])  # page faults, segment caches
    times = []
    for _ in range(BATCH_RUNS):
        t0 = time.perf_counter()
        ids = search(xq)
        times.append(time.perf_counter() - t0)
    qps = len(xq) / float(np.median(times))
    lat = []
    for i in range(SINGLE_QUERIES):
        t = time.perf_counter()
        search(xq[i:i + 1])
        lat.append(time.perf_counter() - t)
    lat_ms = np.array(lat) * 1e3
    return {"ids": ids, "qps": qps, "p50": float(np.percentile(lat_ms, 50)), "p99": float(np.percentile(lat_ms, 99))}


def row(name: str, bpv: float, build_s: float, m: dict, gt: np.ndarray, labels: np.ndarray) -> list:
    return [name, bpv, build_s, recall_at_k(m["ids"], gt), label_at_k(m["ids"], labels), m["qps"], m["p50"], m["p99"]]


def run_vq(name: str, cfg: dict, xb: np.ndarray, xq: np.ndarray, gt, labels, workdir: Path) -> list:
    cfg = dict(cfg)
    search_kw = cfg.pop("search", {})
    # the popcount cascade is what CPUs without AVX-512 run for sign codes; measure it here too
    saved = scanners.BINARY_FASTSCAN
    scanners.BINARY_FASTSCAN = saved and not cfg.pop("popcount", False)
    try:
        t0 = time.perf_counter()
        idx = vqsearch.Index.create(workdir / name.replace(" ", "_").replace("→", "to"), dim=xb.shape[1],
                                    metric="cosine", **cfg)
        idx.add(xb)
        build = time.perf_counter() - t0
        bpv = idx.stats()["bytes_per_vector"]
        m = measure(lambda q: idx.search(q, k=K, **search_kw)[1], xq)
        idx.close()
    finally:
        scanners.BINARY_FASTSCAN = saved
    return row(name, bpv, build, m, gt, labels)


def run_faiss(xb, xq, gt, labels) -> tuple[list, dict]:
    d = xb.shape[1]
    rows, extra = [], {}

    def add(name, index, bpv, search):
        t0 = time.perf_counter()
        if not index.is_trained:
            index.train(xb)
        index.add(xb)
        build = time.perf_counter() - t0
        rows.append(row(name, bpv, build, measure(search, xq), gt, labels))

    flat = faiss.IndexFlatIP(d)
    add("faiss Flat (float32)", flat, 4 * d, lambda q: flat.search(q, K)[1])

    bits = np.packbits(xb > 0, axis=1)
    binf = faiss.IndexBinaryFlat(d)
    t0 = time.perf_counter()
    binf.add(bits)
    build = time.perf_counter() - t0

    def bin_refine(q):
        _, cand = binf.search(np.packbits(q > 0, axis=1), K * 10)
        s = np.einsum("qd,qkd->qk", q, xb[cand])
        return np.take_along_axis(cand, np.argsort(-s, axis=1)[:, :K], axis=1)

    rows.append(row("faiss BinaryFlat + float32 refine ×10", d / 8 + 4 * d, build, measure(bin_refine, xq), gt, labels))
    extra["binary_codes"] = bits

    pq = faiss.index_factory(d, "PQ96x4fs", faiss.METRIC_INNER_PRODUCT)
    ref = faiss.IndexRefineFlat(pq)
    ref.k_factor = 10
    add("faiss PQ96x4fs + float32 refine ×10", ref, 48 + 4 * d, lambda q: ref.search(q, K)[1])
    extra["pq_fastscan"] = pq

    ivfpq = faiss.index_factory(d, "IVF256,PQ96x4fs", faiss.METRIC_INNER_PRODUCT)
    ivfpq.nprobe = 24
    add("faiss IVF256,PQ96x4fs nprobe=24", ivfpq, 48 + 8, lambda q: ivfpq.search(q, K)[1])

    hnsw = faiss.IndexHNSWFlat(d, 16, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efSearch = 64
    add("faiss HNSW16 Flat ef=64", hnsw, 4 * d + 16 * 2 * 4, lambda q: hnsw.search(q, K)[1])
    return rows, extra


def run_hnswlib(xb, xq, gt, labels, target_recall: float) -> list:
    d = xb.shape[1]
    t0 = time.perf_counter()
    g = hnswlib.Index(space="ip", dim=d)
    g.init_index(max_elements=len(xb), ef_construction=200, M=16, random_seed=0)
    g.add_items(xb, np.arange(len(xb)), num_threads=THREADS)
    build = time.perf_counter() - t0
    rows = []
    chosen = None
    for ef in (*range(10, 64, 2), 64, 80, 96, 128, 192, 256, 384, 512):  # fine steps: ef tuned to the recall
        g.set_ef(ef)
        ids, _ = g.knn_query(xq, k=K, num_threads=THREADS)
        if recall_at_k(ids, gt) >= target_recall:
            chosen = ef
            break
    chosen = chosen or 512
    g.set_ef(chosen)
    m = measure(lambda q: g.knn_query(q, k=K, num_threads=THREADS)[0], xq)
    bpv = 4 * d + 16 * 2 * 4 + 8  # float32 vector + level-0 links (2M) + label
    rows.append(row(f"hnswlib M=16 ef={chosen} (tuned to recall ≥ {target_recall:.3f})", bpv, build, m, gt, labels))
    return rows


def rescore_curve(xb, xq, gt, labels) -> str:
    """recall@10 / label@10 vs rescore bits per dimension (residual codes, flat binary scan, oversample 10)."""
    from vqsearch import quantizers

    rows = []
    for spec in RESCORE_CURVE:
        name = spec.split(":")[0]
        if name not in quantizers.available():
            continue
        t0 = time.perf_counter()
        idx = vqsearch.Index.create(None, dim=xb.shape[1], scan="binary", rescore=spec, ivf=None, residual=True)
        idx.add(xb)
        build = time.perf_counter() - t0
        st = idx.stats()
        m = measure(lambda q, idx=idx: idx.search(q, k=K)[1], xq)
        rows.append([spec, idx.rescore_quantizer.bits_per_dim, st["bytes_per_vector"], build, recall_at_k(m["ids"], gt),
                     label_at_k(m["ids"], labels), m["qps"]])
        idx.close()
        print(f"  done curve {spec}", file=sys.stderr, flush=True)
    return "### Rescoring curve (binary scan → residual rescore codes, flat, oversample 10)\n\n" + table(
        ["rescore codes", "rescore bits/dim", "bytes/vector", "build s", "recall@10", "label@10", "QPS"], rows)


def filter_table(xb, xq, preset: str = "default") -> str:
    """recall@10 of filtered search vs exact search over the rows the filter keeps, by selectivity."""
    rng = np.random.default_rng(0)
    bucket = rng.integers(0, 1000, size=len(xb)).astype(np.int32)
    idx = vqsearch.Index.create(None, dim=xb.shape[1], preset=preset)
    idx.add(xb, metadata={"bucket": bucket})
    rows = []
    for frac in (0.5, 0.1, 0.01, 0.001):
        keep = np.flatnonzero(bucket < int(frac * 1000))
        exact = keep[np.argsort(-(xq @ xb[keep].T), axis=1)[:, :K]]
        flt = {"bucket": {"lt": int(frac * 1000)}}
        m = measure(lambda q, flt=flt: idx.search(q, k=K, filter=flt)[1], xq)
        rows.append([f"{frac:.1%}", len(keep), recall_at_k(m["ids"], exact), m["qps"], m["p50"]])
    idx.close()
    return (f"### Filtered search (preset={preset}; filter `bucket < t` on a random int column)\n\n"
            + table(["selectivity", "rows kept", "recall@10 (vs exact over kept rows)", "QPS (batch)", "p50 ms"],
                    rows))


def kernel_table(xb, xq) -> str:
    """First-stage scan throughput on identical codes: vqsearch kernels vs FAISS (same run, same threads)."""
    from vqsearch.kernels.scan import hamming_scan_topk, transpose_sign_words


    n, d = xb.shape
    rows = []
    bits = np.packbits(xb > 0, axis=1)
    qbits = np.packbits(xq > 0, axis=1)
    words_t = transpose_sign_words(bits, bits.shape[1])  # the layout the binary scanner keeps per segment
    qwords = np.ascontiguousarray(qbits).view(np.uint64)
    ranges = np.zeros((len(xq), 1, 2), np.int64)
    ranges[:, 0, 1] = n
    live = np.zeros(0, np.bool_)
    binf = faiss.IndexBinaryFlat(d)
    binf.add(bits)

    def best_time(fn, reps=3):
        fn()
        out = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            out = min(out, time.perf_counter() - t)
        return out

    t_vq = best_time(lambda: hamming_scan_topk(qwords, words_t, ranges, live, K))
    t_fx = best_time(lambda: binf.search(qbits, K))
    v_vq, _ = hamming_scan_topk(qwords, words_t, ranges, live, K)
    d_fx, _ = binf.search(qbits, K)
    same = "yes" if np.array_equal(-v_vq.astype(np.int64), d_fx.astype(np.int64)) else "no"
    rows.append(["Hamming top-10, 384-bit sign codes", len(xq) * n / t_vq / 1e6, len(xq) * n / t_fx / 1e6,
                 t_fx / t_vq, same])

    pq = faiss.index_factory(d, "PQ96x4fs", faiss.METRIC_INNER_PRODUCT)
    pq.train(xb)
    pq.add(xb)
    idx = vqsearch.Index.create(None, dim=d, scan="pq:m=96,nbits=4", rescore=None, ivf=None)
    idx.add(xb)
    t_vq = best_time(lambda: idx.search(xq, k=K))
    t_fx = best_time(lambda: pq.search(xq, K))
    rows.append(["PQ96x4 LUT scan top-10 (whole search call)", len(xq) * n / t_vq / 1e6, len(xq) * n / t_fx / 1e6,
                 t_fx / t_vq, "– (own codebooks)"])
    idx.close()
    return (f"### Scan kernels on the same data ({len(xq):,} queries × {n:,} codes, {THREADS} threads)\n\n"
            + table(["kernel", "vqsearch M codes/s", "FAISS M codes/s", "ratio vqsearch/FAISS",
                     "same distances"], rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated name prefixes")
    ap.add_argument("--target-config", default=None, help="vq config whose recall hnswlib is tuned to")
    args = ap.parse_args()
    vqsearch.set_num_threads(THREADS)
    faiss.omp_set_num_threads(THREADS)
    banner("Search on Debian-MiniLM (60,179 × 384, 1,000 queries)")
    data = load_debian()
    if data is None:
        return
    xb, xq, gt, labels = data["xb"], data["xq"], data["gt"][:, :K], data["labels"]
    prefixes = tuple(p for p in args.only.split(",") if p)

    def wanted(name: str) -> bool:
        return not prefixes or name.startswith(prefixes)

    headers = ["configuration", "bytes/vector", "build s", "recall@10", "label@10", "QPS (batch)",
               "p50 ms", "p99 ms"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="vqbench-") as tmp:
        for name, cfg in VQ_CONFIGS.items():
            if wanted(name):
                rows.append(run_vq(name, cfg, xb, xq, gt, labels, Path(tmp)))
                print(f"  done {name}", file=sys.stderr, flush=True)
    if wanted("faiss"):
        frows, _ = run_faiss(xb, xq, gt, labels)
        rows += frows
    if wanted("hnswlib"):
        target = args.target_config or next(iter(VQ_CONFIGS))
        tr = next((r[3] for r in rows if r[0] == target), 0.95)
        rows += run_hnswlib(xb, xq, gt, labels, tr)
    print(table(headers, rows))
    print()
    if wanted("curve"):
        print(rescore_curve(xb, xq, gt, labels))
        print()
    if wanted("filters"):
        print(filter_table(xb, xq))
        print()
    if wanted("kernels"):
        print(kernel_table(xb, xq))
        print()


if __name__ == "__main__":
    main()
