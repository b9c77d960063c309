"""Micro-batched search: answers are never mixed up, binary bodies round-trip, cancellation and errors stay local.

The batcher is tested twice: directly, with a search function that blocks on an event so
that what is queued while a batch runs is known exactly (no timing assumptions), and over
HTTP against a real uvicorn server, comparing concurrent mixed requests with in-process
``Index.search`` on the same data.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pytest
from vqsearch.server.batcher import BatchParams, SearchBatcher
from vqsearch.server.wire import F32, HITS, read_hits, write_f32
from vqtest_data import clustered
from vqtest_server import ARROW, A, LiveServer, arrow_stream, assert_error, settings_for, vector_table

import vqsearch

N, D = 3_000, 16
SPEC = {"dim": D, "metric": "cosine", "ivf": None, "rescore": "sq8"}


# ---------------------------------------------------------------- the batcher alone
class Gate:
    """A search function that records its calls and blocks each one until released."""

    def __init__(self) -> None:
        self.calls: list[np.ndarray] = []
        self.release = threading.Event()
        self.entered = threading.Event()

    def __call__(self, target: Any, xq: np.ndarray, p: BatchParams) -> tuple[np.ndarray, np.ndarray]:
        self.calls.append(xq.copy())
        self.entered.set()
        assert self.release.wait(30)
        if np.isnan(xq).any():
            raise ValueError("a NaN row")
        ids = np.repeat(xq[:, :1].astype(np.int64), p.k, axis=1)  # the answer names its query
        return np.zeros_like(ids, dtype=np.float32), ids


def rows(*values: float) -> np.ndarray:
    return np.array([[v, 0.0] for v in values], np.float32)


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_batcher_groups_compatible_requests_and_splits_answers() -> None:
    gate = Gate()
    b = SearchBatcher(gate, workers=1, max_batch=100)
    p5, p7 = BatchParams(5, None, None, None), BatchParams(7, None, None, None)

    async def scenario() -> list[Any]:
        first = asyncio.ensure_future(b.search(None, ("c", p5), rows(0), p5, deadline=1e18))
        await asyncio.to_thread(gate.entered.wait, 30)  # the worker is busy with the first request
        queued = [asyncio.ensure_future(b.search(None, ("c", p), rows(*v), p, deadline=1e18))
                  for p, v in ((p5, (1, 2)), (p7, (3,)), (p5, (4,)), (p7, (5, 6)))]
        await asyncio.sleep(0)
        gate.release.set()
        return await asyncio.gather(first, *queued)

    results = run(scenario())
    try:
        assert [r[1][:, 0].tolist() for r in results] == [[0], [1, 2], [3], [4], [5, 6]]
        assert [r[1].shape[1] for r in results] == [5, 5, 7, 5, 7]
        # three calls: the first request, then one per parameter group (k=5 rows 1,2,4; k=7 rows 3,5,6)
        assert sorted(c[:, 0].tolist() for c in gate.calls) == [[0.0], [1.0, 2.0, 4.0], [3.0, 5.0, 6.0]]
        assert b.batches == 3
    finally:
        b.close()


def test_batcher_cancelled_and_failing_requests_do_not_poison_the_batch() -> None:
    gate = Gate()
    b = SearchBatcher(gate, workers=1, max_batch=100)
    p = BatchParams(3, None, None, None)

    async def scenario() -> tuple[Any, ...]:
        blocker = asyncio.ensure_future(b.search(None, "g", rows(0), p, deadline=1e18))
        await asyncio.to_thread(gate.entered.wait, 30)
        gone = asyncio.ensure_future(b.search(None, "g", rows(10), p, deadline=1e18))
        good = asyncio.ensure_future(b.search(None, "g", rows(11), p, deadline=1e18))
        bad = asyncio.ensure_future(b.search(None, "g", rows(float("nan")), p, deadline=1e18))
        late = asyncio.ensure_future(b.search(None, "g", rows(12), p, deadline=0.0))  # deadline already passed
        await asyncio.sleep(0)
        gone.cancel()  # the client went away while queued: its rows are never searched
        gate.release.set()
        out = await asyncio.gather(blocker, good, bad, late, return_exceptions=True)
        return (*out, gone.cancelled())

    blocker, good, bad, late, gone_cancelled = run(scenario())
    try:
        assert gone_cancelled
        assert blocker[1][0, 0] == 0 and good[1][0, 0] == 11
        assert isinstance(bad, ValueError) and "NaN" in str(bad)
        assert type(late).__name__ == "DeadlineExceeded"
        searched = sorted(v for c in gate.calls for v in c[:, 0].tolist() if v == v)
        assert 10.0 not in searched and 12.0 not in searched  # cancelled and late rows never reached the index
    finally:
        b.close()


def test_batcher_splits_large_requests_into_chunks() -> None:
    gate = Gate()
    gate.release.set()
    b = SearchBatcher(gate, workers=2, max_batch=4)
    p = BatchParams(2, None, None, None)
    try:
        d, i = run(b.search(None, "g", rows(*range(10)), p, deadline=1e18))
        assert i[:, 0].tolist() == list(range(10))
        assert sorted(len(c) for c in gate.calls) == [2, 4, 4]
    finally:
        b.close()


# ---------------------------------------------------------------- over HTTP
@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    x = clustered(N, D, seed=3)
    ids = np.arange(N, dtype=np.uint64) * 7 + 1
    group = pa.array((np.arange(N) % 20).astype(np.int64))
    tag = pa.array([f"t{i % 5}" for i in range(N)])
    ref = vqsearch.Index.create(tmp_path_factory.mktemp("ref") / "b", **SPEC)
    ref.upsert(x, ids, metadata=pa.table({"group": group, "tag": tag}))
    with LiveServer(settings_for(tmp_path_factory.mktemp("data"))) as srv, srv.client(A) as c:
        assert c.post("/v1/collections", json={"name": "b", **SPEC}).status_code == 201
        r = c.post("/v1/collections/b/points", content=arrow_stream(vector_table(ids, x, group=group, tag=tag)),
                   headers={"Content-Type": ARROW})
        assert r.status_code == 200, r.text
        yield {"srv": srv, "client": c, "x": x, "ref": ref}


PARAMS = [{"k": 1}, {"k": 10}, {"k": 4, "filter": {"group": {"lt": 3}}}, {"k": 10, "filter": {"tag": "t2"}},
          {"k": 6, "oversample": 2}, {"k": 10, "filter": {"tag": "t2"}, "include": ["group"]}]


def test_concurrent_mixed_requests_equal_in_process_results(served: dict[str, Any]) -> None:
    x, ref, srv = served["x"], served["ref"], served["srv"]
    rng = np.random.default_rng(9)
    jobs = []
    for j in range(96):
        params = PARAMS[j % len(PARAMS)]
        q = x[rng.integers(0, N, 1 + j % 3)] + 0.01 * rng.standard_normal((1 + j % 3, D)).astype(np.float32)
        jobs.append((params, q.astype(np.float32)))

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=srv.url, headers=A, timeout=120,
                                     limits=httpx.Limits(max_connections=48)) as ac:
            return await asyncio.gather(*(ac.post("/v1/collections/b/search", json={"vectors": q.tolist(), **p})
                                          for p, q in jobs))

    responses = asyncio.run(fire())
    for (params, q), r in zip(jobs, responses):
        assert r.status_code == 200, r.text
        want_d, want_i = ref.search(q, **{k: v for k, v in params.items() if k != "include"})
        got = r.json()["results"]
        assert [[h["id"] for h in row] for row in got] == [[i for i in row if i >= 0] for row in want_i.tolist()]
        # scores may differ in the last float32 bit: a batch accumulates its dot products in another order
        np.testing.assert_allclose([h["score"] for row in got for h in row],
                                   want_d[want_i >= 0], rtol=1e-5, atol=1e-6)
        if "include" in params:
            assert all(h["metadata"]["group"] == (h["id"] - 1) // 7 % 20 for row in got for h in row)
    assert srv.app.state.vq.batcher.batched_rows >= sum(len(q) for _, q in jobs)


def test_binary_bodies_round_trip(served: dict[str, Any]) -> None:
    c, x = served["client"], served["x"]
    q = x[:5]
    url = "/v1/collections/b/search"
    js = c.post(url, json={"vectors": q.tolist(), "k": 8, "filter": {"group": {"lt": 3}}}).json()["results"]
    params = {"k": 8, "filter": '{"group": {"lt": 3}}'}
    r = c.post(url, content=write_f32(q), params=params, headers={"Content-Type": F32, "Accept": HITS})
    assert r.status_code == 200 and r.headers["content-type"] == HITS
    dist, ids = read_hits(r.content)
    assert ids.shape == (5, 8)
    assert [[i for i in row if i >= 0] for row in ids.tolist()] == [[h["id"] for h in row] for row in js]
    assert [[d for d, i in zip(dr, ir) if i >= 0] for dr, ir in zip(dist.tolist(), ids.tolist())] == \
        [[h["score"] for h in row] for row in js]
    # binary queries, JSON answer with metadata
    r = c.post(url, content=write_f32(q), params={"k": 3, "include": ["tag"]}, headers={"Content-Type": F32})
    assert r.status_code == 200, r.text
    assert all("tag" in h["metadata"] for row in r.json()["results"] for h in row)
    assert_error(c.post(url, content=write_f32(q), params={"include": ["tag"]},
                        headers={"Content-Type": F32, "Accept": HITS}), 406, "not_acceptable",
                 match="carry ids and scores only")
    assert_error(c.post(url, content=write_f32(q[:, :4]), headers={"Content-Type": F32}), 400,
                 "dimension_mismatch", f"collection 'b' has dim {D}, got 4")
    assert_error(c.post(url, content=write_f32(q)[:-3], headers={"Content-Type": F32}), 400, "invalid_input",
                 match="must be 328 bytes, got 325")
    assert_error(c.post(url, content=b"{}", headers={"Content-Type": "text/csv"}), 415, "unsupported_media_type",
                 match="text/csv")


def test_error_in_one_request_reaches_only_that_request(served: dict[str, Any]) -> None:
    srv, x = served["srv"], served["x"]
    nan_body = '{"vectors": [[NaN' + ", 0.0" * (D - 1) + ']], "k": 3}'

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=srv.url, headers=A, timeout=120) as ac:
            good = [ac.post("/v1/collections/b/search", json={"vectors": [x[i].tolist()], "k": 3}) for i in range(20)]
            bad = [ac.post("/v1/collections/b/search", content=nan_body, headers={"Content-Type": "application/json"})
                   for _ in range(5)]
            return await asyncio.gather(*good, *bad)

    out = asyncio.run(fire())
    assert all(r.status_code == 200 for r in out[:20]), [r.text for r in out[:20]]
    for r in out[20:]:
        assert_error(r, 400, "non_finite", "queries contains NaN or inf (first bad row: 0)")


def test_client_that_disconnects_does_not_disturb_others(served: dict[str, Any]) -> None:
    srv, x = served["srv"], served["x"]

    async def fire() -> list[Any]:
        async with httpx.AsyncClient(base_url=srv.url, headers=A, timeout=120) as ac:
            async def impatient() -> str:
                try:
                    await ac.post("/v1/collections/b/search", json={"vectors": x[:512].tolist(), "k": 50},
                                  timeout=0.001)
                except httpx.TimeoutException:
                    return "gave up"
                return "answered"
            tasks = [impatient() for _ in range(4)]
            tasks += [ac.post("/v1/collections/b/search", json={"vectors": [x[i].tolist()], "k": 2})
                      for i in range(16)]
            return await asyncio.gather(*tasks)

    out = asyncio.run(fire())
    want = served["ref"].search(x[:16], k=2)[1]
    assert [[h["id"] for h in r.json()["results"][0]] for r in out[4:]] == want.tolist()
    with srv.client(A) as c:  # the server is still healthy afterwards
        r = c.post("/v1/collections/b/search", json={"vectors": x[:3].tolist(), "k": 1})
        assert [row[0]["id"] for row in r.json()["results"]] == served["ref"].search(x[:3], k=1)[1][:, 0].tolist()


def test_empty_collection_and_k_above_size_pad_like_faiss(served: dict[str, Any], tmp_path: Path) -> None:
    c = served["client"]
    assert c.post("/v1/collections", json={"name": "tiny2", "dim": 2}).status_code == 201
    r = c.post("/v1/collections/tiny2/search", content=write_f32(np.ones((1, 2))), params={"k": 3},
               headers={"Content-Type": F32, "Accept": HITS})
    d, i = read_hits(r.content)
    assert i.tolist() == [[-1, -1, -1]] and np.isneginf(d).all()
    c.post("/v1/collections/tiny2/points", json={"ids": [5, 6], "vectors": [[1, 0], [0, 1]]})
    r = c.post("/v1/collections/tiny2/search", content=write_f32(np.array([[1.0, 0.1]])), params={"k": 3},
               headers={"Content-Type": F32, "Accept": HITS})
    d, i = read_hits(r.content)
    assert i.tolist() == [[5, 6, -1]] and np.isneginf(d[0, 2])
    c.delete("/v1/collections/tiny2")
