"""A hostile client against a real server: every row of the abuse table of issue 20 replayed, scaled down.

Each test names its row.  Sizes are bounded but still prove the bound: the decompression
bombs expand to hundreds of MB against a limit of 16 MiB, and the server's peak RSS
(``VmHWM`` in ``/proc/<pid>/status`` of a server subprocess) must not grow by more than a
small multiple of the limit.  Slow clients use raw sockets with timeouts of a few seconds.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pytest
from vqsearch.server import InvalidSettings, Settings
from vqsearch.server.auth import KeyLimits
from vqtest_server import (
    ADMIN,
    ARROW,
    MIB,
    READER,
    STARTUP_TIMEOUT,
    A,
    LiveServer,
    R,
    arrow_stream,
    assert_error,
    settings_for,
    vector_table,
)

D = 32


def seed(c: httpx.Client, name: str = "cc", n: int = 2_000, spec: dict | None = None) -> np.ndarray:
    x = np.random.default_rng(0).standard_normal((n, D)).astype(np.float32)
    r = c.post("/v1/collections", json={"name": name, "dim": D, "ivf": None, "rescore": "sq8", **(spec or {})})
    assert r.status_code == 201, r.text
    t = vector_table(np.arange(n), x, w=pa.array([f"w{i}" * 20 for i in range(n)]), score=pa.array(np.ones(n)))
    r = c.post(f"/v1/collections/{name}/points", content=arrow_stream(t), headers={"Content-Type": ARROW})
    assert r.status_code == 200, r.text
    return x


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = settings_for(tmp_path_factory.mktemp("abuse"), max_json_bytes=4096 * 64, header_timeout=1.0,
                            body_timeout=1.0, max_hits=20_000, max_candidates=200_000)
    with LiveServer(settings) as srv, srv.client(A) as c:
        seed(c)
        yield srv


def raw(port: int, data: bytes, *, wait: float = 5.0, pause_after: float = 0.0) -> bytes:
    """Send ``data`` on a fresh connection and read until the server closes it (or ``wait`` passes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(data)
        time.sleep(pause_after)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return out


def body_of(response: bytes) -> dict[str, Any]:
    return json.loads(response.split(b"\r\n\r\n", 1)[1])


# ---------------------------------------------------------------- row 1 and 3: cost limits, deadline
def test_row1_huge_k_with_include_is_refused_before_work(live: LiveServer) -> None:
    with live.client(R) as c:
        q = np.zeros((128, D)).tolist()
        t0 = time.perf_counter()
        r = c.post("/v1/collections/cc/search", json={"vectors": q, "k": 2000, "include": ["w"]})
        assert_error(r, 400, "too_expensive", "128 queries × k=2000 = 256,000 hits exceeds the limit of 20,000 "
                                              "(setting max_hits); send fewer queries per request or a smaller k")
        assert time.perf_counter() - t0 < 30  # refused, not computed (a generous bound for a loaded machine)
        r = c.post("/v1/collections/cc/search", json={"vectors": q[:10], "k": 1000, "include": ["w"]})
        assert r.status_code == 200 and len(r.json()["results"]) == 10  # 10,000 hits: streamed, within limits
        assert all(len(row) == 1000 and row[0]["metadata"]["w"].startswith("w") for row in r.json()["results"])


def test_row3_oversample_cost_and_deadline(tmp_path: Path) -> None:
    with LiveServer(settings_for(tmp_path, max_candidates=200_000)) as srv, srv.client(R) as c:
        with srv.client(A) as admin:
            seed(admin, n=4_000)
        r = c.post("/v1/collections/cc/search", json={"vectors": [[0.1] * D], "k": 1000, "oversample": 1000})
        assert_error(r, 400, "too_expensive", match=r"^1 queries × k=1000 × oversample=1000 = 1,000,000 candidates "
                                                    r"exceeds the limit of 200,000 \(setting max_candidates\)$")
    with LiveServer(settings_for(tmp_path, request_timeout=0.001)) as srv, srv.client(R) as c:
        q = np.random.default_rng(1).standard_normal((1024, D)).tolist()
        r = c.post("/v1/collections/cc/search", json={"vectors": q, "k": 50})
        assert_error(r, 504, "deadline_exceeded", match=r"deadline of 0\.001 s \(setting request_timeout\)")


# ---------------------------------------------------------------- rows 2 and 2b: decompression bombs
def _bomb(schema_valid: bool, batches: int = 4, rows: int = 65_536) -> bytes:
    if schema_valid:
        zeros = np.zeros(rows * 384, np.float32)
        t = pa.table({"id": pa.array(np.arange(rows), pa.uint64()),
                      "vector": pa.FixedSizeListArray.from_arrays(pa.array(zeros), 384)})
    else:
        t = pa.table({"id": pa.array(np.zeros(rows * 48, np.uint64))})
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, t.schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as w:
        for _ in range(batches):
            w.write_table(t)
    return sink.getvalue()


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.fixture(scope="module")
def subprocess_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """``vqsearch serve`` in its own process (so its peak RSS is its own), max_arrow_bytes 16 MiB."""
    tmp = tmp_path_factory.mktemp("rss")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "VQSEARCH_API_KEYS": ADMIN, "VQSEARCH_MAX_ARROW_BYTES": str(16 * MIB)}
    proc = subprocess.Popen([sys.executable, "-m", "vqsearch.cli", "serve", "--data", str(tmp / "data"), "--port",
                             str(port), "--log-level", "warning"], env=env, cwd=tmp, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.1)
        with httpx.Client(base_url=url, headers=A, timeout=120) as c:
            assert c.post("/v1/collections", json={"name": "big", "dim": 384, "ivf": None,
                                                   "rescore": "sq8"}).status_code == 201
        yield url, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        proc.stderr.close()


@pytest.mark.parametrize("schema_valid", [False, True], ids=["row2-schema-invalid", "row2b-schema-valid"])
def test_row2_arrow_bombs_stop_at_the_decompressed_limit(subprocess_server: tuple[str, int],
                                                         schema_valid: bool) -> None:
    url, pid = subprocess_server
    body = _bomb(schema_valid)
    assert len(body) < MIB  # ~100 MB (schema-invalid: ~100 MB, valid: ~400 MB) once decompressed
    before = _peak_rss(pid)
    with httpx.Client(base_url=url, headers=A, timeout=120) as c:
        r = c.post("/v1/collections/big/points", content=body, headers={"Content-Type": ARROW})
        if schema_valid:
            assert_error(r, 413, "payload_too_large", "the Arrow stream decompresses to more than the limit of "
                                                      "16,777,216 bytes (setting max_arrow_bytes)")
        else:
            assert_error(r, 400, "invalid_arrow", "the stream needs a 'vector' column; columns: ['id']")
        assert c.get("/v1/collections/big").json()["count"] == 0
    growth = _peak_rss(pid) - before
    assert growth < 4 * 16 * MIB, f"peak RSS grew by {growth / MIB:.0f} MiB"


# ---------------------------------------------------------------- row 4 and 11: damaged collections
def _segment(data: Path, name: str) -> Path:
    return next((data / "collections" / name / "segments").iterdir())


def test_row4_damaged_collections_stay_manageable(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with LiveServer(settings_for(tmp_path)) as srv, srv.client(A) as c:
        for name in ("bad", "skip", "gone"):
            seed(c, name, n=300)
    _segment(tmp_path, "bad").unlink()  # a missing segment
    _segment(tmp_path, "gone").unlink()
    seg = _segment(tmp_path, "skip")
    seg.write_bytes(seg.read_bytes()[: seg.stat().st_size // 2])  # a truncated segment
    with LiveServer(settings_for(tmp_path)) as srv, srv.client(A) as c:
        listed = {x["name"]: x for x in c.get("/v1/collections").json()["collections"]}
        assert {n: listed[n]["status"] for n in ("bad", "skip", "gone")} == dict.fromkeys(
            ("bad", "skip", "gone"), "unavailable")
        assert listed["bad"]["error"] == "corrupt_data" and str(tmp_path) not in json.dumps(listed)
        assert_error(c.post("/v1/collections/bad/search", json={"vectors": [[0.0] * D]}), 503,
                     "collection_unavailable", match=r"^collection 'bad' is unavailable \(corrupt_data\)")
        assert_error(c.post("/v1/collections", json={"name": "bad", "dim": 4}), 409, "already_exists",
                     match="exists but is unavailable")
        r = c.post("/v1/collections", json={"name": "bad", "dim": 4, "replace_unavailable": True})
        assert r.status_code == 201 and r.json()["status"] == "available"
        assert_error(c.post("/v1/collections", json={"name": "bad", "dim": 4, "replace_unavailable": True}), 409,
                     "already_exists", "collection 'bad' already exists")  # an available one is never replaced
        r = c.post("/v1/collections/skip/open", json={"on_corrupt": "skip"})
        assert r.status_code == 200, r.text
        assert c.get("/v1/collections/skip").json()["status"] == "available"
        assert c.delete("/v1/collections/gone").json() == {"deleted": "gone"}
        assert not (tmp_path / "collections" / "gone").exists()
    # a garbled registry is rebuilt from the directories, with a warning
    (tmp_path / "collections.json").write_text('{"format": 1, "collections": {"bad": ')
    with LiveServer(settings_for(tmp_path)) as srv, srv.client(A) as c:
        names = sorted(x["name"] for x in c.get("/v1/collections").json()["collections"])
        assert names == ["bad", "cc", "skip"] or names == ["bad", "skip"]
        assert c.get("/v1/collections/bad").json()["dim"] == 4
    assert (tmp_path / "collections.json.damaged").exists()
    assert any("is unreadable" in m and "rebuilding it" in m for m in caplog.messages)


def test_row11_corrupt_data_while_serving_is_a_5xx_without_paths(tmp_path: Path) -> None:
    with LiveServer(settings_for(tmp_path)) as srv, srv.client(A) as c:
        x = seed(c, "flip", n=500)
    seg = _segment(tmp_path, "flip")
    data = bytearray(seg.read_bytes())
    for at in range(len(data) // 3, 2 * len(data) // 3, 97):  # inside the column data, not the footer
        data[at] ^= 0xFF
    seg.write_bytes(bytes(data))
    with LiveServer(settings_for(tmp_path)) as srv, srv.client(A) as c:
        r = c.post("/v1/collections/flip/search", json={"vectors": x[:2].tolist(), "k": 5, "include": ["w"]})
        assert r.status_code == 500, r.text
        assert r.json()["error"] == "corrupt_data" and set(r.json()) == {"error", "message"}
        assert str(tmp_path) not in r.text and "/tmp" not in r.text
        metrics = c.get("/metrics").text
        assert 'vqsearch_server_faults_total{code="corrupt_data"} 1' in metrics


# ---------------------------------------------------------------- rows 5 and 6: no 500s from input
def test_row5_arrow_with_damaged_offsets_is_400(live: LiveServer) -> None:
    n = 3
    t = vector_table(np.arange(n), np.ones((n, D), np.float32), w=pa.array(["aa", "bb", "cc"]),
                     score=pa.array(np.ones(n)))
    stream = arrow_stream(t)
    offsets = np.array([0, 2, 4, 6], np.int32).tobytes()
    assert stream.count(offsets) == 1
    patched = [np.array([0, 2, 4, last], np.int32).tobytes() for last in (4000, 10**8, -5)]
    patched.append(np.array([0, 4, 2, 6], np.int32).tobytes())  # out of order
    with live.client(A) as c:
        for off in patched:
            r = c.post("/v1/collections/cc/points", content=stream.replace(offsets, off),
                       headers={"Content-Type": ARROW})
            assert_error(r, 400, "invalid_arrow", match="^body is not a valid Arrow IPC stream: ")
        assert c.get("/v1/collections/cc").json()["count"] == 2_000  # nothing was written


def test_row6_huge_filter_numbers_are_400(live: LiveServer) -> None:
    big = int("9" * 400)
    with live.client(R) as c:
        for flt in ({"score": big}, {"score": {"gt": big}}, {"score": {"in": [1, -big]}}):
            body = '{"vectors": [[' + ", ".join(["0.5"] * D) + ']], "filter": ' + json.dumps(flt) + "}"
            r = c.post("/v1/collections/cc/search", content=body, headers={"Content-Type": "application/json"})
            assert_error(r, 400, "invalid_input", match=r"^filter: the number -?9{19,20}\.\.\. is out of range")


# ---------------------------------------------------------------- rows 8-10: connection hygiene
def test_row8_slow_clients_are_cut_off(live: LiveServer) -> None:
    # headers that never complete: 408 after header_timeout (1 s here)
    t0 = time.monotonic()
    out = raw(live.port, b"POST /v1/collections/cc/search HTTP/1.1\r\nHost: x\r\n", wait=10)
    assert out.startswith(b"HTTP/1.1 408 ") and body_of(out)["error"] == "request_timeout"
    assert time.monotonic() - t0 < 8
    # an idle connection is closed
    assert raw(live.port, b"", wait=10) == b""
    # a body that stops arriving: 408 after body_timeout
    head = (f"POST /v1/collections/cc/search HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {READER}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n").encode()
    out = raw(live.port, head + b'{"vectors": [[0.1, 0.2', wait=10)
    assert b" 408 " in out.split(b"\r\n")[0] and body_of(out)["error"] == "request_timeout"


def test_row9_declared_oversize_is_413_at_once_even_with_expect(live: LiveServer) -> None:
    for expect in (b"", b"Expect: 100-continue\r\n"):
        head = (b"POST /v1/collections/cc/search HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + ADMIN.encode()
                + b"\r\nContent-Type: application/json\r\nContent-Length: 20000000\r\n" + expect + b"\r\n")
        t0 = time.monotonic()
        out = raw(live.port, head, wait=10)
        assert out.startswith(b"HTTP/1.1 413 "), out[:200]
        assert b"100 Continue" not in out and body_of(out)["error"] == "payload_too_large"
        assert time.monotonic() - t0 < 8


@pytest.mark.parametrize("headers", [b"Content-Length: abc\r\n", b"Content-Length: -1\r\n",
                                     b"Content-Length: " + b"9" * 5000 + b"\r\n",
                                     b"Content-Length: 5\r\nContent-Length: 6\r\n",
                                     b"Transfer-Encoding: chunked\r\n\r\nzz\r\n"])
def test_row10_malformed_framing_is_a_json_400(live: LiveServer, headers: bytes) -> None:
    out = raw(live.port, b"POST /v1/collections/cc/search HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert out.startswith(b"HTTP/1.1 400 "), out[:200]
    body = body_of(out)
    assert set(body) == {"error", "message"} and body["error"] == "bad_request"


def test_header_size_and_connection_limits(tmp_path: Path) -> None:
    with LiveServer(settings_for(tmp_path, max_header_bytes=2048, max_connections=4)) as srv:
        out = raw(srv.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 4000 + b"\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 431 ") and body_of(out)["error"] == "headers_too_large"
        held = [socket.create_connection(("127.0.0.1", srv.port), timeout=5) for _ in range(4)]
        try:
            time.sleep(0.2)
            assert raw(srv.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", wait=5) == b""  # the 5th: closed
        finally:
            for s in held:
                s.close()
        time.sleep(0.2)
        assert raw(srv.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").startswith(
            b"HTTP/1.1 200 ")


def test_default_limits_leave_room_for_256_connections(tmp_path: Path) -> None:
    """300 connections open at once are all answered under the default limits.  Its own server: the shared
    one's 1 s header timeout could close a connection that waits for the client to open the other 299."""
    assert Settings(data_dir=Path("x")).max_connections >= 256
    socks: list[socket.socket] = []
    with LiveServer(settings_for(tmp_path)) as srv:
        try:
            for _ in range(300):
                s = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
                socks.append(s)
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            for s in socks:
                assert s.recv(65536).startswith(b"HTTP/1.1 200 ")
        finally:
            for s in socks:
                s.close()


# ---------------------------------------------------------------- row 12: keys as UTF-8 bytes
def test_row12_non_ascii_keys_are_compared_as_utf8(tmp_path: Path) -> None:
    key = "pässwort123"
    with LiveServer(settings_for(tmp_path, api_keys=(key,))) as srv:
        for encoding, status in (("utf-8", 200), ("latin-1", 401)):
            out = raw(srv.port, b"GET /v1/collections HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: "
                      b"Bearer " + key.encode(encoding) + b"\r\n\r\n")
            assert out.startswith(b"HTTP/1.1 %d " % status), out[:200]
    with pytest.raises(InvalidSettings, match="API keys must not contain control characters"):
        Settings.load(environ={}, data_dir=tmp_path, api_keys=("abc\x01defghij",))
    with pytest.raises(InvalidSettings, match="API keys must be valid UTF-8 text"):
        Settings.load(environ={}, data_dir=tmp_path, api_keys=("abc\udcffdefghij",))


# ---------------------------------------------------------------- per-key limits (off by default)
def test_per_key_rate_and_concurrency_limits(tmp_path: Path) -> None:
    assert not KeyLimits(0, 0.0).enabled and Settings(data_dir=tmp_path).key_rate == 0
    with LiveServer(settings_for(tmp_path, key_rate=1.0)) as srv, srv.client(R) as c:
        statuses = [c.get("/v1/collections").status_code for _ in range(3)]
        assert statuses[0] == 200 and 429 in statuses
        r = c.get("/v1/collections")
        assert_error(r, 429, "too_many_requests", "this API key is limited to 1 requests/s")
        assert int(r.headers["retry-after"]) >= 1
        with srv.client(A) as admin:  # another key has its own bucket
            assert admin.get("/v1/collections").status_code == 200
    limits = KeyLimits(2, 0.0)
    assert limits.refusal(b"k") is None and limits.refusal(b"k") is None
    assert limits.refusal(b"k") == ("this API key is limited to 2 concurrent requests", 1.0)
    limits.release(b"k")
    assert limits.refusal(b"k") is None
