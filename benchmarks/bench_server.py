"""HTTP search throughput and latency under concurrency, with a concurrent writer, vs in-process search.

Starts ``vqsearch serve`` in a subprocess on 127.0.0.1 (random free port), loads a collection
over the Arrow bulk endpoint, then runs ``SEARCHES`` single-query searches with ``CONCURRENCY``
clients while one writer upserts ``WRITE_BATCH`` vectors every ``WRITE_PAUSE`` seconds.  Reports
QPS and p50/p99 latency, and the in-process ``Index.search`` QPS (single queries, one thread)
on the same data.  Loopback only; stops by itself.

Data: the shared Debian-MiniLM vectors (60k × 384) when present, else seeded synthetic data.

Run::

    python benchmarks/bench_server.py                      # defaults below
    BENCH_SEARCHES=5000 BENCH_CONCURRENCY=16 python benchmarks/bench_server.py
"""

from __future__ import annotations

import asyncio
import io
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa

SEARCHES = int(os.environ.get("BENCH_SEARCHES", 5_000))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", 16))
K = int(os.environ.get("BENCH_K", 10))
WRITE_BATCH = int(os.environ.get("BENCH_WRITE_BATCH", 100))
WRITE_PAUSE = float(os.environ.get("BENCH_WRITE_PAUSE", 0.05))
SEARCH_THREADS = int(os.environ.get("BENCH_SEARCH_THREADS", 8))
WRITER = os.environ.get("BENCH_WRITER", "1") != "0"
#: IVF setting of both indexes: "none" (flat scan, default: quick to build) or "auto" (the library default).
IVF = os.environ.get("BENCH_IVF", "none")
SHARED = Path(os.environ.get("VQSEARCH_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
KEY = "bench-admin-key"
ARROW = "application/vnd.apache.arrow.stream"


def load_data() -> tuple[str, np.ndarray, np.ndarray]:
    base = SHARED / "debian-minilm" / "base.f16.npy"
    if base.exists():
        xb = np.load(base).astype(np.float32)
        xq = np.load(SHARED / "debian-minilm" / "queries.f16.npy").astype(np.float32)
        return "debian-minilm", xb, xq
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((50_000, 128)).astype(np.float32)
    return "synthetic", xb, xb[rng.choice(len(xb), 1000, replace=False)] + 0.05


def arrow_body(x: np.ndarray) -> bytes:
    vec = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1), pa.float32()), x.shape[1])
    table = pa.table({"id": pa.array(np.arange(len(x)), pa.uint64()), "vector": vec})
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table, max_chunksize=65_536)
    return sink.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def load(url: str, xb: np.ndarray, xq: np.ndarray) -> tuple[float, np.ndarray, int, int]:
    latencies: list[float] = []
    errors = 0
    writes = 0
    todo = iter(range(SEARCHES))
    done = asyncio.Event()
    limits = httpx.Limits(max_connections=CONCURRENCY + 2)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60,
                                 limits=limits) as ac:
        async def searcher() -> None:
            nonlocal errors
            for i in todo:
                t0 = time.perf_counter()
                r = await ac.post("/v1/collections/bench/search",
                                  json={"vectors": [xq[i % len(xq)].tolist()], "k": K})
                latencies.append(time.perf_counter() - t0)
                errors += r.status_code != 200

        async def writer() -> None:
            nonlocal errors, writes
            rng = np.random.default_rng(1)
            while not done.is_set():
                ids = np.unique(rng.integers(0, len(xb), WRITE_BATCH))
                r = await ac.post("/v1/collections/bench/points",
                                  json={"ids": ids.tolist(), "vectors": xb[ids].tolist()})
                errors += r.status_code != 200
                writes += 1
                await asyncio.sleep(WRITE_PAUSE)

        for i in range(50):  # warm-up, dropped
            await ac.post("/v1/collections/bench/search", json={"vectors": [xq[i].tolist()], "k": K})
        wtask = asyncio.create_task(writer()) if WRITER else None
        t0 = time.perf_counter()
        await asyncio.gather(*(searcher() for _ in range(CONCURRENCY)))
        elapsed = time.perf_counter() - t0
        done.set()
        if wtask is not None:
            await wtask
    return elapsed, np.array(latencies) * 1e3, errors, writes


def in_process_qps(xb: np.ndarray, xq: np.ndarray, n: int = 1000) -> float:
    import vqsearch

    idx = vqsearch.Index.create(None, dim=xb.shape[1], ivf=None if IVF == "none" else IVF)
    idx.upsert(xb, np.arange(len(xb)))
    for i in range(20):
        idx.search(xq[i:i + 1], k=K)
    t0 = time.perf_counter()
    for i in range(n):
        idx.search(xq[i % len(xq):i % len(xq) + 1], k=K)
    return n / (time.perf_counter() - t0)


def main() -> None:
    import numba

    import vqsearch

    print(f"# bench_server: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
          f"python {platform.python_version()}, vqsearch {vqsearch.__version__}, numba {numba.__version__}, "
          f"load average {os.getloadavg()[0]:.1f}")
    name, xb, xq = load_data()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "VQSEARCH_API_KEYS": KEY}
        proc = subprocess.Popen([sys.executable, "-m", "vqsearch.cli", "serve", "--data", tmp, "--port", str(port),
                                 "--log-level", "warning", "--search-threads", str(SEARCH_THREADS)], env=env)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("server did not start")
                time.sleep(0.2)
            h = {"Authorization": f"Bearer {KEY}"}
            spec = {"name": "bench", "dim": xb.shape[1], "ivf": None if IVF == "none" else IVF}
            r = httpx.post(f"{url}/v1/collections", json=spec, headers=h)
            r.raise_for_status()
            t0 = time.perf_counter()
            httpx.post(f"{url}/v1/collections/bench/points", content=arrow_body(xb), timeout=600,
                       headers={**h, "Content-Type": ARROW}).raise_for_status()
            ingest = time.perf_counter() - t0
            elapsed, lat, errors, writes = asyncio.run(load(url, xb, xq))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    qps_local = in_process_qps(xb, xq)
    print(f"data: {name} {xb.shape[0]:,} x {xb.shape[1]}, default preset, ivf={IVF}, k={K}; "
          f"Arrow ingest {xb.shape[0] / ingest:,.0f} vectors/s")
    print()
    print("| setting | searches | concurrency | concurrent writes | errors | QPS | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|---|")
    w = f"{writes} × {WRITE_BATCH}" if WRITER else "none"
    print(f"| HTTP, {SEARCH_THREADS} search threads | {SEARCHES} | {CONCURRENCY} | {w} | {errors} | "
          f"{SEARCHES / elapsed:,.0f} | {np.percentile(lat, 50):.1f} | {np.percentile(lat, 99):.1f} |")
    print(f"| in-process Index.search, 1 query/call, 1 thread | 1000 | 1 | none | 0 | {qps_local:,.0f} | "
          f"{1e3 / qps_local:.2f} | - |")


if __name__ == "__main__":
    main()
