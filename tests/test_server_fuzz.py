"""Bounded fuzzing of the HTTP API with hypothesis-generated requests: no 5xx, every error is JSON.

Bodies are near-valid (the right keys with plausible or garbage values, metadata filters built
from the collection's real columns and operators), arbitrary JSON, raw bytes under several
media types, and random Arrow streams.  A schemathesis run then generates at least 2,000
requests from the OpenAPI document itself (every operation, every request media type,
including the Arrow and binary ones).  Fixed seed (``derandomize``), bounded examples.  The
server is a real uvicorn on 127.0.0.1; text collections use a small deterministic embedder so
that fuzzing does not load MiniLM.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import pyarrow as pa
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from vqtest_server import ARROW, A, LiveServer, arrow_stream, settings_for, vector_table

DIM = 4
COLUMNS = ["i", "f", "s", "b"]
OPS = ["eq", "ne", "gt", "gte", "lt", "lte", "in", "nin"]
FUZZ = settings(deadline=None, derandomize=True, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class HashEmbedder:
    """Deterministic 4-d unit vectors from a hash of the text (stands in for MiniLM)."""

    name, dim = "hash", DIM

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.empty((len(texts), DIM), np.float32)
        for j, t in enumerate(texts):
            seed = int.from_bytes(hashlib.sha256(t.encode("utf-8", "surrogatepass")).digest()[:8], "little")
            v = np.random.default_rng(seed).standard_normal(DIM)
            out[j] = v / np.linalg.norm(v)
        return out


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data: Path = tmp_path_factory.mktemp("fuzz-data")
    with LiveServer(settings_for(data, max_json_bytes=256 * 1024, max_arrow_bytes=1 << 20),
                    embedders={"minilm": HashEmbedder}) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(live: LiveServer) -> Iterator[httpx.Client]:
    with live.client(A) as c:
        rng = np.random.default_rng(0)
        n = 300
        assert c.post("/v1/collections", json={"name": "fz", "dim": DIM}).status_code == 201
        meta = {"i": rng.integers(-5, 5, n).tolist(), "f": rng.standard_normal(n).round(3).tolist(),
                "s": [f"s{k % 4}" for k in range(n)], "b": [bool(k % 2) for k in range(n)]}
        r = c.post("/v1/collections/fz/points", json={"ids": list(range(n)),
                                                       "vectors": rng.standard_normal((n, DIM)).tolist(),
                                                       "metadata": meta})
        assert r.status_code == 200, r.text
        assert c.post("/v1/collections", json={"name": "empty", "dim": DIM}).status_code == 201
        assert c.post("/v1/collections", json={"name": "txt", "embedder": "minilm"}).status_code == 201
        yield c


def check(r: httpx.Response) -> None:
    assert r.status_code < 500, (r.status_code, r.request.method, r.request.url, r.text[:500])
    if r.status_code >= 400:
        body = r.json()
        assert set(body) == {"error", "message"}, body
        assert isinstance(body["error"], str) and isinstance(body["message"], str) and body["message"]


def post_json(c: httpx.Client, method: str, url: str, body: Any) -> httpx.Response:
    content = json.dumps(body, allow_nan=True)  # NaN/Infinity tokens on purpose
    return c.request(method, url, content=content, headers={"Content-Type": "application/json"})


# ---------------------------------------------------------------- strategies
scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12))
json_values = st.recursive(scalars, lambda ch: st.lists(ch, max_size=4) | st.dictionaries(st.text(max_size=8), ch,
                                                                                           max_size=4),
                           max_leaves=12)


def mostly(good: st.SearchStrategy, bad: st.SearchStrategy = json_values, one_in: int = 20) -> st.SearchStrategy:
    """``good`` values, and ``bad`` ones about once in ``one_in`` draws.

    The flag sits in the middle of the list because hypothesis favours the ends of a range.
    """
    flags = [False] * (one_in // 2) + [True] + [False] * (one_in - one_in // 2 - 1)
    return st.sampled_from(flags).flatmap(lambda is_bad: bad if is_bad else good)


names = mostly(st.sampled_from(["fz", "empty", "txt", "new1", "new2", "x.y-z_1"]),
               st.sampled_from(["", "-bad", "a" * 65]) | st.text(max_size=70), one_in=4)
floats32 = mostly(st.floats(-1e3, 1e3, width=32), st.floats(width=32), one_in=10)
small_ints = mostly(st.integers(1, 12), st.integers(-3, 0) | st.integers(13, 2**65) | st.floats())
columns = mostly(st.sampled_from(COLUMNS), st.sampled_from(["new", "id", "and", ""]) | st.text(max_size=6))
specs = mostly(st.sampled_from(["binary", "sq8", "sq4", "float16", "ternary", "pq:m=2,nbits=4", "binary:rht=false"]),
               st.sampled_from(["sq8:bogus=1", "nope", "", "e8p:bits=9"]) | st.text(max_size=15), one_in=4)
COLUMN_VALUES = {"i": st.integers(-6, 6), "f": st.floats(-3, 3), "s": st.sampled_from(["s0", "s1", "s2", "zz"]),
                 "b": st.booleans()}


def vector_of(dim: int = DIM) -> st.SearchStrategy:
    return mostly(st.lists(floats32, min_size=dim, max_size=dim), st.lists(floats32, max_size=6))


@st.composite
def upsert_bodies(draw: st.DrawFn) -> Any:
    n = draw(st.integers(1, 6))
    body: dict[str, Any] = {"ids": draw(mostly(st.lists(st.integers(0, 400), min_size=n, max_size=n, unique=True),
                                               st.lists(st.integers(-2, 2**64) | scalars, max_size=6)))}
    if draw(st.integers(0, 4)):
        body["vectors"] = draw(mostly(st.lists(vector_of(), min_size=n, max_size=n)))
    if not draw(st.integers(0, 4)) or "vectors" not in body:
        body["texts"] = draw(mostly(st.lists(st.text(max_size=20), min_size=n, max_size=n)))
    if draw(st.booleans()):
        cols = draw(st.lists(columns, max_size=4, unique=True))
        body["metadata"] = {c: draw(mostly(st.lists(COLUMN_VALUES.get(c, scalars) | st.none(), min_size=n,
                                                    max_size=n), st.lists(scalars, max_size=6)))
                            for c in cols}
    return draw(mostly(st.just(body), one_in=12))


leaf_filter = st.dictionaries(columns, mostly(
    st.integers(-6, 6) | st.sampled_from(["s1", "s3"]) | st.booleans()
    | st.dictionaries(mostly(st.sampled_from(OPS), st.text(max_size=4)),
                      mostly(st.integers(-6, 6) | st.floats(-3, 3) | st.sampled_from(["s1"]) | st.booleans()
                             | st.lists(st.integers(-6, 6) | st.sampled_from(["s0", "s2"]), max_size=4)),
                      max_size=3), scalars), max_size=2)
filters = st.recursive(leaf_filter, lambda ch: st.fixed_dictionaries({"and": st.lists(ch, max_size=3)})
                       | st.fixed_dictionaries({"or": st.lists(ch, max_size=3)}) | st.fixed_dictionaries({"not": ch}),
                       max_leaves=6)


@st.composite
def search_bodies(draw: st.DrawFn) -> Any:
    body: dict[str, Any] = {}
    if draw(st.integers(0, 5)):
        body["vectors"] = draw(mostly(st.lists(vector_of(), min_size=1, max_size=3)))
    else:
        body["texts"] = draw(mostly(st.lists(st.text(max_size=20), min_size=1, max_size=3)))
    optional = {"k": small_ints, "filter": mostly(filters), "include": mostly(st.lists(columns, max_size=3)),
                "oversample": small_ints, "nprobe": small_ints}
    for key, strategy in optional.items():
        if draw(st.booleans()):
            body[key] = draw(strategy)
    return draw(mostly(st.just(body), one_in=12))


@st.composite
def create_bodies(draw: st.DrawFn) -> Any:
    body: dict[str, Any] = {"name": draw(names)}
    optional = {"dim": mostly(st.integers(1, 8)), "metric": mostly(st.sampled_from(["cosine", "ip", "l2"])),
                "scan": specs, "rescore": st.none() | specs, "oversample": small_ints,
                "ivf": mostly(st.none() | st.fixed_dictionaries({}, optional={"nlist": small_ints,
                                                                               "nprobe": small_ints})),
                "embedder": mostly(st.sampled_from([None, "minilm"]), st.sampled_from(["bert", 1]))}
    for key, strategy in optional.items():
        if draw(st.integers(0, 2)):
            body[key] = draw(strategy)
    return draw(mostly(st.just(body), one_in=12))


delete_bodies = mostly(st.fixed_dictionaries({"ids": mostly(st.lists(st.integers(0, 320), min_size=1, max_size=4,
                                                                     unique=True))}))
targets = st.sampled_from(["fz", "fz", "empty", "txt", "nope"])


# ---------------------------------------------------------------- tests
@settings(FUZZ, max_examples=100)
@given(body=create_bodies())
def test_fuzz_create_collection(client: httpx.Client, body: Any) -> None:
    r = post_json(client, "POST", "/v1/collections", body)
    check(r)
    if r.status_code == 201:
        name = r.json()["name"]
        check(client.post(f"/v1/collections/{quote(name, safe='')}/points",
                          json={"ids": [0, 1, 2], "vectors": [[0.5] * r.json()["dim"]] * 3}))
        check(client.delete(f"/v1/collections/{quote(name, safe='')}"))


@settings(FUZZ, max_examples=250)
@given(name=targets, body=upsert_bodies())
def test_fuzz_upsert_points(client: httpx.Client, name: str, body: Any) -> None:
    check(post_json(client, "POST", f"/v1/collections/{name}/points", body))


@settings(FUZZ, max_examples=400)
@given(name=targets, body=search_bodies())
def test_fuzz_search(client: httpx.Client, name: str, body: Any) -> None:
    check(post_json(client, "POST", f"/v1/collections/{name}/search", body))


@settings(FUZZ, max_examples=80)
@given(name=targets, body=delete_bodies)
def test_fuzz_delete_points(client: httpx.Client, name: str, body: Any) -> None:
    check(post_json(client, "DELETE", f"/v1/collections/{name}/points", body))


@settings(FUZZ, max_examples=80)
@given(name=names, point=st.integers(-5, 2**70).map(str) | st.text(max_size=10),
       include=st.lists(columns, max_size=3), vector=st.sampled_from(["true", "false", "1", "x"]))
def test_fuzz_get_paths(client: httpx.Client, name: str, point: str, include: list[str], vector: str) -> None:
    n = quote(name, safe="")
    check(client.get(f"/v1/collections/{n}"))
    check(client.get(f"/v1/collections/{n}/points/{quote(point, safe='')}",
                     params={"include": include, "vector": vector}))
    if name not in ("fz", "empty", "txt"):
        check(client.delete(f"/v1/collections/{n}"))


@settings(FUZZ, max_examples=120)
@given(path=st.sampled_from(["/v1/collections", "/v1/collections/fz/points", "/v1/collections/fz/search",
                             "/v1/collections/empty/points"]),
       ctype=st.sampled_from(["application/json", ARROW, "text/plain", "", "application/x+json; charset=latin-1"]),
       raw=st.binary(max_size=300))
def test_fuzz_raw_bodies(client: httpx.Client, path: str, ctype: str, raw: bytes) -> None:
    headers = {"Content-Type": ctype} if ctype else {}
    check(client.post(path, content=raw, headers=headers))


arrow_types = st.sampled_from([pa.int8(), pa.int64(), pa.uint64(), pa.float32(), pa.float64(), pa.string(),
                               pa.bool_(), pa.null(), pa.binary(), pa.date32(), pa.timestamp("ms")])


@st.composite
def arrow_bodies(draw: st.DrawFn) -> bytes:
    n = draw(st.integers(0, 6))
    cols: dict[str, pa.Array] = {}
    if draw(st.booleans()):
        t = draw(st.sampled_from([pa.uint64(), pa.int64(), pa.int8(), pa.float64(), pa.string()]))
        values = draw(st.lists(st.integers(-3, 300), min_size=n, max_size=n))
        arr = pa.array(values, pa.int64())
        cols["id"] = arr.cast(t, safe=False) if t != pa.string() else arr.cast(pa.string())
    if draw(st.booleans()):
        size = draw(st.sampled_from([DIM, DIM - 1, 1]))
        x = np.asarray(draw(st.lists(st.floats(width=32), min_size=n * size, max_size=n * size)), np.float32)
        vt = draw(st.sampled_from([pa.float32(), pa.float16(), pa.float64(), pa.int32()]))
        with np.errstate(over="ignore", invalid="ignore"):
            values = pa.array(x.astype(vt.to_pandas_dtype()) if vt != pa.float16() else x.astype(np.float16))
        cols["vector"] = pa.FixedSizeListArray.from_arrays(values, size) if size else values
    for name in draw(st.lists(st.sampled_from(COLUMNS + ["text", "extra"]), max_size=3, unique=True)):
        t = draw(arrow_types)
        cols[name] = pa.nulls(n, t) if draw(st.booleans()) else pa.array([None] * n, t)
        if t == pa.string():
            cols[name] = pa.array([draw(st.text(max_size=5)) for _ in range(n)], t)
        elif t == pa.int64():
            cols[name] = pa.array(draw(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=n, max_size=n)), t)
    return arrow_stream(pa.table(cols)) if cols else arrow_stream(pa.table({"x": pa.nulls(n)}))


@settings(FUZZ, max_examples=150)
@given(name=targets, body=arrow_bodies())
def test_fuzz_arrow_ingest(client: httpx.Client, name: str, body: bytes) -> None:
    check(client.post(f"/v1/collections/{name}/points", content=body, headers={"Content-Type": ARROW}))


def test_fuzz_server_still_consistent(client: httpx.Client) -> None:
    """After the fuzzing, the seeded collection is still searchable and the vector ingest still works."""
    x = np.eye(DIM, dtype=np.float32)
    r = client.post("/v1/collections/fz/points", content=arrow_stream(vector_table(np.arange(1000, 1004), x)),
                    headers={"Content-Type": ARROW})
    check(r)
    res = client.post("/v1/collections/fz/search", json={"vectors": x.tolist(), "k": 1})
    assert res.status_code == 200, res.text
    assert len(res.json()["results"]) == DIM


# ---------------------------------------------------------------- schemathesis over the OpenAPI document
#: Documented 5xx answers that generated input may legitimately get (deadline and overload codes).
ALLOWED_5XX = {"deadline_exceeded", "overloaded"}
SCHEMA_EXAMPLES = 75  # per operation, media type and mode (positive/negative): the test asserts >= 2,000 requests


def _fuzz_operation(case_strategy: st.SearchStrategy, calls: list[int]) -> None:
    """Up to SCHEMA_EXAMPLES generated cases; a strategy with nothing to generate (negative cases of an
    operation without parameters) is skipped."""
    @settings(FUZZ, max_examples=SCHEMA_EXAMPLES)
    @given(case=case_strategy)
    def run(case: Any) -> None:
        r = case.call(headers=A, timeout=60)
        calls[0] += 1
        ctype = r.headers.get("content-type") or ""
        ctype = ctype[0] if isinstance(ctype, list) else ctype  # schemathesis keeps every header value in a list
        if r.status_code >= 500:
            code = r.json().get("error") if ctype.startswith("application/json") else None
            assert code in ALLOWED_5XX, (r.status_code, case.method, case.path, r.text[:300])
        if r.status_code >= 400 and case.method != "HEAD":  # HEAD answers carry no body
            where = (r.status_code, case.method, case.formatted_path, ctype, r.text[:300])
            assert ctype.startswith("application/json"), where
            try:
                body = json.loads(r.content)
            except ValueError:
                raise AssertionError(("not JSON", where, r.content[:100], dict(r.request.headers))) from None
            assert set(body) == {"error", "message"}, where

    try:
        run()
    except Unsatisfiable:
        pass


def test_schemathesis_no_5xx(live: LiveServer, client: httpx.Client) -> None:
    """Cases generated by schemathesis from /openapi.json, positive and negative, for every operation and
    request media type.  (Driven through ``as_strategy`` rather than schemathesis' pytest plugin, which does
    not support this pytest version.)"""
    from schemathesis import GenerationMode

    api = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    calls = [0]
    for result in api.get_all_operations():
        op = result.ok()
        types = api.get_request_payload_content_types(op) or [None]
        for media in types:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                _fuzz_operation(op.as_strategy(mode, media_type=media), calls)
    assert calls[0] >= 2_000, calls[0]
