"""vqsearch.Client against a real uvicorn server on 127.0.0.1: the issue-15 walkthrough (create → add with
metadata → search with include/filter → count → scroll → update_metadata → delete → versions), answers
identical to a local Index, the error mapping, and retries (against a real loopback HTTP server)."""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import socket
import threading
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pytest
from vqtest_data import clustered
from vqtest_server import ADMIN, READER, LiveServer, settings_for

import vqsearch
from vqsearch import errors
from vqsearch.client import AsyncClient, RemoteCollection
from vqsearch.index import SearchResult
from vqsearch.storage import ScrollPage, VersionInfo

DIM = 16


class HashEmbedder:
    """A deterministic stand-in for MiniLM: each text maps to a fixed random unit vector."""

    name, dim = "hash", DIM

    def encode(self, texts: list[str]) -> np.ndarray:
        rows = [np.random.default_rng(int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little"))
                .standard_normal(DIM) for t in texts]
        x = np.asarray(rows, dtype=np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer(settings_for(tmp_path_factory.mktemp("client")), embedders={"minilm": HashEmbedder}) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(live: LiveServer) -> Iterator[vqsearch.Client]:
    with vqsearch.Client(live.url, api_key=ADMIN, timeout=120.0) as c:
        yield c


def test_walkthrough_matches_a_local_index(client: vqsearch.Client) -> None:
    n, chunk = 500, 128
    x = clustered(n + 10, DIM, seed=5)
    q = x[:8] + 0.01
    tag = np.where(np.arange(n) % 4 == 0, "a", "b")
    col = client.create_collection("walk", dim=DIM, metric="cosine", rescore="sq8", ivf=None)
    assert (col.name, col.dim, col.metric) == ("walk", DIM, "cosine")
    ids = col.add(x[:n], metadata={"tag": tag, "n": np.arange(n)}, batch_size=chunk, progress=False)
    assert ids.dtype == np.uint64 and np.array_equal(ids, np.arange(n))
    more = col.add(x[n:], progress=False)  # automatic ids follow the largest one
    assert np.array_equal(more, np.arange(n, n + 10))
    with pytest.raises(errors.Conflict, match="already exist"):
        col.add(x[:1], ids=[3], progress=False)

    # the same writes, chunk by chunk, on a local index give the same answers
    local = vqsearch.Index.create(None, dim=DIM, metric="cosine", rescore="sq8", ivf=None)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        local.add(x[s:e], ids=np.arange(s, e), metadata={"tag": tag[s:e], "n": np.arange(s, e)}, progress=False)
    local.add(x[n:], ids=np.arange(n, n + 10), progress=False)
    dist, got = col.search(q, k=5)
    ref_d, ref_i = local.search(q, k=5)
    assert got.dtype == np.int64 and dist.dtype == np.float32 and got.shape == (8, 5)
    assert np.array_equal(got, ref_i) and np.allclose(dist, ref_d, atol=1e-5)

    # include and filter: a SearchResult; a filter keeping fewer than k rows pads like the local index
    res = col.search(q, k=5, filter={"tag": "a"}, include=["tag", "n"])
    ref = local.search(q, k=5, filter={"tag": "a"}, include=["tag", "n"])
    assert isinstance(res, SearchResult) and np.array_equal(res.ids, ref.ids)
    assert res.metadata.column("n").to_pylist() == ref.metadata.column("n").to_pylist()
    assert set(res.metadata.column("tag").drop_null().to_pylist()) == {"a"}
    few = col.search(q[:2], k=5, filter={"n": {"in": [1, 2]}}, include=["n"])
    assert (few.ids[:, 2:] == -1).all() and (few.distances[:, 2:] == -np.inf).all()
    assert few.column("n")[0][2:] == [None] * 3
    big_d, big_i = col.search(q[:2], k=n + 20)  # k > n: padded, as in Python
    loc_d, loc_i = local.search(q[:2], k=n + 20)
    assert np.array_equal(big_i, loc_i) and (big_i[:, n + 10:] == -1).all() and (big_d[:, n + 10:] == -np.inf).all()

    # count and scroll
    assert col.count() == len(col) == n + 10 and col.count({"tag": "a"}) == 125
    pages = list(col.scroll(batch=100, include=["n"]))
    assert all(isinstance(p, ScrollPage) and len(p) <= 100 for p in pages) and len(pages) == 6
    assert np.array_equal(np.concatenate([p.ids for p in pages]), np.arange(n + 10))
    assert pages[0].metadata.column("n").to_pylist() == list(range(100))
    filtered = np.concatenate([p.ids for p in col.scroll({"tag": "a"}, batch=7)])
    assert np.array_equal(filtered, np.arange(0, n, 4))
    assert list(col.scroll({"tag": "zzz"})) == []

    # update_metadata: values change, codes do not
    col.update_metadata([0, 1], {"tag": ["edited", None], "note": ["x", "y"]})
    meta = col.get([1, -1, 0, 4])
    assert meta.column("tag").to_pylist() == [None, None, "edited", "a"]
    assert meta.column("note").to_pylist() == ["y", None, "x", None]
    assert col.get([1], include=["n"]).to_pydict() == {"n": [1]}
    assert np.array_equal(col.search(q, k=5)[1], got)
    with pytest.raises(errors.UnknownIds, match="1 id"):
        col.get([0, 10**6])
    assert col.get([0, 10**6], missing="null").column("n").to_pylist() == [0, None]

    # delete, versions
    version_rows = [v.rows for v in col.versions()]
    col.delete([0, 1, 2])
    assert col.count() == n + 7
    with pytest.raises(errors.UnknownIds, match="not present"):
        col.delete([0])
    versions = col.versions()
    assert all(isinstance(v, VersionInfo) for v in versions)
    assert [v.version for v in versions] == sorted(v.version for v in versions)
    assert versions[-1].rows == n + 7 and len(versions) > len(version_rows) - 1
    assert versions[-1].version == col.info()["version"]

    assert "walk" in [c["name"] for c in client.list_collections()]
    client.delete_collection("walk")
    with pytest.raises(errors.NotFound, match="walk"):
        client.collection("walk")


def test_texts_through_the_client(client: vqsearch.Client, capsys: pytest.CaptureFixture[str]) -> None:
    col = client.create_collection("texts", embedder="minilm", rescore="sq8", ivf=None)
    assert col.dim == DIM and col.embedder == "minilm"
    docs = [f"doc {i}: {'python' if i % 2 else 'networking'} notes" for i in range(60)]
    col.add(texts=docs[:20], metadata={"odd": [i % 2 == 1 for i in range(20)]}, progress=False)
    col.add(texts=docs[20:], metadata={"odd": [i % 2 == 1 for i in range(20, 60)]}, batch_size=10, progress=True)
    bar = capsys.readouterr().err  # issue 15: a long text upsert was one silent request; now chunks and a bar
    assert "adding" in bar and "/40" in bar
    res = col.search([docs[9], docs[10]], k=3, include=["text", "odd"])
    assert res.ids[:, 0].tolist() == [9, 10]
    assert res.column("text")[0][0] == docs[9] and res.column("odd")[1][0] is False
    d, i = col.search(docs[9], k=2)
    assert i[0, 0] == 9 and d.shape == (1, 2)
    assert col.count({"text": {"contains": "python"}}) == 30


def test_http_errors_raise_library_exceptions(client: vqsearch.Client, live: LiveServer) -> None:
    col = client.create_collection("errs", dim=DIM, rescore="sq8", ivf=None)
    col.add(clustered(40, DIM, seed=6), progress=False)
    with pytest.raises(errors.DimensionMismatch, match="dimension 15, expected 16"):  # checked locally
        col.search(np.zeros((1, DIM - 1), np.float32))
    with pytest.raises(errors.InvalidInput, match="unknown") as info:
        col.count({"nope": 1})
    assert info.value.code == "invalid_input" and info.value.http_status == 400
    with pytest.raises(errors.InvalidInput, match="unknown metadata column"):
        col.search(np.ones((1, DIM), np.float32), include=["nope"])
    with pytest.raises(errors.AlreadyExists, match="errs"):
        client.create_collection("errs", dim=DIM)
    with pytest.raises(errors.InvalidInput, match="k") as info:  # the server's 422 validation_error
        col.search(np.ones((1, DIM), np.float32), k=10**6)
    assert info.value.code == "validation_error" and info.value.http_status == 422
    with vqsearch.Client(live.url, api_key=READER) as reader:
        rcol = reader.collection("errs")
        assert rcol.count() == 40
        with pytest.raises(errors.Forbidden, match="read-only") as info:
            rcol.delete([0])
        assert isinstance(info.value, PermissionError)
    with vqsearch.Client(live.url) as anonymous, pytest.raises(errors.Unauthorized, match="key"):
        anonymous.list_collections()
    with pytest.raises(errors.InvalidInput, match="url must start with"):
        vqsearch.Client("127.0.0.1:8000")


class _Flaky(http.server.BaseHTTPRequestHandler):
    """Answers 503 with Retry-After to the first ``fail`` requests of each path, then a count."""

    fail = 2
    seen: dict[str, int] = {}

    def _answer(self) -> None:
        n = self.seen[self.path] = self.seen.get(self.path, 0) + 1
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if n <= self.fail:
            body = b'{"error": "overloaded", "message": "the search queue is full; retry later"}'
            self.send_response(503)
            self.send_header("Retry-After", "0")
        else:
            body = b'{"count": 7}'
            self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET = do_DELETE = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def flaky() -> Iterator[str]:
    _Flaky.seen = {}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_idempotent_calls_retry_503_with_retry_after_and_writes_do_not(flaky: str) -> None:
    info = {"name": "c", "dim": DIM, "metric": "l2"}
    with vqsearch.Client(flaky, retries=3, backoff=0.01) as c:
        col = RemoteCollection(c, info)
        assert col.count() == 7
        assert _Flaky.seen["/v1/collections/c/count"] == 3
        with pytest.raises(errors.ServiceUnavailable, match="queue is full") as exc:
            col.delete([1])  # a write: sent once
        assert exc.value.code == "overloaded" and exc.value.retry_after == 0.0
        assert _Flaky.seen["/v1/collections/c/points"] == 1
    with vqsearch.Client(flaky, retries=1, backoff=0.01) as c:
        _Flaky.seen.clear()
        with pytest.raises(errors.ServiceUnavailable, match="queue is full"):
            RemoteCollection(c, info).count()
        assert _Flaky.seen["/v1/collections/c/count"] == 2


def test_connection_errors_are_retried_then_raised() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with vqsearch.Client(f"http://127.0.0.1:{port}", retries=2, backoff=0.01, timeout=5) as c:
        with pytest.raises(errors.ConnectionFailed, match="ConnectError"):
            c.list_collections()
        with pytest.raises(ConnectionError, match="ConnectError"):
            c.delete_collection("x")


def test_arrow_metadata_and_pandas_inputs(client: vqsearch.Client) -> None:
    pd = pytest.importorskip("pandas")
    col = client.create_collection("frames", dim=DIM, metric="l2", rescore="sq8", ivf=None)
    x = clustered(64, DIM, seed=8)
    col.add(x[:32], metadata=pa.table({"a": pa.array(np.arange(32), pa.int32())}), progress=False)
    col.upsert(x[32:], ids=np.arange(32, 64), metadata=pd.DataFrame({"a": np.arange(32, 64)}), progress=False)
    assert col.get(np.arange(0, 64, 9)).column("a").to_pylist() == list(range(0, 64, 9))
    with pytest.raises(errors.InvalidInput, match="rows for"):
        col.add(x[:2], metadata={"a": [1]})
    with pytest.raises(errors.InvalidInput, match="explicit ids"):
        col.upsert(x[:2])


def test_async_client_makes_the_same_calls(live: LiveServer) -> None:
    x = clustered(80, DIM, seed=12)

    async def main() -> None:
        async with AsyncClient(live.url, api_key=ADMIN, timeout=120.0) as c:
            col = await c.create_collection("async_col", dim=DIM, metric="l2", rescore="sq8", ivf=None)
            await col.add(x, metadata={"n": np.arange(80)}, progress=False)
            counts = await asyncio.gather(col.count(), col.count({"n": {"lt": 10}}))  # concurrent calls
            assert counts == [80, 10]
            dist, ids = await col.search(x[:3], k=4)
            assert ids[:, 0].tolist() == [0, 1, 2] and dist.shape == (3, 4)
            res = await col.search(x[:1], k=2, include=["n"])
            assert res.column("n")[0][0] == 0
            seen = [int(i) async for page in col.scroll(batch=30) for i in page.ids]
            assert seen == list(range(80))
            await col.update_metadata([0], {"n": [100]})
            assert (await col.get([0])).column("n").to_pylist() == [100]
            await col.delete([0])
            assert (await col.versions())[-1].rows == 79
            with pytest.raises(errors.NotFound, match="nope"):
                await c.collection("nope")
            await c.delete_collection("async_col")

    asyncio.run(main())
