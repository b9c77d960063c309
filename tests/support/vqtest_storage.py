"""Store test helpers: deterministic row contents per (id, generation) and a model check."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np

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


def write(store: Store, ids, gen: int, *, upsert: bool = False, metadata: bool = True) -> int:
    ids = np.asarray(ids, dtype=np.uint64)
    r = expected_rows(ids, gen)
    return store.write(ids, {"scan": r["scan"], "rescore": r["rescore"]}, r["vectors"],
                       r["meta"] if metadata else None, extra={"list": r["list"]}, upsert=upsert)


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
