"""HTTP data API against a real uvicorn server on 127.0.0.1: versions, count, scroll, metadata updates,
search padding, Arrow list<float> vectors, text columns.  Regression tests for issue 15's HTTP bugs."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pytest
from vqsearch.server import wire
from vqtest_data import clustered
from vqtest_server import ADMIN, ARROW, A, LiveServer, R, arrow_stream, assert_error, settings_for, vector_table

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
    with LiveServer(settings_for(tmp_path_factory.mktemp("data-api"), max_include_cells=5000),
                    embedders={"minilm": HashEmbedder}) as srv:
        yield srv


@pytest.fixture(scope="module")
def admin(live: LiveServer) -> Iterator[httpx.Client]:
    with live.client(A) as c:
        yield c


@pytest.fixture(scope="module")
def reader(live: LiveServer) -> Iterator[httpx.Client]:
    with live.client(R) as c:
        yield c


def _create(admin: httpx.Client, name: str, **kw: Any) -> None:
    r = admin.post("/v1/collections", json={"name": name, "dim": DIM, "rescore": "sq8", "ivf": None, **kw})
    assert r.status_code == 201, r.text


def _upsert(admin: httpx.Client, name: str, ids: list[int], x: np.ndarray, **meta: list[Any]) -> None:
    body = {"ids": ids, "vectors": x.tolist(), **({"metadata": meta} if meta else {})}
    r = admin.post(f"/v1/collections/{name}/points", json=body)
    assert r.status_code == 200, r.text


def test_versions_newest_first(admin: httpx.Client, reader: httpx.Client) -> None:
    _create(admin, "vers")
    t0 = time.time()
    r = reader.get("/v1/collections/vers/versions")
    assert r.status_code == 200, r.text
    first = r.json()
    assert first["collection"] == "vers" and first["current"] == first["versions"][0]["version"]
    x = clustered(60, DIM, seed=1)
    _upsert(admin, "vers", list(range(40)), x[:40])
    _upsert(admin, "vers", list(range(40, 60)), x[40:])
    body = reader.get("/v1/collections/vers/versions").json()
    assert set(body) == {"collection", "current", "versions"}
    versions = body["versions"]
    assert all(set(v) == {"version", "timestamp", "rows"} for v in versions)
    numbers = [v["version"] for v in versions]
    assert numbers == sorted(numbers, reverse=True) and body["current"] == numbers[0]
    assert versions[0]["rows"] == 60 and isinstance(versions[0]["timestamp"], float)
    assert versions[0]["timestamp"] >= t0 - 5
    assert body["current"] == admin.get("/v1/collections/vers").json()["version"]
    assert_error(reader.get("/v1/collections/nope/versions"), 404, "not_found", match="nope")
    assert_error(httpx.get(f"{reader.base_url}/v1/collections/vers/versions"), 401, "unauthorized")
    assert "/v1/collections/{name}/versions" in admin.get("/openapi.json").json()["paths"]


@pytest.fixture(scope="module")
def points(admin: httpx.Client) -> dict[str, Any]:
    """A collection of 300 points with metadata: tag (every 3rd 'three'), n."""
    _create(admin, "pts", metric="l2")
    n = 300
    x = clustered(n, DIM, seed=2)
    ids = [i * 2 + 1 for i in range(n)]
    _upsert(admin, "pts", ids, x, tag=["three" if i % 3 == 0 else "other" for i in range(n)], n=list(range(n)))
    return {"x": x, "ids": ids, "n": n}


def test_count(points: dict[str, Any], reader: httpx.Client, admin: httpx.Client) -> None:
    assert reader.post("/v1/collections/pts/count", json={}).json() == {"count": 300}
    assert reader.post("/v1/collections/pts/count", json={"filter": {"tag": "three"}}).json() == {"count": 100}
    assert reader.post("/v1/collections/pts/count", json={"filter": {"id": {"lt": 21}}}).json() == {"count": 10}
    assert_error(reader.post("/v1/collections/pts/count", json={"filter": {"nope": 1}}), 400, "invalid_input",
                 match="nope")
    assert_error(reader.post("/v1/collections/pts/count", json={"filter": {"n": 1 << 70}}), 400, "invalid_input",
                 match="out of range")
    assert_error(reader.post("/v1/collections/pts/count", json={"filter": {}, "x": 1}), 422, "validation_error")
    assert_error(reader.post("/v1/collections/nope/count", json={}), 404, "not_found")


def test_scroll_post_and_get(points: dict[str, Any], reader: httpx.Client) -> None:
    seen: list[int] = []
    after = None
    while True:
        body = {"limit": 70, "include": ["n"], **({"after": after} if after is not None else {})}
        page = reader.post("/v1/collections/pts/points/scroll", json=body).json()
        assert set(page) == {"ids", "metadata", "next_after"} and list(page["metadata"]) == ["n"]
        assert page["metadata"]["n"] == [(i - 1) // 2 for i in page["ids"]]
        seen += page["ids"]
        if page["next_after"] is None:
            break
        after = page["next_after"]
    assert seen == points["ids"]
    page = reader.post("/v1/collections/pts/points/scroll", json={"filter": {"tag": "three"}, "limit": 1000}).json()
    assert page["next_after"] is None and len(page["ids"]) == 100 and set(page["metadata"]) == {"tag", "n"}
    # GET /points was a 405 (issue 15)
    r = reader.get("/v1/collections/pts/points", params={"limit": 5, "after": 9})
    assert r.status_code == 200, r.text
    assert r.json()["ids"] == [11, 13, 15, 17, 19] and r.json()["next_after"] == 19
    r = reader.get("/v1/collections/pts/points", params={"limit": 3, "include": "tag", "filter": '{"tag": "three"}'})
    assert r.json() == {"ids": [1, 7, 13], "metadata": {"tag": ["three"] * 3}, "next_after": 13}
    empty = reader.post("/v1/collections/pts/points/scroll", json={"after": 10**6}).json()
    assert empty["ids"] == [] and empty["next_after"] is None
    assert_error(reader.post("/v1/collections/pts/points/scroll", json={"limit": 10**6}), 422, "validation_error",
                 match="limit")
    assert_error(reader.get("/v1/collections/pts/points", params={"limit": 0}), 422, "validation_error")
    assert_error(reader.get("/v1/collections/pts/points", params={"filter": "[1"}), 400, "malformed_json")
    assert_error(reader.post("/v1/collections/pts/points/scroll", json={"include": ["nope"]}), 400, "invalid_input",
                 match="unknown metadata column")
    # the cost bound: limit × columns ≤ max_include_cells (5000 in this server)
    assert_error(reader.post("/v1/collections/pts/points/scroll", json={"limit": 3000}), 400, "too_expensive",
                 match="max_include_cells")
    assert "/v1/collections/{name}/points/scroll" in reader.get("/openapi.json").json()["paths"]


def test_update_metadata(points: dict[str, Any], admin: httpx.Client, reader: httpx.Client) -> None:
    x = points["x"]
    before = reader.post("/v1/collections/pts/search", json={"vectors": x[:3].tolist(), "k": 5}).json()
    body = {"ids": [1, 3], "metadata": {"tag": ["edited", None], "reviewed": [True, False]}}
    assert_error(reader.patch("/v1/collections/pts/points/metadata", json=body), 403, "forbidden")
    r = admin.patch("/v1/collections/pts/points/metadata", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["updated"] == 2
    assert r.json()["version"] == reader.get("/v1/collections/pts/versions").json()["current"]
    got = reader.get("/v1/collections/pts/points/1").json()["metadata"]
    assert got == {"tag": "edited", "n": 0, "reviewed": True}
    assert reader.get("/v1/collections/pts/points/5").json()["metadata"]["reviewed"] is None
    after = reader.post("/v1/collections/pts/search", json={"vectors": x[:3].tolist(), "k": 5}).json()
    assert [[h["id"] for h in q] for q in after["results"]] == [[h["id"] for h in q] for q in before["results"]]
    bad = {"ids": [1, 2], "metadata": {"tag": ["a", "b"]}}  # 2 is not an id here
    assert_error(admin.patch("/v1/collections/pts/points/metadata", json=bad), 404, "unknown_ids")
    assert reader.get("/v1/collections/pts/points/1").json()["metadata"]["tag"] == "edited"  # nothing changed
    assert_error(admin.patch("/v1/collections/pts/points/metadata", json={"ids": [1], "metadata": {"t": [1, 2]}}),
                 422, "validation_error", match="1 ids")
    assert_error(admin.patch("/v1/collections/pts/points/metadata", json={"ids": [1], "metadata": {}}), 422,
                 "validation_error")
    assert_error(admin.patch("/v1/collections/pts/points/metadata", json={"ids": [1], "metadata": {"n": ["x"]}}),
                 400, "invalid_input", match="n")


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_search_pads_k_above_n_and_empty_collections(metric: str, admin: httpx.Client) -> None:
    name = f"small_{metric}"
    _create(admin, name, metric=metric)
    q = clustered(2, DIM, seed=9)
    hdr = {"Content-Type": wire.F32, "Accept": wire.HITS}
    r = admin.post(f"/v1/collections/{name}/search", params={"k": 4}, content=wire.write_f32(q), headers=hdr)
    dist, ids = wire.read_hits(r.content)
    fill = np.inf if metric == "l2" else -np.inf
    assert ids.shape == (2, 4) and (ids == -1).all() and (dist == fill).all()
    assert admin.post(f"/v1/collections/{name}/search", json={"vectors": q.tolist(), "k": 4}).json() == {
        "results": [[], []]}
    _upsert(admin, name, [5, 6, 7], clustered(3, DIM, seed=10))
    r = admin.post(f"/v1/collections/{name}/search", params={"k": 5}, content=wire.write_f32(q), headers=hdr)
    dist, ids = wire.read_hits(r.content)
    assert (np.sort(ids[:, :3], axis=1) == [5, 6, 7]).all() and (ids[:, 3:] == -1).all()
    assert (dist[:, 3:] == fill).all() and np.isfinite(dist[:, :3]).all()
    hits = admin.post(f"/v1/collections/{name}/search", json={"vectors": q.tolist(), "k": 5}).json()["results"]
    assert [[h["id"] for h in row] for row in hits] == ids[:, :3].tolist()


def test_arrow_ingest_accepts_list_float_vectors(admin: httpx.Client) -> None:
    _create(admin, "lists")
    x = clustered(50, DIM, seed=11)
    table = pa.table({"id": pa.array(np.arange(50), pa.uint64()), "vector": pa.array(x.tolist()),
                      "tag": ["a"] * 50})
    assert table.schema.field("vector").type == pa.list_(pa.float64())  # pyarrow's default
    r = admin.post("/v1/collections/lists/points", content=arrow_stream(table), headers={"Content-Type": ARROW})
    assert r.status_code == 200, r.text
    fixed = vector_table(np.arange(50, 100, dtype=np.uint64), x)
    assert admin.post("/v1/collections/lists/points", content=arrow_stream(fixed),
                      headers={"Content-Type": ARROW}).json() == {"upserted": 50, "count": 100}
    rows = x.tolist()
    rows[3] = rows[3][:-1]
    ragged = pa.table({"id": pa.array(np.arange(200, 250), pa.uint64()),
                       "vector": pa.array(rows, pa.list_(pa.float32()))})
    assert_error(admin.post("/v1/collections/lists/points", content=arrow_stream(ragged),
                            headers={"Content-Type": ARROW}), 400, "dimension_mismatch",
                 f"collection 'lists' has dim {DIM}, got a vector of length {DIM - 1} in row 3 of column 'vector'")
    strings = pa.table({"id": pa.array([1], pa.uint64()), "vector": pa.array([["a"]])})
    assert_error(admin.post("/v1/collections/lists/points", content=arrow_stream(strings),
                            headers={"Content-Type": ARROW}), 400, "invalid_arrow", match="list<float>")
    assert admin.post("/v1/collections/lists/count", json={}).json() == {"count": 100}


def test_text_collections_keep_their_text(admin: httpx.Client) -> None:
    r = admin.post("/v1/collections", json={"name": "texts", "embedder": "minilm", "rescore": "sq8", "ivf": None})
    assert r.status_code == 201, r.text
    docs = [f"document number {i} about {'python' if i % 2 else 'networks'}" for i in range(40)]
    r = admin.post("/v1/collections/texts/points", json={"ids": list(range(40)), "texts": docs,
                                                        "metadata": {"odd": [i % 2 == 1 for i in range(40)]}})
    assert r.status_code == 200, r.text
    table = pa.table({"id": pa.array([100, 101], pa.uint64()), "text": ["arrow one", "arrow two"]})
    r = admin.post("/v1/collections/texts/points", content=arrow_stream(table), headers={"Content-Type": ARROW})
    assert r.status_code == 200, r.text
    hits = admin.post("/v1/collections/texts/search", json={"texts": [docs[7]], "k": 1,
                                                            "include": ["text", "odd"]}).json()["results"][0]
    assert hits == [{"id": 7, "score": pytest.approx(1.0, abs=0.02), "metadata": {"text": docs[7], "odd": True}}]
    assert admin.get("/v1/collections/texts/points/101").json()["metadata"] == {"odd": None, "text": "arrow two"}
    assert admin.post("/v1/collections/texts/count", json={"filter": {"text": {"contains": "python"}}}).json() == {
        "count": 20}
    assert_error(admin.post("/v1/collections/texts/points", json={"ids": [1], "texts": ["x"],
                                                                 "metadata": {"text": ["y"]}}),
                 400, "invalid_input", match="filled from the texts")


def test_aliases(admin: httpx.Client, reader: httpx.Client, live: LiveServer) -> None:
    _create(admin, "alias_v1")
    _create(admin, "alias_v2")
    _upsert(admin, "alias_v1", [1, 2], clustered(2, DIM, seed=20))
    _upsert(admin, "alias_v2", [5, 6, 7], clustered(3, DIM, seed=21))
    assert_error(reader.put("/v1/aliases/current", json={"collection": "alias_v1"}), 403, "forbidden")
    r = admin.put("/v1/aliases/current", json={"collection": "alias_v1"})
    assert r.status_code == 200 and r.json() == {"alias": "current", "collection": "alias_v1"}
    assert reader.post("/v1/collections/current/count", json={}).json() == {"count": 2}
    assert reader.get("/v1/collections/current").json()["name"] == "alias_v1"
    admin.put("/v1/aliases/current", json={"collection": "alias_v2"})  # moved at once
    hits = reader.post("/v1/collections/current/search", json={"vectors": clustered(1, DIM, seed=21).tolist(),
                                                               "k": 3}).json()["results"][0]
    assert sorted(h["id"] for h in hits) == [5, 6, 7]
    assert reader.get("/v1/aliases").json() == {"aliases": {"current": "alias_v2"}}
    assert_error(admin.put("/v1/aliases/alias_v1", json={"collection": "alias_v2"}), 409, "already_exists",
                 match="is a collection")
    assert_error(admin.put("/v1/aliases/x", json={"collection": "current"}), 404, "not_found", match="is an alias")
    assert_error(admin.post("/v1/collections", json={"name": "current", "dim": DIM}), 409, "already_exists",
                 match="alias")
    assert_error(admin.delete("/v1/collections/current"), 409, "conflict", match="DELETE /v1/aliases/current")
    assert reader.post("/v1/collections/alias_v2/count", json={}).json() == {"count": 3}  # not deleted
    admin.put("/v1/aliases/old", json={"collection": "alias_v1"})
    assert admin.delete("/v1/collections/alias_v1").status_code == 200  # its aliases go with it
    assert reader.get("/v1/aliases").json() == {"aliases": {"current": "alias_v2"}}
    assert_error(reader.get("/v1/collections/old"), 404, "not_found")
    assert admin.delete("/v1/aliases/current").json() == {"alias": "current", "collection": "alias_v2"}
    assert_error(admin.delete("/v1/aliases/current"), 404, "not_found")
    assert_error(admin.put("/v1/aliases/bad name", json={"collection": "alias_v2"}), 400, "invalid_input")


def test_aliases_survive_a_restart(tmp_path: Path) -> None:
    import vqsearch

    with LiveServer(settings_for(tmp_path)) as srv, vqsearch.Client(srv.url, api_key=ADMIN) as c:
        c.create_collection("kept", dim=DIM, rescore="sq8", ivf=None).add(clustered(4, DIM, seed=30), progress=False)
        c.set_alias("live", "kept")
    with LiveServer(settings_for(tmp_path)) as srv, vqsearch.Client(srv.url, api_key=ADMIN) as c:
        assert c.list_aliases() == {"live": "kept"}
        assert c.collection("live").count() == 4
        c.delete_alias("live")
        assert c.list_aliases() == {}
