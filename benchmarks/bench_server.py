"""HTTP search as users see it: a C load generator (wrk) against ``vqsearch serve --demo-debian``.

Measures in one run, on 127.0.0.1 only, each for ``BENCH_SECONDS``:

1. a bare FastAPI echo endpoint that parses the same JSON body with pydantic and answers a
   dummy 10-hit list, on the same uvicorn stack (the ceiling of the web stack);
2. single-vector searches (k=10) at 16, 64 and 256 connections;
3. 100-vector batch requests, as JSON and as binary float32 bodies;
4. single-vector searches at 16 connections while a writer upserts 100 vectors every 50 ms
   (a separate process); afterwards every acknowledged write is searched for;
5. in-process ``Index.search`` on the same data for reference.

QPS, p50/p99 latency and non-2xx counts are printed as a markdown table.  wrk comes from
Debian (``apt-get install -y wrk``); without it a multi-process Python client is used.

Run (the server gets the machine alone through the benchmark lock)::

    /work/bin/vqbench python benchmarks/bench_server.py
    BENCH_SECONDS=5 python benchmarks/bench_server.py

Data: the shared Debian-MiniLM set (texts.parquet + base.f16.npy + queries.f16.npy).  The
collection is built once in ``BENCH_DATA_DIR`` (default: a directory under the system temp
directory) and reused by later runs.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from bench_common import DEBIAN, banner, table

SECONDS = float(os.environ.get("BENCH_SECONDS", 10))
K = 10
KEY = "bench-admin-key-0123"
H = {"Authorization": f"Bearer {KEY}"}
DATA_DIR = Path(os.environ.get("BENCH_DATA_DIR", Path(tempfile.gettempdir()) / "vqsearch-bench-server"))
WRITE_BATCH, WRITE_PAUSE = 100, 0.05
WRITE_ID0 = 10**9  # writer ids: far above the Debian ids
F32 = "application/x-vqsearch-f32"
HITS = "application/x-vqsearch-hits"

ECHO_APP = textwrap.dedent('''
    import sys
    import uvicorn
    from fastapi import FastAPI
    from pydantic import BaseModel

    class Body(BaseModel):
        vectors: list[list[float]]
        k: int = 10

    app = FastAPI()
    HITS = [{"id": i, "score": 1.0 - i / 100, "metadata": {}} for i in range(10)]

    @app.post("/search")
    async def search(body: Body) -> dict:
        return {"results": [HITS for _ in body.vectors]}

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", loop=sys.argv[2], http=sys.argv[3])
''')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"server at {url} did not start")
        time.sleep(0.3)


# ---------------------------------------------------------------- load generators
LUA = textwrap.dedent('''
    local bodies = {}
    local i = 0
    init = function(args)
      local f = io.open(args[1], "rb")
      local data = f:read("*all")
      f:close()
      local sep = args[2]
      local start = 1
      while true do
        local s, e = string.find(data, sep, start, true)
        if not s then table.insert(bodies, string.sub(data, start)); break end
        table.insert(bodies, string.sub(data, start, s - 1))
        start = e + 1
      end
    end
    request = function()
      i = (i % #bodies) + 1
      return wrk.format("POST", nil, nil, bodies[i])
    end
''')
SEP = b"\n--vqbench-body--\n"


def _wrk(url: str, bodies: list[bytes], headers: dict[str, str], conns: int, seconds: float,
         work: Path) -> dict[str, Any]:
    (work / "bodies.bin").write_bytes(SEP.join(bodies))
    (work / "post.lua").write_text(LUA)
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{seconds:g}s", "--latency", "--timeout", "10s",
           "-s", str(work / "post.lua")]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    cmd += [url, "--", str(work / "bodies.bin"), SEP.decode()]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout

    def lat(p: str) -> float:
        m = re.search(rf"^\s*{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            return float("nan")
        return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]

    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"qps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), "p50": lat("50"),
            "p99": lat("99"), "requests": total, "non2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": sum(int(g) for g in errors.groups()) if errors else 0}


def _py_worker(url: str, bodies: list[bytes], headers: dict[str, str], conns: int, seconds: float,
               out: Any) -> None:
    import asyncio

    async def main() -> None:
        lat: list[float] = []
        bad = 0
        end = time.monotonic() + seconds
        async with httpx.AsyncClient(headers=headers, timeout=10,
                                     limits=httpx.Limits(max_connections=conns)) as ac:
            async def one(j: int) -> None:
                nonlocal bad
                i = j
                while time.monotonic() < end:
                    t0 = time.perf_counter()
                    r = await ac.post(url, content=bodies[i % len(bodies)])
                    lat.append(time.perf_counter() - t0)
                    bad += r.status_code >= 300
                    i += 1
            await asyncio.gather(*(one(j) for j in range(conns)))
        out.put((lat, bad))
    asyncio.run(main())


def _python_load(url: str, bodies: list[bytes], headers: dict[str, str], conns: int, seconds: float,
                 work: Path) -> dict[str, Any]:
    procs = max(1, min(4, conns // 8))
    q: Any = mp.Queue()
    ps = [mp.Process(target=_py_worker, args=(url, bodies, headers, max(1, conns // procs), seconds, q))
          for _ in range(procs)]
    for p in ps:
        p.start()
    results = [q.get() for _ in ps]
    for p in ps:
        p.join()
    lat = np.concatenate([np.array(r[0]) for r in results]) * 1e3
    return {"qps": len(lat) / seconds, "p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)),
            "requests": len(lat), "non2xx": sum(r[1] for r in results), "socket_errors": 0}


def load(url: str, bodies: list[bytes], headers: dict[str, str], conns: int, work: Path) -> dict[str, Any]:
    runner = _wrk if shutil.which("wrk") else _python_load
    return runner(url, bodies, headers, conns, SECONDS, work)


# ---------------------------------------------------------------- the concurrent writer (own process)
def writer_process(url: str, xb: np.ndarray, seconds: float, out: Any) -> None:
    rng = np.random.default_rng(1)
    acked: list[list[int]] = []
    statuses: list[int] = []
    latencies: list[float] = []
    end = time.monotonic() + seconds
    j = 0
    with httpx.Client(base_url=url, headers=H, timeout=60) as c:
        while time.monotonic() < end:
            ids = list(range(WRITE_ID0 + j * WRITE_BATCH, WRITE_ID0 + (j + 1) * WRITE_BATCH))
            vecs = rng.standard_normal((WRITE_BATCH, xb.shape[1])).astype(np.float32)
            t0 = time.perf_counter()
            r = c.post("/v1/collections/debian/points", json={"ids": ids, "vectors": vecs.tolist()})
            latencies.append(time.perf_counter() - t0)
            statuses.append(r.status_code)
            if r.status_code == 200:
                acked.append(ids)
                np.save(Path(tempfile.gettempdir()) / f"vqbench-w{os.getpid()}-{j}.npy", vecs)
            j += 1
            time.sleep(WRITE_PAUSE)
    out.put((acked, statuses, os.getpid(), latencies))


def verify_writes(url: str, acked: list[list[int]], pid: int) -> int:
    """Search every acknowledged vector; returns how many were not found in their own top 10."""
    missing = 0
    with httpx.Client(base_url=url, headers=H, timeout=60) as c:
        for j, ids in enumerate(acked):
            path = Path(tempfile.gettempdir()) / f"vqbench-w{pid}-{j}.npy"
            vecs = np.load(path)
            path.unlink()
            res = c.post("/v1/collections/debian/search", json={"vectors": vecs.tolist(), "k": 10}).json()["results"]
            missing += sum(i not in [h["id"] for h in row] for i, row in zip(ids, res))
    return missing


# ---------------------------------------------------------------- main
def main() -> None:
    banner("bench_server: HTTP search with wrk vs a bare FastAPI echo, same run")
    if not (DEBIAN / "base.f16.npy").exists():
        raise SystemExit(f"needs the shared Debian-MiniLM data at {DEBIAN}")
    if shutil.which("wrk") is None:
        print("wrk not found: install it with `apt-get install -y wrk`; using the multi-process Python client\n")
    xb = np.load(DEBIAN / "base.f16.npy").astype(np.float32)
    xq = np.load(DEBIAN / "queries.f16.npy").astype(np.float32)
    rng = np.random.default_rng(0)
    single = [json.dumps({"vectors": [xq[i].tolist()], "k": K}).encode() for i in range(64)]
    batch = [json.dumps({"vectors": xq[rng.integers(0, len(xq), 100)].tolist(), "k": K}).encode() for _ in range(16)]
    batch_bin = [np.array([100, xq.shape[1]], "<u4").tobytes()
                 + xq[rng.integers(0, len(xq), 100)].astype("<f4").tobytes() for _ in range(16)]
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "echo.py").write_text(ECHO_APP)
        echo_port, plain_port, port = free_port(), free_port(), free_port()
        env = {**os.environ, "VQSEARCH_API_KEYS": KEY}
        echo = subprocess.Popen([sys.executable, str(work / "echo.py"), str(echo_port), "uvloop", "httptools"], cwd=tmp)
        plain = subprocess.Popen([sys.executable, str(work / "echo.py"), str(plain_port), "asyncio", "h11"], cwd=tmp)
        t0 = time.perf_counter()
        srv = subprocess.Popen([sys.executable, "-m", "vqsearch.cli", "serve", "--data", str(DATA_DIR), "--port",
                                str(port), "--log-level", "warning", "--demo-debian", str(DEBIAN)], env=env, cwd=tmp)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_up(f"http://127.0.0.1:{echo_port}/docs", echo, 60)
            wait_up(f"http://127.0.0.1:{plain_port}/docs", plain, 60)
            wait_up(f"{url}/healthz", srv, 1800)
            print(f"server up in {time.perf_counter() - t0:.0f} s "
                  f"({httpx.get(url + '/v1/collections/debian', headers=H).json()['count']:,} vectors)\n")
            search = f"{url}/v1/collections/debian/search"
            jh = {**H, "Content-Type": "application/json"}
            for body in single[:8]:  # warm-up (numba kernels, caches)
                httpx.post(search, content=body, headers=jh, timeout=120).raise_for_status()
            httpx.post(search, content=batch[0], headers=jh, timeout=120).raise_for_status()

            def row(name: str, r: dict[str, Any], conns: int, per_request: int = 1) -> dict[str, Any]:
                rows.append([name, conns, r["requests"], f"{r['qps']:,.0f}", f"{r['qps'] * per_request:,.0f}",
                             f"{r['p50']:.1f}", f"{r['p99']:.1f}", r["non2xx"] + r["socket_errors"]])
                print(f"  {name} @{conns}: {r}", flush=True)
                return r

            echo_r = row("bare FastAPI echo (pydantic body, 10 dummy hits), uvloop + httptools",
                         load(f"http://127.0.0.1:{echo_port}/search", single, {"Content-Type": "application/json"},
                              16, work), 16)
            row("bare FastAPI echo, asyncio + h11 (uvicorn without extras)",
                load(f"http://127.0.0.1:{plain_port}/search", single, {"Content-Type": "application/json"}, 16, work),
                16)
            s16 = row("search, 1 vector, JSON", load(search, single, jh, 16, work), 16)
            row("search, 1 vector, JSON", load(search, single, jh, 64, work), 64)
            row("search, 1 vector, JSON", load(search, single, jh, 256, work), 256)
            b = row("search, 100 vectors, JSON", load(search, batch, jh, 16, work), 16, 100)
            bb = row("search, 100 vectors, binary f32 in / hits out",
                     load(search, batch_bin, {**H, "Content-Type": F32, "Accept": HITS}, 16, work), 16, 100)
            q: Any = mp.Queue()
            w = mp.Process(target=writer_process, args=(url, xb, SECONDS + 1, q))
            w.start()
            time.sleep(0.5)
            sw = row("search, 1 vector, JSON, with writer (100 vectors / 50 ms)", load(search, single, jh, 16, work),
                     16)
            acked, statuses, pid, wlat = q.get()
            w.join()
            missing = verify_writes(url, acked, pid)
        finally:
            for p in (srv, echo, plain):
                p.terminate()
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
    from vqsearch import Index

    idx = Index.create(None, dim=xb.shape[1], ivf=None)
    idx.upsert(xb, np.arange(len(xb)))
    idx.search(xq[:100], k=K)
    t0 = time.perf_counter()
    for i in range(500):
        idx.search(xq[i:i + 1], k=K)
    one = 500 / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for s in range(0, 1000, 100):
        idx.search(xq[s:s + 100], k=K)
    hundred = 1000 / (time.perf_counter() - t0)
    rows.append(["in-process Index.search, 1 query/call", 1, 500, f"{one:,.0f}", f"{one:,.0f}", "-", "-", 0])
    rows.append(["in-process Index.search, 100 queries/call", 1, 10, f"{hundred / 100:,.0f}", f"{hundred:,.0f}", "-",
                 "-", 0])
    print()
    print(table(["requests", "connections", "requests made", "requests/s", "query vectors/s", "p50 ms", "p99 ms",
                 "errors (non-2xx + socket)"], rows))
    print()
    writes_ok = sum(s == 200 for s in statuses)
    print(f"- single-vector search / echo at 16 connections: {s16['qps'] / echo_r['qps']:.2f} "
          f"(p99 {s16['p99']:.1f} ms)")
    print(f"- with the writer / without: {sw['qps'] / s16['qps']:.2f}; writes: {writes_ok}/{len(statuses)} 2xx, "
          f"{len(statuses) - writes_ok} other; acknowledged vectors not found by search afterwards: {missing}")
    wl = np.array(wlat) * 1e3
    print(f"- writer: {writes_ok * WRITE_BATCH / (SECONDS + 1):,.0f} vectors/s ingested during the search load "
          f"(upsert of {WRITE_BATCH}: p50 {np.percentile(wl, 50):.0f} ms, p99 {np.percentile(wl, 99):.0f} ms)")
    print(f"- 100-vector batches: {b['qps'] * 100:,.0f} (JSON) and {bb['qps'] * 100:,.0f} (binary) query vectors/s")


if __name__ == "__main__":
    main()
