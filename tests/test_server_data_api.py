"""HTTP data API against a real uvicorn server on 127.0.0.1: versions, count, scroll, metadata updates,
search padding, Arrow list<float> vectors, text columns.  Regression tests for issue 15's HTTP bugs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from vqtest_data import clustered
from vqtest_server import A, LiveServer, R, assert_error, settings_for

DIM = 16


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer(settings_for(tmp_path_factory.mktemp("data-api"))) as srv:
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
