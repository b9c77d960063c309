"""IVF at scale: build and search 1,000,000 × 384 synthetic vectors on this machine.

Data (seeded): unit vectors drawn around 2,000 random unit centres, each cluster spread along 8
random directions (norm ≈ 0.3 each) plus small isotropic noise (norm ≈ 0.15) — embedding-like
structure of low intrinsic dimension, not i.i.d. Gaussian.  Queries come from the
same distribution; the exact top-10 comes from faiss ``IndexFlatIP``.

Reports build time (training + encoding + writing Arrow segments), peak RSS, on-disk bytes, open
time of the built index, and recall@10 / QPS (batch of 1,000) / p50 single-query latency for a
few nprobe values, next to faiss IVF-PQ (fast-scan) with the same list count in the same run.

Run::

    python benchmarks/ivf_1m.py                     # N = 1,000,000 (about 10 minutes on 2 cores)
    VQSEARCH_IVF_N=200000 python benchmarks/ivf_1m.py
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
from bench_common import banner, table

import vqsearch
from vqsearch.eval import recall_at_k

N = int(os.environ.get("VQSEARCH_IVF_N", 1_000_000))
D = 384
NQ = 1000
NLIST = int(os.environ.get("VQSEARCH_IVF_NLIST", 4096))
THREADS = int(os.environ.get("VQSEARCH_THREADS", 2))
CHUNK = 100_000
K = 10


def synthetic(n: int, seed: int, centres: np.ndarray, bases: np.ndarray) -> np.ndarray:
    """Unit vectors: centre + low-rank cluster spread + small isotropic noise (generated in 10k blocks)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, D), dtype=np.float32)
    for s in range(0, n, 10_000):
        m = min(10_000, n - s)
        c = rng.integers(0, len(centres), size=m)
        z = rng.standard_normal((m, bases.shape[1])).astype(np.float32)
        noise = (0.15 / np.sqrt(D)) * rng.standard_normal((m, D)).astype(np.float32)  # isotropic, norm ≈ 0.15
        x = centres[c] + np.einsum("nr,nrd->nd", z, bases[c]) + noise
        out[s:s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    vqsearch.set_num_threads(THREADS)
    faiss.omp_set_num_threads(THREADS)
    banner(f"IVF at scale: {N:,} × {D} synthetic clustered vectors, nlist={NLIST}")
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((2000, D)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    # 8 directions of spread per cluster, each of norm ≈ 0.3: cosines within a cluster ≈ 0.5–0.9
    bases = (rng.standard_normal((2000, 8, D)) * (0.3 / np.sqrt(D))).astype(np.float32)

    xq = synthetic(NQ, 999, centres, bases)
    gt_index = faiss.IndexFlatIP(D)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vq1m-") as tmp:
        path = Path(tmp) / "index"
        idx = vqsearch.Index.create(path, dim=D, metric="cosine", ivf={"nlist": NLIST, "nprobe": 32})
        for s in range(0, N, CHUNK):
            xb = synthetic(min(CHUNK, N - s), s + 1, centres, bases)
            gt_index.add(xb)
            idx.add(xb)
            print(f"  added {s + len(xb):,} ({time.perf_counter() - t0:.0f} s, peak RSS {rss_mb():,.0f} MB)",
                  file=sys.stderr, flush=True)
        build = time.perf_counter() - t0
        peak = rss_mb()
        stats = idx.stats()
        idx.close()
        _, gt = gt_index.search(xq, K)
        disk = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())

        t1 = time.perf_counter()
        idx = vqsearch.Index.open(path, read_only=True)
        open_ms = (time.perf_counter() - t1) * 1e3
        rows = []
        for nprobe in (16, 32, 64, 128):
            idx.search(xq, k=K, nprobe=nprobe)  # warm-up: batch and single-query kernels
            idx.search(xq[:1], k=K, nprobe=nprobe)
            t = time.perf_counter()
            _, ids = idx.search(xq, k=K, nprobe=nprobe)
            qps = NQ / (time.perf_counter() - t)
            lat = []
            for i in range(100):
                t = time.perf_counter()
                idx.search(xq[i:i + 1], k=K, nprobe=nprobe)
                lat.append(time.perf_counter() - t)
            rec = recall_at_k(ids, gt, K)
            rows.append([f"vqsearch IVF{NLIST} {stats['scan']}→{stats['rescore']} nprobe={nprobe}",
                         stats["bytes_per_vector"], rec, qps, float(np.median(lat) * 1e3)])
        idx.close()

    # faiss IVF-PQ fast-scan with the same number of lists, same data (regenerated, same seeds)
    fx = faiss.index_factory(D, f"IVF{NLIST},PQ96x4fs", faiss.METRIC_INNER_PRODUCT)
    t0 = time.perf_counter()
    fx.train(synthetic(min(N, 200_000), 1, centres, bases))
    for s in range(0, N, CHUNK):
        fx.add(synthetic(min(CHUNK, N - s), s + 1, centres, bases))
    fbuild = time.perf_counter() - t0
    for nprobe in (16, 32, 64):
        fx.nprobe = nprobe
        fx.search(xq[:20], K)
        t = time.perf_counter()
        _, ids = fx.search(xq, K)
        qps = NQ / (time.perf_counter() - t)
        rec = recall_at_k(ids, gt, K)
        rows.append([f"faiss IVF{NLIST},PQ96x4fs nprobe={nprobe} (no refine)", 48 + 8, rec, qps, float("nan")])

    print(f"vqsearch build: {build:.0f} s for {N:,} vectors (train + encode + write, incl. data generation "
          f"and exact-search bookkeeping); peak RSS {peak:,.0f} MB; on disk {disk / 2**20:,.0f} MiB; "
          f"open {open_ms:.1f} ms. faiss IVF-PQ build {fbuild:.0f} s.\n")
    print(table(["configuration", "bytes/vector", "recall@10", "QPS (batch)", "p50 ms"], rows))


if __name__ == "__main__":
    main()
