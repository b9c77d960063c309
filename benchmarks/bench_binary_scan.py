"""Which first-stage kernel should scan ``binary`` (RaBitQ) codes on this CPU: fast-scan or the popcount cascade.

Builds the default preset (flat, no IVF) over the Debian-MiniLM base once (cached in ``BENCH_DATA_DIR``,
default a folder under the system temp directory), then times ``Index.search`` of the 1,000 shared queries in
calls of 1 / 16 / 100 / 1,000 queries, with the binary scan forced to each kernel, and reports recall@10 of
the exact top 10.  Time is CPU time per query of the process (``time.process_time``), so that a busy machine
inflates both kernels alike; run with ``NUMBA_NUM_THREADS=1`` to compare single-thread cost.

Run::

    NUMBA_NUM_THREADS=1 python benchmarks/bench_binary_scan.py
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_common import banner, load_debian, table
from vqsearch.kernels.fastscan import HAS_SIMD_FASTSCAN

import vqsearch
import vqsearch.index.scanners as scanners

DATA_DIR = Path(os.environ.get("BENCH_DATA_DIR", Path(tempfile.gettempdir()) / "vqsearch-bench-binary-scan"))
BATCHES = (1, 16, 100, 1000)
SECONDS = float(os.environ.get("BENCH_SECONDS", 2))


def cpu_ms_per_query(index: vqsearch.Index, xq: np.ndarray, batch: int) -> float:
    index.search(xq[:batch], k=10)  # warm: compile and map
    start, done = time.process_time(), 0
    while time.process_time() - start < SECONDS:
        for i in range(0, len(xq), batch):
            index.search(xq[i:i + batch], k=10)
            done += min(batch, len(xq) - i)
    return 1e3 * (time.process_time() - start) / done


def main() -> None:
    banner("bench_binary_scan: fast-scan vs popcount cascade for binary codes")
    data = load_debian()
    if data is None:
        return
    path = DATA_DIR / "debian-default"
    if not path.exists():
        index = vqsearch.Index.create(path, dim=data["xb"].shape[1], ivf=None)
        index.add(data["xb"])
        index.close()
    rows, recalls = [], {}
    for kernel in ("popcount", "fastscan"):
        if kernel == "fastscan" and not HAS_SIMD_FASTSCAN:
            print("(no SIMD fast-scan kernel on this CPU)")
            continue
        scanners.BINARY_FASTSCAN = kernel == "fastscan"
        index = vqsearch.Index.open(path)
        assert index.stats()["scan_kernel"] == kernel
        _, ids = index.search(data["xq"], k=10)
        recalls[kernel] = vqsearch.eval.recall_at_k(ids, data["gt"][:, :10])
        rows.append([kernel] + [f"{cpu_ms_per_query(index, data['xq'], b):.3f}" for b in BATCHES])
        index.close()
    print(table(["kernel"] + [f"{b} queries/call, ms CPU/query" for b in BATCHES], rows))
    print()
    for kernel, recall in recalls.items():
        print(f"- recall@10 ({kernel}): {recall:.4f}")


if __name__ == "__main__":
    main()
