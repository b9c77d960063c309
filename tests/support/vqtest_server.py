"""A real uvicorn server on 127.0.0.1 for HTTP tests, plus request helpers and the error-shape assertion."""

from __future__ import annotations

import io
import re
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import uvicorn
from vqsearch.server import Settings, create_app
from vqsearch.server.app import uvicorn_config
from vqsearch.server.embedders import EmbedderFactory

ADMIN = "admin-key-0123"
READER = "read-key-0123"
A = {"Authorization": f"Bearer {ADMIN}"}
R = {"Authorization": f"Bearer {READER}"}
ARROW = "application/vnd.apache.arrow.stream"
MIB = 1 << 20
STARTUP_TIMEOUT = 30.0


class LiveServer:
    """A real uvicorn serving ``create_app(settings)`` in a thread, on a socket bound to 127.0.0.1:0."""

    def __init__(self, settings: Settings, embedders: Mapping[str, EmbedderFactory] | None = None) -> None:
        self.app = create_app(settings, embedders=embedders)
        # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted sockets only when the listening socket
        # says it is TCP; without it Nagle + delayed ACK add ~40 ms to every response.
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn_config(self.app, settings, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start within {STARTUP_TIMEOUT} s")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)
        self.sock.close()

    def client(self, headers: dict[str, str] | None = None) -> httpx.Client:
        # generous: the first write or search of a cold run compiles kernels on a busy 2-core machine
        return httpx.Client(base_url=self.url, headers=headers, timeout=300.0)


def settings_for(data_dir: Path, **kw: Any) -> Settings:
    base: dict[str, Any] = {"data_dir": data_dir, "api_keys": (ADMIN,), "read_only_keys": (READER,),
                            "max_json_bytes": MIB, "max_arrow_bytes": 64 * MIB, "search_threads": 2,
                            "request_timeout": 120.0}  # first searches compile numba kernels: slow on a busy machine
    base.update(kw)
    return Settings(**base)


def assert_error(r: httpx.Response, status: int, code: str, message: str | None = None,
                 match: str | None = None) -> None:
    """The contract's error shape: exactly {"error", "message"}, with the given status and text."""
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error", "message"}, body
    assert body["error"] == code, body
    if message is not None:
        assert body["message"] == message, body
    if match is not None:
        assert re.search(match, body["message"]), body


def arrow_stream(table: pa.Table, batch_rows: int = 16_384) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=batch_rows):
            writer.write_batch(batch)
    return sink.getvalue()


def vector_table(ids: np.ndarray, x: np.ndarray, **meta: Any) -> pa.Table:
    vec = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1), pa.float32()), x.shape[1])
    return pa.table({"id": pa.array(ids, pa.uint64()), "vector": vec, **meta})


def chunks(data: bytes, size: int = MIB) -> Iterator[bytes]:
    for s in range(0, len(data), size):
        yield data[s:s + size]
