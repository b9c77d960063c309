"""``/v1/models`` over HTTP against a real uvicorn on 127.0.0.1 (the fixture pattern of test_server.py).

Tensors streamed over HTTP equal ``weights.load`` output (npy and safetensors, float32/float16, and
the raw Arrow record for ``encoding=codes``); shard files honour Range (206/416, suffix and open
ranges, If-Range) and ETag/304; auth is the collections' (401 without a key, read-only keys allowed).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pytest
from safetensors.numpy import load as st_load
from safetensors.numpy import save_file
from vqtest_server import READER, LiveServer, assert_error, settings_for

from vqsearch import weights
from vqsearch.weights.shards import decode_record

R = {"Authorization": f"Bearer {READER}"}


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
    assert batch.equals(pa.ipc.read_record_batch(pa.py_buffer(raw), weights.shards.SCHEMA))
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
