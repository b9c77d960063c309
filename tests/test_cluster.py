"""vqsearch.cluster: sharded collections on a real local multi-node Ray cluster (2 nodes of 1 CPU).

One cluster serves the whole module (Ray start-up costs seconds); every wait is bounded, and the teardown
checks that no Ray process started here survives.  Tests that need no cluster (routing, merge, import
hygiene) come first and run without Ray installed.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from vqsearch.server import Settings
from vqtest_data import REPO_ROOT, clustered
from vqtest_ray import LocalRay
from vqtest_server import A, LiveServer, assert_error, settings_for

from vqsearch import Index, errors
from vqsearch.cli import build_parser
from vqsearch.cluster import SearchResult, ShardedIndex, ShardUnavailable
from vqsearch.cluster.merge import merge_topk
from vqsearch.cluster.routing import group_by_shard, mix64, shard_of

# ---------------------------------------------------------------- without a cluster


def test_import_vqsearch_does_not_import_ray(tmp_path):
    code = ("import sys, vqsearch, vqsearch.index, vqsearch.storage, vqsearch.cluster; "
            "from vqsearch.cluster import ShardedIndex; "
            "assert 'ray' not in sys.modules, sorted(m for m in sys.modules if m.startswith('ray'))")
    env = dict(os.environ, PYTHONSAFEPATH="1")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr


def test_routing_is_stable_and_even():
    # SplitMix64's published first output for seed 0, and fixed routes: a change of the hash would move
    # existing rows to other shards.
    assert int(mix64(np.zeros(1, dtype=np.uint64))[0]) == 0xE220A8397B1DCDAF
    assert shard_of(np.arange(12, dtype=np.uint64), 4).tolist() == [3, 1, 2, 1, 2, 2, 0, 3, 2, 0, 2, 1]
    assert shard_of(np.array([2**64 - 1], dtype=np.uint64), 7).tolist() == [0]
    counts = np.bincount(shard_of(np.arange(100_000, dtype=np.uint64), 8), minlength=8)
    assert counts.min() > 12_000 and counts.max() < 13_000
    ids = np.array([5, 17, 3, 99, 42], dtype=np.uint64)
    groups = group_by_shard(ids, 3)
    assert sorted(np.concatenate(groups).tolist()) == list(range(5))
    for s, rows in enumerate(groups):
        assert (shard_of(ids[rows], 3) == s).all()


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_merge_topk_is_the_topk_of_the_union(metric, rng):
    k, nq, shards = 7, 20, 3
    parts = []
    for s in range(shards):
        d = rng.standard_normal((nq, k)).astype(np.float32)
        d = np.sort(d, axis=1) if metric == "l2" else -np.sort(-d, axis=1)
        i = rng.choice(10_000, (nq, k), replace=False).astype(np.int64) + s * 10_000
        i[:, k - 2 + s % 2:] = -1  # shards with fewer than k hits pad with -1
        d[i < 0] = np.inf if metric == "l2" else -np.inf
        parts.append((d, i))
    got_d, got_i = merge_topk(parts, k, metric)
    all_d = np.concatenate([p[0] for p in parts], axis=1)
    all_i = np.concatenate([p[1] for p in parts], axis=1)
    for q in range(nq):
        pairs = sorted((float(d) if metric == "l2" else -float(d), int(i)) for d, i in zip(all_d[q], all_i[q])
                       if i >= 0)[:k]
        assert got_i[q].tolist() == [i for _, i in pairs] + [-1] * (k - len(pairs))
    one_d, one_i = merge_topk(parts[:1], k + 3, metric)  # one shard: padded to k
    assert one_i.shape == (nq, k + 3) and (one_i[:, k:] == -1).all()


# ---------------------------------------------------------------- the local Ray cluster

def test_serve_flag_reaches_the_settings(tmp_path):
    args = build_parser().parse_args(["serve", "--data", str(tmp_path), "--ray-address", "auto"])
    assert args.ray_address == "auto"
    assert Settings.load(environ={}, data_dir=tmp_path, ray_address=args.ray_address).ray_address == "auto"
    assert Settings.load(environ={"VQSEARCH_RAY_ADDRESS": "10.0.0.1:6379"}, data_dir=tmp_path).ray_address \
        == "10.0.0.1:6379"


def test_local_server_refuses_shards(tmp_path):
    with LiveServer(settings_for(tmp_path)) as server, server.client(A) as http:
        r = http.post("/v1/collections", json={"name": "docs", "dim": 8, "shards": 2})
        assert_error(r, 400, "invalid_input", match="shards and replicas need a Ray cluster")


try:
    import ray
except ImportError:  # the tests above still run; those below skip
    ray = None

pytestmark = pytest.mark.cluster
DIM = 32
OPTS = {"scan": "binary", "rescore": "sq8"}


@pytest.fixture(scope="module")
def local_ray():
    if ray is None:
        pytest.skip("the cluster extra (ray) is not installed")
    cluster = LocalRay(nodes=2)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def data():
    x = clustered(6000, DIM, seed=3)
    return x[:5000], x[5000:5100]


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    return tmp_path_factory.mktemp("cluster")


@pytest.fixture(scope="module")
def sx2(local_ray, data, roots):
    """Two shards, one replica each, holding the first 5,000 vectors with metadata."""
    xb, _ = data
    sx = ShardedIndex.create(roots / "two", DIM, shards=2, replicas=1, **OPTS)
    sx.add(xb, metadata={"n": np.arange(len(xb)), "tag": np.array(["even", "odd"])[np.arange(len(xb)) % 2]})
    yield sx
    sx.close()


def _single_like(sx, xb, ids=None, metadata=None) -> Index:
    """One Index with the collection's trained state holding the same rows."""
    idx = Index.create(None, dim=sx.dim, metric=sx.metric, **OPTS).load_trained_state(sx.trained_state())
    idx.add(xb, ids=np.arange(len(xb)) if ids is None else ids, metadata=metadata)
    return idx


def test_replicas_are_placed_and_kernels_not_shadowed(sx2):
    assert len(sx2.actors) == 2 and all(len(shard) == 1 for shard in sx2.actors)
    nodes = {row[0]["node_id"] for row in sx2.health()}
    assert len(nodes) == 2, "the two shards share a node"

    def probe(actor):
        spec = importlib.util.find_spec("kernels")
        return (None if spec is None else spec.origin), list(sys.path), os.getcwd()

    origin, path, cwd = ray.get(sx2.actors[0][0].__ray_call__.remote(probe), timeout=60)
    assert origin is None or not str(origin).startswith(str(REPO_ROOT / "kernels")), origin
    assert str(REPO_ROOT) not in [str(Path(p or cwd).resolve()) for p in path]


def test_search_equals_one_index_with_the_same_state(sx2, data):
    xb, xq = data
    single = _single_like(sx2, xb)
    assert sx2.stats()["state_id"] == single.state_id
    # Every row a rescoring candidate (oversample × k ≥ n): the merge is exactly the single index's answer.
    d, i = sx2.search(xq, k=10, oversample=500)
    sd, si = single.search(xq, k=10, oversample=500)
    np.testing.assert_array_equal(i, si)
    np.testing.assert_array_equal(d, sd)
    # Defaults: each shard keeps its own best candidates (a superset of the single index's), so the answers
    # agree almost everywhere, and wherever they differ the sharded one is at least as good.
    d, i = sx2.search(xq, k=10)
    sd, si = single.search(xq, k=10)
    assert np.mean(i == si) >= 0.95
    assert (d[:, -1] >= sd[:, -1] - 1e-6).all()
    assert isinstance(sx2.search(xq[0], k=3), SearchResult) and not sx2.search(xq[:2], k=3).partial


def test_filters_include_and_padding_across_shards(sx2, data):
    xb, xq = data
    meta = {"n": np.arange(len(xb)), "tag": np.array(["even", "odd"])[np.arange(len(xb)) % 2]}
    single = _single_like(sx2, xb, metadata=meta)
    flt = {"tag": "odd"}
    d, i = sx2.search(xq, k=10, filter=flt, oversample=500)
    np.testing.assert_array_equal(i, single.search(xq, k=10, filter=flt, oversample=500)[1])
    assert (i % 2 == 1).all()
    res = sx2.search(xq[:3], k=4, include=["n", "tag"])
    assert res.metadata.num_rows == 12
    assert res.metadata.column("n").to_pylist() == res.ids.ravel().tolist()
    rare = {"n": {"in": [1, 2, 3]}}  # fewer rows than k: the missing hits are -1 / -inf
    d, i = sx2.search(xq[:2], k=5, filter=rare, include=["n"])
    assert sorted(i[0, :3].tolist()) == [1, 2, 3] and (i[:, 3:] == -1).all() and np.isneginf(d[:, 3:]).all()
    assert d.shape == i.shape == (2, 5) and res.metadata.schema.names == ["n", "tag"]
    assert sx2.search(xq[:2], k=5, filter=rare, include=["n"]).metadata.column("n").null_count == 4
    assert sx2.search(xq[:2], k=3, include=[]).metadata.num_rows == 6
    assert sx2.get_metadata([4, 7], ["tag"]).column("tag").to_pylist() == ["even", "odd"]
    with pytest.raises(errors.UnknownIds, match="not found"):
        sx2.get_metadata([4, 10**9])
    with pytest.raises(errors.DimensionMismatch, match="dimension 31"):
        sx2.search(xq[:, :31], k=3)
    with pytest.raises(errors.InvalidInput, match="unknown metadata column"):
        sx2.search(xq[:2], k=3, include=["nope"])


def _meta(ids) -> dict:
    ids = np.asarray(ids)
    return {"n": ids.astype(np.int64), "tag": np.array(["even", "odd"])[ids % 2]}


def test_upsert_delete_and_id_routing(sx2, data):
    xb, xq = data
    ids = np.arange(len(xb), dtype=np.uint64)  # sx2 holds ids 0..4999, assigned by the cluster
    for shard, actor in enumerate(sx2.actors):  # each row lives on the shard its id hashes to
        held = ray.get(actor[0].contains.remote(ids), timeout=60)
        np.testing.assert_array_equal(np.flatnonzero(held), np.sort(group_by_shard(ids, 2)[shard]))
    # Explicit ids far above, then assigned ids continue after them (unique across shards).
    sx2.add(xb[:10], ids=np.arange(10_000, 10_010), metadata=_meta(np.arange(10_000, 10_010)))
    np.testing.assert_array_equal(sx2.add(xb[10:12], metadata=_meta([0, 1])), [10_010, 10_011])
    with pytest.raises(errors.Conflict, match="already exist"):  # nothing is written on any shard
        sx2.add(xb[:3], ids=[5, 20_000, 20_001], metadata=_meta([5, 20_000, 20_001]))
    assert not sx2.contains([20_000, 20_001]).any() and len(sx2) == 5012
    # Upsert replaces in place: id 7 now holds vector 4000's values.
    sx2.upsert(xb[4000:4001], ids=[7], metadata=_meta([7]))
    assert 7 in sx2.search(xb[4000:4001], k=2)[1][0].tolist() and len(sx2) == 5012
    with pytest.raises(errors.UnknownIds, match="not present"):  # nothing is deleted
        sx2.delete([1, 2, 999_999])
    assert sx2.contains([1, 2]).all()
    sx2.delete(np.arange(0, 900, 2))
    assert len(sx2) == 5012 - 450 and not sx2.contains([0, 2, 898]).any() and sx2.contains([1, 899]).all()
    _, hit = sx2.search(xq, k=10)
    assert not np.isin(hit, np.arange(0, 900, 2)).any()
    sx2.compact()
    assert len(sx2) == 4562
    with pytest.raises(errors.InvalidInput, match="upsert needs explicit ids"):
        sx2.upsert(xb[:2], ids=None)


@pytest.fixture(scope="module")
def replicated(local_ray, data, roots, tmp_path_factory):
    """Two shards × two replicas, bulk-built from two Parquet files (ids 1, 4, 7, ... and a tag column)."""
    xb, _ = data
    n, src = 3000, tmp_path_factory.mktemp("inputs")
    table = pa.table({"id": np.arange(n, dtype=np.int64) * 3 + 1,
                      "vector": pa.FixedSizeListArray.from_arrays(pa.array(xb[:n].ravel()), DIM),
                      "tag": [f"t{i % 5}" for i in range(n)]})
    pq.write_table(table.slice(0, 1700), src / "a.parquet", row_group_size=600)
    pq.write_table(table.slice(1700), src / "b.parquet", row_group_size=600)
    sx = ShardedIndex.build(roots / "built", src / "*.parquet", shards=2, replicas=2, **OPTS)
    yield sx
    sx.close()


def test_bulk_build_from_parquet_and_npy(replicated, data, tmp_path):
    xb, xq = data
    n, sx = 3000, replicated
    assert len(sx) == n and sx.get_metadata([4], ["tag"]).column("tag").to_pylist() == ["t1"]
    for shard in sx.health():  # the replicas of a shard sit on different nodes, each with every row
        assert len({r["node_id"] for r in shard}) == 2 and len({r["count"] for r in shard}) == 1
    single = Index.create(None, dim=DIM, **OPTS).load_trained_state(sx.trained_state())
    single.add(xb[:n], ids=np.arange(n) * 3 + 1)
    np.testing.assert_array_equal(sx.search(xq, k=10, oversample=300)[1],
                                  single.search(xq, k=10, oversample=300)[1])
    np.save(tmp_path / "more.npy", xb[n:n + 500])
    assert sx.add_files(tmp_path / "more.npy") == 500
    assert sx.contains([3 * (n - 1) + 2, 3 * (n - 1) + 501]).all()  # assigned after the largest id


def _wait_dead(actor, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ray.get(actor.ping.remote(), timeout=5)
        except ray.exceptions.RayActorError:
            return
        time.sleep(0.1)
    raise AssertionError("killed actor still answers")


def test_killed_replica_with_two_replicas_loses_no_acknowledged_write(replicated, data):
    xb, xq = data
    sx = replicated
    acknowledged = set(range(1, 9000, 3))  # the built rows
    victim = sx.actors[0][1]
    killer = threading.Timer(1.0, ray.kill, args=(victim,))
    killer.start()
    deadline = time.monotonic() + 120
    for step in range(30):  # writes and searches through the kill; bounded in count and time
        if time.monotonic() > deadline:
            break
        batch = np.arange(20_000 + 50 * step, 20_050 + 50 * step)
        sx.upsert(xb[batch % len(xb)], ids=batch, metadata={"tag": ["new"] * 50})
        acknowledged.update(batch.tolist())
        d, i = sx.search(xq, k=5)  # never fails: the other replica answers
        assert (i >= 0).all()
    killer.join()
    assert sx.actors[0][1] is not victim, "the dead replica was not replaced"
    want = np.array(sorted(acknowledged))
    assert sx.contains(want).all()
    for shard, rows in enumerate(group_by_shard(want, 2)):  # every replica holds every write
        for actor in sx.actors[shard]:
            assert ray.get(actor.contains.remote(want[rows]), timeout=60).all()
    assert all(r["alive"] for shard in sx.health() for r in shard)


def test_killed_single_replica_fails_typed_then_recovers(sx2, data):
    xb, xq = data
    before = len(sx2)
    expected = sx2.search(xq, k=10)
    victim = sx2.actors[1][0]
    ray.kill(victim)
    _wait_dead(victim)
    with pytest.raises(ShardUnavailable, match="shard"):
        sx2.search(xq, k=10)
    partial = sx2.search(xq, k=10, allow_partial=True)
    if partial.partial:  # unless the replacement was already up
        assert partial.missing_shards == (1,)
        assert (shard_of(partial.ids[partial.ids >= 0].astype(np.uint64), 2) == 0).all()
    deadline = time.monotonic() + 90
    while True:  # searches succeed again once the replacement has reopened the shard
        try:
            d, i = sx2.search(xq, k=10)
            break
        except ShardUnavailable:
            assert time.monotonic() < deadline, "shard 1 did not come back"
            time.sleep(0.5)
    assert sx2.actors[1][0] is not victim
    assert len(sx2) == before  # every committed row is back
    np.testing.assert_array_equal(i, expected[1])
    np.testing.assert_array_equal(d, expected[0])


@pytest.mark.slow
def test_debian_two_shards_match_a_single_index(local_ray, debian, roots):
    """Acceptance: the shared Debian-MiniLM set, default preset, 2 shards on the 2-node cluster."""
    xb, xq, gt = debian["xb"], debian["xq"], debian["gt"][:, :10]
    sx = ShardedIndex.create(roots / "debian", xb.shape[1], shards=2, timeout=1800)  # bounded, for a busy CI
    try:
        sx.add(xb)  # trained on the driver with all rows, like a single index's first add
        single = Index.create(None, dim=xb.shape[1])
        single.add(xb)
        assert single.state_id == sx.stats()["state_id"]  # the same trained state
        _, ids = sx.search(xq, k=10)
        _, sids = single.search(xq, k=10)
    finally:
        sx.close()
    # The ids each query returns, compared as sets: where the shards' wider candidate lists find a better
    # hit, it shifts the later ranks, so rank-by-rank equality understates the agreement (measured: 0.959).
    same = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, sids)]))
    recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, gt)]))
    single_recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(sids, gt)]))
    assert same >= 0.99, f"only {same:.4f} of the returned ids are the single index's"
    assert recall >= 0.95 and abs(recall - single_recall) <= 0.01, (recall, single_recall)


def test_serve_with_ray_address_keeps_sharded_collections(local_ray, data, tmp_path):
    """``vqsearch serve --ray-address``: the HTTP API over a sharded collection (a real uvicorn in this process
    connected to the module's cluster, as the flag makes it)."""
    x, queries = data
    xb, xq = x[:1000], queries[:10]
    ids = np.arange(1000, 2000)
    tags = np.array(["even", "odd"])[ids % 2]
    settings = settings_for(tmp_path / "data", ray_address=local_ray.cluster.address)
    with LiveServer(settings) as server, server.client(A) as http:
        r = http.post("/v1/collections", json={"name": "docs", "dim": DIM, "metric": "l2", "scan": "binary",
                                               "rescore": "sq8", "ivf": None, "shards": 2, "replicas": 1})
        assert r.status_code == 201, r.text
        info = r.json()
        assert (info["shards"], info["replicas"], info["count"], info["version"]) == (2, 1, 0, None)
        r = http.post("/v1/collections/docs/points",
                      json={"ids": ids.tolist(), "vectors": xb.tolist(), "metadata": {"tag": tags.tolist()}})
        assert r.status_code == 200, r.text
        assert r.json()["count"] == 1000
        sx = server.app.state.vq.registry.get("docs").index  # the server's ShardedIndex
        held = [int(ray.get(shard[0].contains.remote(ids), timeout=60).sum()) for shard in sx.actors]
        assert held == [len(g) for g in group_by_shard(ids.astype(np.uint64), 2)] and min(held) > 0
        # Searching every row as a rescoring candidate, the merged shards answer exactly like one Index with
        # the collection's trained state (ids and scores).
        single = Index.create(None, dim=DIM, metric="l2", scan="binary", rescore="sq8", ivf=None)
        single.load_trained_state(sx.trained_state())
        single.add(xb, ids=ids)
        want_d, want_i = single.search(xq, k=5, oversample=200)
        r = http.post("/v1/collections/docs/search",
                      json={"vectors": xq.tolist(), "k": 5, "oversample": 200, "include": ["tag"]})
        assert r.status_code == 200, r.text
        hits = r.json()["results"]
        np.testing.assert_array_equal([[h["id"] for h in q] for q in hits], want_i)
        np.testing.assert_allclose([[h["score"] for h in q] for q in hits], want_d, rtol=1e-6)
        assert all(h["metadata"]["tag"] == ("even" if h["id"] % 2 == 0 else "odd") for q in hits for h in q)
        # Filters, point reads (with the decoded vector) and deletes go through the shards too.
        r = http.post("/v1/collections/docs/search",
                      json={"vectors": xq[:2].tolist(), "k": 3, "filter": {"tag": "odd"}})
        assert r.status_code == 200 and all(h["id"] % 2 == 1 for q in r.json()["results"] for h in q)
        r = http.get("/v1/collections/docs/points/1003", params={"vector": "true"})
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["vector"], single.reconstruct([1003])[0], rtol=1e-5, atol=1e-6)
        assert_error(http.get("/v1/collections/docs/points/5"), 404, "unknown_ids")
        r = http.request("DELETE", "/v1/collections/docs/points", json={"ids": [1000, 1001]})
        assert r.status_code == 200, r.text
        assert http.get("/v1/collections/docs").json()["count"] == 998
        r = http.post("/v1/collections/docs/count", json={"filter": {"id": {"in": [1000, 1002, 1003]}}})
        assert r.status_code == 200 and r.json()["count"] == 2, r.text
        r = http.get("/v1/collections/docs/versions")
        assert r.status_code == 200 and r.json()["current"] is None and r.json()["versions"] == [], r.text
        assert_error(http.post("/v1/collections/docs/points/scroll", json={}), 409, "conflict", match="sharded")
        r = http.post("/v1/collections/docs/search", json={"vectors": xb[:1].tolist(), "k": 1})
        assert r.json()["results"][0][0]["id"] != 1000
        assert http.delete("/v1/collections/docs").status_code == 200
    assert not (tmp_path / "data" / "collections" / "docs").exists()


def test_whole_cluster_restart_reopens_from_disk(local_ray, sx2, replicated, data, roots):
    """Last: stops every Ray process of the module and reopens the collection on a fresh cluster."""
    xb, xq = data
    expected = sx2.search(xq, k=10)
    count = len(sx2)
    sx2.close()
    replicated.close()
    local_ray.restart()
    sx = ShardedIndex.open(roots / "two")
    try:
        assert len(sx) == count and sx.stats()["state_id"] == _single_like(sx, xb[:10]).state_id
        d, i = sx.search(xq, k=10)
        np.testing.assert_array_equal(i, expected[1])
        np.testing.assert_array_equal(d, expected[0])
        assert sx.add(xb[:2], metadata=_meta([0, 1])).tolist() == [10_012, 10_013]  # the id counter survived
    finally:
        sx.close()
