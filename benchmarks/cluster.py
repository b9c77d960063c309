"""Sharded collections on a local multi-node Ray cluster against one ``Index``, in the same run.

For each data set: a single default ``Index`` (built in this process from the array), then
``ShardedIndex.build`` with 1, 2 and 4 shards (one replica each) on a local Ray cluster of ``NODES`` nodes of
one CPU each.  The sharded build reads a ``.npy`` copy of the vectors in parallel tasks (each encodes its
piece single-threaded), the driver trains once on a sample.  Reports build time, batch QPS (1,000
queries, k=10, median of 5), recall@10, the share of returned ids equal to the single index's (same
trained state: the build trains on all rows when they fit the sample, as the single index's first add
does), and single-query latency; then the fan-out/merge overhead per query batch (total sharded search
time minus the slowest shard's own search time, and the exact merge alone).

Data sets: the shared Debian-MiniLM set, and the synthetic set of ``benchmarks/ivf_1m.py``
(``VQSEARCH_CLUSTER_N`` vectors, default 200,000: a 1M build runs ~5 minutes per configuration here).

Run::

    python benchmarks/cluster.py                       # Debian + 200k synthetic, 2 nodes
    VQSEARCH_CLUSTER_N=1000000 python benchmarks/cluster.py
    VQSEARCH_CLUSTER_SETS=debian python benchmarks/cluster.py
"""

from __future__ import annotations

import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_common import banner, load_debian, table

from vqsearch import Index

N_SYNTH = int(os.environ.get("VQSEARCH_CLUSTER_N", 200_000))
NODES = int(os.environ.get("VQSEARCH_CLUSTER_NODES", 2))
SHARDS = tuple(int(s) for s in os.environ.get("VQSEARCH_CLUSTER_SHARDS", "1,2,4").split(","))
SETS = os.environ.get("VQSEARCH_CLUSTER_SETS", "debian,synthetic").split(",")
OBJECT_STORE = 512 * 2**20
K = 10
REPEAT = 5


def recall(ids: np.ndarray, gt: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / gt.shape[1] for a, b in zip(ids, gt)]))


def median_time(fn, repeat: int = REPEAT) -> float:
    fn()  # warm-up (kernels, caches, worker connections)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def start_cluster():
    import ray
    from ray.cluster_utils import Cluster

    args = {"num_cpus": 1, "object_store_memory": OBJECT_STORE}
    cluster = Cluster(initialize_head=True, head_node_args=args)
    for _ in range(NODES - 1):
        cluster.add_node(**args)
    cluster.wait_for_nodes(timeout=120)
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    return cluster


def shard_times(sx, xq: np.ndarray) -> list[float]:
    """Each shard's own search time for the batch, measured inside its replica actor (median of 3)."""
    import ray

    def inner(actor, queries, k, oversample, nprobe):
        import statistics as st
        import time as tm

        out = []
        for _ in range(3):
            t0 = tm.perf_counter()
            actor.search(queries, k, None, oversample, nprobe)
            out.append(tm.perf_counter() - t0)
        return st.median(out)

    cfg = sx.config
    nprobe = None if cfg.ivf is None else cfg.ivf.nprobe
    actors = sx.actors if sx.shards > 1 else [sx.actors]
    qref = ray.put(xq)
    return ray.get([shard[0].__ray_call__.remote(inner, qref, K, cfg.oversample, nprobe) for shard in actors])


def run_set(name: str, xb: np.ndarray, xq: np.ndarray, gt: np.ndarray, tmp: Path) -> list[list]:
    from vqsearch.cluster import ShardedIndex
    from vqsearch.cluster.merge import merge_topk

    rows = []
    t0 = time.perf_counter()
    single = Index.create(tmp / f"{name}-single", dim=xb.shape[1])
    single.add(xb)
    build = time.perf_counter() - t0
    _, sids = single.search(xq, k=K)
    qps = len(xq) / median_time(lambda: single.search(xq, k=K))
    p50 = median_time(lambda: [single.search(xq[i:i + 1], k=K) for i in range(100)]) / 100
    rows.append([name, "single Index", build, round(recall(sids, gt), 4), "–", qps, 1.0, "–", p50 * 1e3, "–", "–"])
    print(f"  single: build {build:.1f} s, QPS {qps:,.0f}, its own search settings {single.stats()['search_defaults']}",
          flush=True)
    # A sharded collection searches with the configured oversample (shards hold pre-encoded rows, so there is
    # no collection-wide recall calibration yet); the same setting on the single index separates that from the
    # cost of sharding itself.
    fixed = single.config.oversample
    _, fids = single.search(xq, k=K, oversample=fixed)
    fqps = len(xq) / median_time(lambda: single.search(xq, k=K, oversample=fixed))
    rows.append([name, f"single Index, oversample={fixed}", "–", round(recall(fids, gt), 4), "–", fqps, fqps / qps,
                 1.0, "–", "–", "–"])
    np.save(tmp / f"{name}.npy", xb)
    for shards in SHARDS:
        t0 = time.perf_counter()
        sx = ShardedIndex.build(tmp / f"{name}-{shards}", tmp / f"{name}.npy", shards=shards)
        build_s = time.perf_counter() - t0
        try:
            same_state = sx.stats()["state_id"] == single.state_id
            _, ids = sx.search(xq, k=K)
            equal = float(np.mean(ids == sids)) if same_state else float("nan")
            overlap = float(np.mean([len(set(a) & set(b)) / K for a, b in zip(ids, sids)])) if same_state \
                else float("nan")
            total = median_time(lambda sx=sx: sx.search(xq, k=K))
            sqps = len(xq) / total
            p50s = median_time(lambda sx=sx: [sx.search(xq[i:i + 1], k=K) for i in range(100)]) / 100
            inner = shard_times(sx, xq)
            result = sx.search(xq, k=K)  # the merge alone, over as many (nq, k) lists as there are shards
            lists = [(result[0], result[1])] * shards
            merge = median_time(lambda lists=lists, metric=sx.metric: merge_topk(lists, K, metric))
            overhead = total - max(inner)
            rows.append([name, f"{shards} shard(s)", build_s, round(recall(ids, gt), 4),
                         f"{overlap:.4f} / {equal:.4f}", sqps,
                         sqps / qps, sqps / fqps, p50s * 1e3, overhead * 1e3, merge * 1e3])
            print(f"  {shards} shards: build {build_s:.1f} s, QPS {sqps:,.0f}, overhead {overhead * 1e3:.1f} ms",
                  flush=True)
        finally:
            sx.close()
    single.close()
    return rows


def main() -> None:
    import ray

    logging.basicConfig(level=logging.WARNING)
    banner(f"Sharded collections on a local Ray cluster ({NODES} nodes × 1 CPU) vs one Index")
    print(f"- ray {ray.__version__}; shards {SHARDS}; synthetic N={N_SYNTH:,}")
    print()
    cluster = start_cluster()
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="vqcluster-") as tmpdir:
            tmp = Path(tmpdir)
            if "debian" in SETS:
                deb = load_debian()
                if deb is not None:
                    print("Debian-MiniLM", flush=True)
                    rows += run_set("debian-minilm", deb["xb"], deb["xq"], deb["gt"][:, :K], tmp)
            if "synthetic" in SETS:
                import faiss
                from ivf_1m import D, synthetic

                print(f"synthetic {N_SYNTH:,}", flush=True)
                rng = np.random.default_rng(0)
                centres = rng.standard_normal((2000, D)).astype(np.float32)
                centres /= np.linalg.norm(centres, axis=1, keepdims=True)
                bases = (rng.standard_normal((2000, 8, D)) * (0.3 / np.sqrt(D))).astype(np.float32)
                xb = synthetic(N_SYNTH, 1, centres, bases)
                xq = synthetic(1000, 999, centres, bases)
                flat = faiss.IndexFlatIP(D)
                flat.add(xb)
                gt = flat.search(xq, K)[1]
                del flat
                rows += run_set(f"synthetic-{N_SYNTH // 1000}k", xb, xq, gt, tmp)
    finally:
        ray.shutdown()
        cluster.shutdown()
    print()
    print(table(["set", "collection", "build s", "recall@10", "ids = single (set / rank)", "QPS (batch 1000)",
                 "QPS / single", "QPS / single at the same oversample", "p50 ms (1 query)",
                 "fan-out+merge ms/batch", "merge ms/batch"], rows))


if __name__ == "__main__":
    main()
