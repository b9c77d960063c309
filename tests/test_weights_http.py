"""``/v1/models`` and ``weights.load(url)`` against a real uvicorn on 127.0.0.1 (the fixture pattern of test_server.py).

Tensors streamed over HTTP equal ``weights.load`` output (npy and safetensors, float32/float16, and
the raw Arrow record for ``encoding=codes``); shard and model files honour Range (206/416, suffix and
open ranges, If-Range) and ETag/304; auth is the collections' (401 without a key, read-only keys
allowed).  ``weights.load(url)`` reads the same tensors bit for bit, lazily, through a disk cache
that is safe under concurrent use; no response reveals a server path.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pytest
from safetensors.numpy import load as st_load
from safetensors.numpy import save_file
from vqtest_data import DEBIAN
from vqtest_server import READER, LiveServer, assert_error, settings_for

from vqsearch import weights
from vqsearch.errors import Conflict, InvalidInput, NotFound
from vqsearch.weights.shards import SCHEMA, decode_record

R = {"Authorization": f"Bearer {READER}"}


@pytest.fixture(autouse=True)
def _no_home_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Remote loads that do not name a cache directory must not write to the user's home."""
    monkeypatch.setenv("VQSEARCH_CACHE_DIR", str(tmp_path / "default-cache"))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    rng = np.random.default_rng(7)
    root = tmp_path_factory.mktemp("weights-http")
    tensors = {
        "encoder.layer.0.dense.weight": (rng.standard_normal((96, 128)) * 0.05).astype(np.float32),
        "encoder.layer.0.dense.bias": rng.standard_normal(96).astype(np.float32),
        "emb/odd name.weight": rng.standard_normal((40, 64)).astype(np.float32),
        "position_ids": np.arange(8, dtype=np.int64)[None],
    }
    save_file(tensors, str(root / "model.safetensors"))
    (root / "config.json").write_text('{"model_type": "tiny"}')
    (root / "tokenizer.json").write_text('{"vocab": ["a b", "c"]}')
    models = root / "models"
    weights.compress(root / "model.safetensors", models / "tiny", format={"emb*": "int4", "*": "e8p:bits=2"},
                     shard_size=4096, progress=False)
    (models / "not-a-model").mkdir()
    with LiveServer(settings_for(root / "data", models_dir=models)) as srv:
        yield {"server": srv, "archive": weights.load(models / "tiny"), "root": models / "tiny", "tensors": tensors}


@pytest.fixture(scope="module")
def client(served: dict[str, Any]) -> Iterator[httpx.Client]:
    with served["server"].client(R) as c:
        yield c


def test_list_and_manifest(client: httpx.Client, served: dict[str, Any]) -> None:
    r = client.get("/v1/models")
    assert r.status_code == 200, r.text
    [m] = r.json()["models"]
    info = weights.info(served["root"])
    assert m["name"] == "tiny" and m["tensors"] == 4 and m["params"] == info.total_params
    assert m["bits_per_param"] == pytest.approx(info.bits_per_param)
    r = client.get("/v1/models/tiny")
    assert r.status_code == 200
    assert r.json() == json.loads((served["root"] / "manifest.json").read_text())
    etag = r.headers["etag"]
    r2 = client.get("/v1/models/tiny", headers={"If-None-Match": etag})
    assert r2.status_code == 304 and r2.content == b""
    assert_error(client.get("/v1/models/nope"), 404, "not_found", "model 'nope' not found")
    assert_error(client.get("/v1/models/not-a-model"), 404, "not_found", "model 'not-a-model' not found")


def test_listed_shards_are_reachable_at_their_urls(client: httpx.Client, served: dict[str, Any]) -> None:
    """Regression: the listing said ``shards/00000.arrows`` and ``…/shards/shards/00000.arrows`` was a 404."""
    [m] = client.get("/v1/models").json()["models"]
    assert m["url"] == "/v1/models/tiny" and len(m["shards"]) >= 2
    for shard in m["shards"]:
        data = (served["root"] / shard["file"]).read_bytes()
        assert shard["url"] == f"{m['url']}/{shard['file']}" and shard["bytes"] == len(data)
        r = client.get(shard["url"])
        assert r.status_code == 200 and r.content == data
    assert m["files"] == ["files/config.json", "files/tokenizer.json"]
    r = client.get(f"{m['url']}/files/tokenizer.json", headers={"Range": "bytes=1-5"})
    assert r.status_code == 206 and r.content == b'{"vocab": ["a b", "c"]}'[1:6]
    assert_error(client.get("/v1/models/tiny/files/../manifest.json"), 404, "not_found")
    assert_error(client.get("/v1/models/tiny/files/nope.json"), 404, "not_found",
                 "model 'tiny' has no file 'nope.json'")


def test_no_response_reveals_a_server_path(client: httpx.Client, served: dict[str, Any]) -> None:
    """Regression: the served manifest held the source's absolute path; errors named shard paths."""
    secret = str(served["root"].parents[1])
    assert secret not in client.get("/v1/models").text
    assert secret not in client.get("/v1/models/tiny").text
    # a version-1 manifest on disk (written before this fix) is served without its local paths
    legacy = served["root"].parent / "legacy"
    shutil.copytree(served["root"], legacy)
    try:
        m = json.loads((legacy / "manifest.json").read_text())
        m.update(format_version=1, source={"path": f"{secret}/model.safetensors", "metadata": {}})
        m["config"]["source"] = f"{secret}/model.safetensors"
        (legacy / "manifest.json").write_text(json.dumps(m))
        r = client.get("/v1/models/legacy")
        assert r.status_code == 200 and secret not in r.text and "path" not in r.json()["source"]
        # a corrupt shard is reported by model name, never by where it lives
        entry = m["tensors"][0]
        shard = legacy / entry["shard"]
        data = bytearray(shard.read_bytes())
        data[entry["offset"] + entry["length"] // 2] ^= 0x40
        shard.write_bytes(bytes(data))
        r = client.get(f"/v1/models/legacy/tensors/{entry['name']}")
        assert_error(r, 500, "corrupt_data", match=r"^legacy/shards/00000\.arrows: tensor .* fails its SHA-256")
        assert secret not in r.text
        # a damaged manifest: the model is named, not its folder, and the listing still shows the others
        (legacy / "manifest.json").write_text("{not json")
        r = client.get("/v1/models/legacy")
        assert_error(r, 500, "corrupt_data", match=r"^legacy/manifest\.json: manifest is not valid JSON")
        assert secret not in r.text
        assert [m["name"] for m in client.get("/v1/models").json()["models"]] == ["tiny"]
    finally:
        shutil.rmtree(legacy)


def test_load_url_equals_local_load_bit_for_bit(served: dict[str, Any], tmp_path: Path) -> None:
    srv: LiveServer = served["server"]
    local = served["archive"]
    remote = weights.load(f"{srv.url}/v1/models/tiny", api_key=READER, cache_dir=tmp_path / "cache")
    assert isinstance(remote, weights.RemoteArchive) and set(remote) == set(local)
    for name in local:
        a, b = local[name], remote[name]
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes()
    assert remote.file_path("files/config.json").read_text() == '{"model_type": "tiny"}'
    remote_info = weights.info(f"{srv.url}/v1/models/tiny", api_key=READER, cache_dir=tmp_path / "cache")
    assert remote_info.path == f"{srv.url}/v1/models/tiny" and remote_info.total_bits == weights.info(
        served["root"]).total_bits
    out = weights.decompress(f"{srv.url}/v1/models/tiny", tmp_path / "r.safetensors", api_key=READER,
                             cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(st_load(out.read_bytes())["emb/odd name.weight"], local["emb/odd name.weight"])


def test_load_url_errors_name_the_url_intact(served: dict[str, Any], tmp_path: Path) -> None:
    """Regression: ``weights.load("http://…")`` said ``no compressed model at http:/127.0.0.1…``."""
    srv: LiveServer = served["server"]
    url = f"{srv.url}/v1/models/nope"
    with pytest.raises(weights.RemoteError, match=r"HTTP 401 unauthorized: missing API key"):
        weights.load(f"{srv.url}/v1/models/tiny", cache_dir=tmp_path)
    with pytest.raises(NotFound, match=f"^{re.escape(url)}: model 'nope' not found$"):
        weights.load(url, api_key=READER, cache_dir=tmp_path)
    with pytest.raises(weights.RemoteError, match=r"cannot reach http://127\.0\.0\.1:9/v1/models/m"):
        weights.load("http://127.0.0.1:9/v1/models/m", cache_dir=tmp_path, timeout=5)
    with pytest.raises(InvalidInput, match="api_key applies to model URLs only"):
        weights.load(served["root"], api_key=READER)


def test_remote_cache_is_lazy_shared_and_self_healing(served: dict[str, Any], tmp_path: Path) -> None:
    srv: LiveServer = served["server"]
    url, cache = f"{srv.url}/v1/models/tiny", tmp_path / "cache"
    local = served["archive"]
    blobs = cache / "blobs"
    first = weights.load(url, api_key=READER, cache_dir=cache)
    assert not blobs.exists()  # opening fetches the manifest only
    first["encoder.layer.0.dense.bias"]
    assert len(list(blobs.rglob("*"))) == 2  # one record (and its fan-out folder)
    # Concurrent readers with one cache directory: every tensor read by 4 threads at once.
    names = list(local)
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            arch = weights.load(url, api_key=READER, cache_dir=cache)
            for n in names:
                assert arch[n].tobytes() == local[n].tobytes()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and not any(t.is_alive() for t in threads)
    assert not list(blobs.rglob(".part-*"))  # no temporary files left behind
    # A damaged blob is fetched again instead of being decoded.
    victim = local.entry("encoder.layer.0.dense.weight")["sha256"]
    path = blobs / victim[:2] / victim
    path.write_bytes(b"x" * path.stat().st_size)
    again = weights.load(url, api_key=READER, cache_dir=cache)
    assert again["encoder.layer.0.dense.weight"].tobytes() == local["encoder.layer.0.dense.weight"].tobytes()
    assert again.prefetch() == 0  # everything is cached now


def test_remote_model_replaced_on_the_server_is_never_mixed(tmp_path: Path) -> None:
    """If-Range pins reads to the shards the manifest described; a cached model also works offline."""
    rng = np.random.default_rng(3)
    src = tmp_path / "m.safetensors"
    save_file({"a.weight": rng.standard_normal((64, 64)).astype(np.float32),
               "b.weight": rng.standard_normal((64, 64)).astype(np.float32)}, str(src))
    models = tmp_path / "models"
    weights.compress(src, models / "m", format="int4", progress=False)
    cache = tmp_path / "cache"
    with LiveServer(settings_for(tmp_path / "data", models_dir=models)) as srv:
        url = f"{srv.url}/v1/models/m"
        old = weights.load(url, api_key=READER, cache_dir=cache)
        a_old = old["a.weight"]
        weights.compress(src, models / "m", format="int:bits=3", progress=False, overwrite=True)
        with pytest.raises(Conflict, match="no longer matches the manifest"):
            old["b.weight"]
        new = weights.load(url, api_key=READER, cache_dir=cache)
        assert new.entry("a.weight")["format"].startswith("int:bits=3")
        new.prefetch()
        expected = {n: new[n] for n in new}
    offline = weights.load(url, api_key=READER, cache_dir=cache, timeout=5)  # the server is gone
    assert {n: offline[n].tobytes() for n in offline} == {n: v.tobytes() for n, v in expected.items()}
    assert not np.array_equal(a_old, expected["a.weight"])


@pytest.mark.parametrize("name", ["encoder.layer.0.dense.weight", "encoder.layer.0.dense.bias", "emb/odd name.weight",
                                  "position_ids"])
def test_streamed_tensors_equal_weights_load(client: httpx.Client, served: dict[str, Any], name: str) -> None:
    expected = served["archive"][name]
    r = client.get(f"/v1/models/tiny/tensors/{name}")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/x-npy"
    got = np.load(io.BytesIO(r.content), allow_pickle=False)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    r = client.get(f"/v1/models/tiny/tensors/{name}", params={"encoding": "float16", "container": "safetensors"})
    assert r.status_code == 200
    got = st_load(r.content)[name]
    exp16 = expected.astype(np.float16) if expected.dtype.kind == "f" else expected
    np.testing.assert_array_equal(got, exp16)
    # codes: the stored Arrow record, as a standalone IPC stream, decodes to the same tensor
    r = client.get(f"/v1/models/tiny/tensors/{name}", params={"encoding": "codes"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/vnd.apache.arrow.stream"
    [batch] = list(pa.ipc.open_stream(r.content))
    entry = served["archive"].entry(name)
    raw = (served["root"] / entry["shard"]).read_bytes()[entry["offset"]:entry["offset"] + entry["length"]]
    meta, arrays = decode_record(raw, "shard")
    assert batch.equals(pa.ipc.read_record_batch(pa.py_buffer(raw), SCHEMA))
    np.testing.assert_array_equal(weights.decode_tensor(arrays, meta), expected)


def test_tensor_etag_range_and_errors(client: httpx.Client) -> None:
    url = "/v1/models/tiny/tensors/encoder.layer.0.dense.weight"
    full = client.get(url)
    etag = full.headers["etag"]
    assert client.get(url, headers={"If-None-Match": etag}).status_code == 304
    assert client.get(url, params={"encoding": "float16"}).headers["etag"] != etag
    part = client.get(url, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == full.content[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(full.content)}"
    assert_error(client.get("/v1/models/tiny/tensors/missing.weight"), 404, "not_found",
                 match="tensor 'missing.weight' is not in")
    assert_error(client.get(url, params={"encoding": "int3"}), 422, "validation_error", match="encoding")


def test_shard_files_support_range_and_etag(client: httpx.Client, served: dict[str, Any]) -> None:
    manifest = client.get("/v1/models/tiny").json()
    assert len(manifest["shards"]) >= 2
    shard = manifest["shards"][0]
    url = f"/v1/models/tiny/{shard['file']}"
    data = (served["root"] / shard["file"]).read_bytes()
    r = client.get(url)
    assert r.status_code == 200 and r.content == data and r.headers["accept-ranges"] == "bytes"
    etag = r.headers["etag"]
    assert etag.strip('"') == shard["sha256"][:40]
    assert client.get(url, headers={"If-None-Match": etag}).status_code == 304
    head = client.head(url)
    assert head.status_code == 200 and int(head.headers["content-length"]) == len(data) and head.content == b""
    # a tensor's byte range from the manifest
    t = next(t for t in manifest["tensors"] if t["shard"] == shard["file"])
    r = client.get(url, headers={"Range": f"bytes={t['offset']}-{t['offset'] + t['length'] - 1}"})
    assert r.status_code == 206 and r.content == data[t["offset"]:t["offset"] + t["length"]]
    assert r.headers["content-range"] == f"bytes {t['offset']}-{t['offset'] + t['length'] - 1}/{len(data)}"
    r = client.get(url, headers={"Range": "bytes=-100"})
    assert r.status_code == 206 and r.content == data[-100:]
    r = client.get(url, headers={"Range": f"bytes={len(data) - 10}-"})
    assert r.status_code == 206 and r.content == data[-10:]
    r = client.get(url, headers={"Range": "bytes=5-9", "If-Range": '"stale"'})
    assert r.status_code == 200 and r.content == data  # stale validator: the whole file
    r = client.get(url, headers={"Range": "bytes=5-9", "If-Range": etag})
    assert r.status_code == 206 and r.content == data[5:10]
    r = client.get(url, headers={"Range": f"bytes={len(data)}-"})
    assert_error(r, 416, "range_not_satisfiable", f"requested range is outside the {len(data)}-byte body")
    assert r.headers["content-range"] == f"bytes */{len(data)}"
    assert_error(client.get("/v1/models/tiny/shards/99999.arrows"), 404, "not_found",
                 "model 'tiny' has no shard '99999.arrows'")


def test_auth_as_for_collections(served: dict[str, Any]) -> None:
    srv: LiveServer = served["server"]
    with srv.client() as anon:
        assert_error(anon.get("/v1/models"), 401, "unauthorized",
                     "missing API key: send 'Authorization: Bearer <key>'")
        assert_error(anon.get("/v1/models/tiny/shards/00000.arrows"), 401, "unauthorized")
    with srv.client({"Authorization": "Bearer wrong-key-123"}) as bad:
        assert_error(bad.get("/v1/models/tiny"), 401, "unauthorized", "invalid API key")


def test_no_models_dir_configured(tmp_path: Path) -> None:
    with LiveServer(settings_for(tmp_path / "data")) as srv, srv.client(R) as c:
        r = c.get("/v1/models")
        assert r.status_code == 200 and r.json() == {"models": []}
        assert_error(c.get("/v1/models/x"), 404, "not_found",
                     "no models directory is configured (set VQSEARCH_MODELS_DIR)")


#: Issue 15's acceptance: MiniLM at 4 bits, served, loaded from its URL, encodes the shared queries with
#: this mean cosine to the float model.  E8P 4 bits with LDLQ measured 0.990 (RESULTS.md §4).
MINILM_URL_COSINE = 0.985


@pytest.mark.models
def test_minilm_served_at_4_bits_is_a_ready_sentence_transformer_from_its_url(tmp_path: Path) -> None:
    pytest.importorskip("sentence_transformers", reason="needs the models extra (sentence-transformers)")
    import pyarrow.parquet as pq

    from vqsearch.embed import model_dir

    try:
        folder = model_dir()
    except Exception as exc:  # MissingDependency: the model package is absent
        pytest.skip(f"needs the models extra: {exc}")
    if not (DEBIAN / "queries.parquet").exists():
        pytest.skip(f"shared Debian-MiniLM data not found at {DEBIAN}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    queries = pq.read_table(DEBIAN / "queries.parquet")
    texts = pq.read_table(DEBIAN / "texts.parquet").column("description").to_pylist()
    held_out = set(queries.column("label").to_pylist())  # no calibration text from the queries' packages
    calibration = [t for i, t in enumerate(texts) if i not in held_out and t][:256]
    res = weights.compress(folder / "model.safetensors", tmp_path / "models" / "minilm", format="e8p:bits=4",
                           calibration=calibration, calibration_options={"fisher": False}, progress=False)
    assert res.bits_per_param <= 4.1 and res.calibrated
    with LiveServer(settings_for(tmp_path / "data", models_dir=tmp_path / "models")) as srv:
        model = weights.load_sentence_transformer(f"{srv.url}/v1/models/minilm", api_key=READER,
                                                  cache_dir=tmp_path / "cache")
    model.max_seq_length = 64  # as the shared query vectors were made
    got = model.encode(queries.column("query").to_pylist(), batch_size=64, normalize_embeddings=True)
    ref = np.load(DEBIAN / "queries.f16.npy").astype(np.float32)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    cos = float(np.mean(np.sum(got * ref, axis=1)))
    assert cos >= MINILM_URL_COSINE, f"mean cosine {cos:.4f} < {MINILM_URL_COSINE} at 4 bits"
