"""Store test helpers: deterministic row contents per (id, generation), plain-Python models and their checks."""

from __future__ import annotations

import json
import random
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa

from vqsearch.storage import Store, StoreConfig, StorePolicy

CODES = {"scan": 8, "rescore": 16}
DIM = 4


# ------------------------------------------------------------------ helpers
def expected_rows(ids: np.ndarray, gen: int) -> dict:
    """Deterministic row contents for (id, generation): what the store must return."""
    ids = np.asarray(ids, dtype=np.uint64)
    key = (ids[:, None] * np.uint64(2654435761) + np.uint64(gen) * np.uint64(97)
           + np.arange(24, dtype=np.uint64)[None, :])
    raw = (key % np.uint64(251)).astype(np.uint8)
    return {
        "scan": raw[:, :8].copy(),
        "rescore": raw[:, 8:24].copy(),
        "vectors": (raw[:, :DIM].astype(np.float32) - 100.0) / 8.0,
        "list": (ids % np.uint64(7)).astype(np.int32),
        "meta": {"section": [f"s{int(i) % 3}" for i in ids], "year": [2000 + (int(i) + gen) % 30 for i in ids],
                 "gen": [gen] * len(ids)},
    }


def write(store: Store, ids, gen: int, *, upsert: bool = False, metadata: bool = True,
          extra_metadata: dict | None = None) -> int:
    """Write rows with the contents ``expected_rows(ids, gen)`` (plus ``extra_metadata`` columns)."""
    ids = np.asarray(ids, dtype=np.uint64)
    r = expected_rows(ids, gen)
    meta = {**r["meta"], **(extra_metadata or {})} if metadata else None
    return store.write(ids, {"scan": r["scan"], "rescore": r["rescore"]}, r["vectors"],
                       meta, extra={"list": r["list"]}, upsert=upsert)


def config(**policy) -> StoreConfig:
    return StoreConfig(code_columns=dict(CODES), dim=DIM, vector_dtype="float16",
                       blobs={"scan": b"quantiser-state-1"}, config={"metric": "cosine"},
                       policy=StorePolicy(**policy))


def check_matches(snap, model: dict[int, int]) -> None:
    """The snapshot holds exactly the ids of ``model``, each with its latest generation's contents."""
    live = np.concatenate([s.ids[s.live] for s in snap.segments]) if snap.segments else np.empty(0, np.uint64)
    assert sorted(live.tolist()) == sorted(model)
    assert snap.num_rows == len(model)
    for gen in set(model.values()):
        ids = np.array(sorted(i for i, g in model.items() if g == gen), dtype=np.uint64)
        rows = snap.get(ids)
        exp = expected_rows(ids, gen)
        np.testing.assert_array_equal(rows.columns["scan"], exp["scan"])
        np.testing.assert_array_equal(rows.columns["rescore"], exp["rescore"])
        np.testing.assert_array_equal(rows.vectors, exp["vectors"].astype(np.float16))
        np.testing.assert_array_equal(rows.extra["list"], exp["list"])
        assert rows.metadata.column("gen").to_pylist() == [gen] * len(ids)
        assert rows.metadata.column("year").to_pylist() == exp["meta"]["year"]


def listing(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def rewrite_manifest(root: Path, version: int, edit) -> None:
    """Edit a manifest body and re-seal it with a valid checksum (to test validation beyond the CRC)."""
    path = root / "_manifests" / f"{version:08d}.json"
    doc = json.loads(path.read_text())
    edit(doc["body"])
    canon = json.dumps(doc["body"], sort_keys=True, separators=(",", ":"))
    doc["crc32"] = zlib.crc32(canon.encode())
    path.write_text(json.dumps(doc))


# ------------------------------------------------------------------ metadata model
#: Metadata columns the evolving-schema tests draw from, with the type each is declared with.
POOL = {"a": pa.int64(), "s": pa.string(), "f": pa.float64(), "tags": pa.list_(pa.string()), "flag": pa.bool_(),
        "text": pa.string()}


def random_values(rng: random.Random, column: str, n: int, *, nulls: float = 0.2) -> list:
    """n random Python values of a pool column (about ``nulls`` of them None, never all None)."""
    def one():
        t = POOL[column]
        if t == pa.int64():
            return rng.randint(-50, 50)
        if t == pa.float64():
            return rng.choice([-1.5, 0.0, 0.25, 3.0, 1e9])
        if t == pa.bool_():
            return rng.random() < 0.5
        if pa.types.is_list(t):
            return rng.sample(["x", "y", "py", "pyarrow", "z"], rng.randint(0, 3))
        return rng.choice(["", "python", "pytest", "numpy", "py", "é", "x y"])
    out = [None if rng.random() < nulls else one() for _ in range(n)]
    if n and all(v is None for v in out):
        out[0] = one()
    return out


def metadata_table(values: dict[str, list]) -> pa.Table:
    """A pyarrow Table of pool columns with their declared types."""
    return pa.table({c: pa.array(v, POOL[c]) for c, v in values.items()})


class MetadataModel:
    """Plain-Python model of a store's metadata: the column order and each live row's values."""

    def __init__(self) -> None:
        self.columns: list[str] = []
        self.rows: dict[int, dict] = {}
        self.code_gen: dict[int, int] = {}  # the generation whose codes (expected_rows) each row holds

    def write(self, ids, values: dict[str, list] | None, gen: int) -> None:
        """A write or upsert: each row gets exactly the columns given (others null), and new codes."""
        self._declare(values or {})
        for k, i in enumerate(int(x) for x in ids):
            self.rows[i] = {c: v[k] for c, v in (values or {}).items()}
            self.code_gen[i] = gen

    def update(self, ids, values: dict[str, list]) -> None:
        """update_metadata: the named columns change, every other column and the codes stay."""
        self._declare(values)
        for k, i in enumerate(int(x) for x in ids):
            self.rows[i].update({c: v[k] for c, v in values.items()})

    def delete(self, ids) -> None:
        for i in ids:
            del self.rows[int(i)]
            del self.code_gen[int(i)]

    def expected(self, ids) -> list[dict]:
        return [{c: self.rows[int(i)].get(c) for c in self.columns} for i in ids]

    def copy(self) -> MetadataModel:
        out = MetadataModel()
        out.columns = list(self.columns)
        out.rows = {i: dict(r) for i, r in self.rows.items()}
        out.code_gen = dict(self.code_gen)
        return out

    def _declare(self, values: dict) -> None:
        self.columns += [c for c in values if c not in self.columns]


def check_model(snap, model: MetadataModel) -> None:
    """The snapshot holds exactly the model's rows: ids, codes of their generation, metadata, schema order."""
    ids = np.array(sorted(model.rows), dtype=np.uint64)
    live = np.concatenate([s.ids[s.live] for s in snap.segments]) if snap.segments else np.empty(0, np.uint64)
    assert sorted(live.tolist()) == ids.tolist()
    schema = snap.metadata_schema
    assert (schema.names if schema is not None else []) == model.columns
    if not ids.size:
        return
    rows = snap.get(ids)
    for gen in set(model.code_gen.values()):
        sel = np.array([model.code_gen[int(i)] == gen for i in ids])
        exp = expected_rows(ids[sel], gen)
        np.testing.assert_array_equal(rows.columns["scan"][sel], exp["scan"])
        np.testing.assert_array_equal(rows.columns["rescore"][sel], exp["rescore"])
        np.testing.assert_array_equal(rows.vectors[sel], exp["vectors"].astype(np.float16))
        np.testing.assert_array_equal(rows.extra["list"][sel], exp["list"])
    got = rows.metadata.to_pylist() if rows.metadata is not None else [{} for _ in ids]
    assert got == model.expected(ids)


def write_model_rows(store: Store, ids, gen: int, values: dict[str, list] | None, *, upsert: bool) -> int:
    """Write rows whose codes are ``expected_rows(ids, gen)`` and whose metadata is ``values``."""
    ids = np.asarray(ids, dtype=np.uint64)
    r = expected_rows(ids, gen)
    meta = None if not values else metadata_table(values)
    return store.write(ids, {"scan": r["scan"], "rescore": r["rescore"]}, r["vectors"], meta,
                       extra={"list": r["list"]}, upsert=upsert)
