"""Storage layer: segments, manifests, versions, GC, compaction, locking, corruption handling.

Every test compares the store against a plain-Python model (dict id -> generation)
and derives expected row contents independently from (id, generation).
"""

from __future__ import annotations

import random
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from vqtest_storage import (
    CODES,
    POOL,
    MetadataModel,
    check_matches,
    check_model,
    config,
    expected_rows,
    listing,
    metadata_table,
    random_values,
    rewrite_manifest,
    write,
    write_model_rows,
)

from vqsearch.errors import (
    AlreadyExists,
    Conflict,
    CorruptData,
    DimensionMismatch,
    InvalidCodes,
    InvalidInput,
    NonFiniteInput,
    NotFound,
    UnknownIds,
)
from vqsearch.storage import Store, StoreConfig, StorePolicy
from vqsearch.storage.manifest import list_versions


@pytest.fixture
def store(tmp_path):
    st = Store.create(tmp_path / "idx", config())
    yield st
    st.close()


# ------------------------------------------------------------------ basics
def test_roundtrip_upsert_delete_and_reopen_in_new_process(store, tmp_path):
    model: dict[int, int] = {}
    write(store, np.arange(0, 50), 1)
    model.update(dict.fromkeys(range(50), 1))
    write(store, np.arange(40, 60), 2, upsert=True)  # 40..49 replaced, 50..59 new: newest wins
    model.update(dict.fromkeys(range(40, 60), 2))
    store.delete([0, 5, 45, 59])
    for i in (0, 5, 45, 59):
        del model[i]
    check_matches(store.snapshot(), model)
    store.close()

    reopened = Store.open(tmp_path / "idx", read_only=True)
    check_matches(reopened.snapshot(), model)
    assert reopened.config == {"metric": "cosine"} and reopened.blobs == {"scan": b"quantiser-state-1"}

    ids = sorted(model)
    code = ("import hashlib, sys, numpy as np\nfrom vqsearch.storage import Store\n"
            f"s = Store.open({str(tmp_path / 'idx')!r}, read_only=True).snapshot()\n"
            f"r = s.get(np.array({ids}, dtype=np.uint64))\n"
            "h = hashlib.sha256()\n"
            "for a in (r.columns['scan'], r.columns['rescore'], r.vectors, r.extra['list']): h.update(a.tobytes())\n"
            "h.update(str(r.metadata.to_pylist()).encode()); sys.stdout.write(h.hexdigest())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert out.returncode == 0, out.stderr
    import hashlib

    r = reopened.snapshot().get(np.array(ids, dtype=np.uint64))
    h = hashlib.sha256()
    for a in (r.columns["scan"], r.columns["rescore"], r.vectors, r.extra["list"]):
        h.update(a.tobytes())
    h.update(str(r.metadata.to_pylist()).encode())
    assert out.stdout == h.hexdigest()


def test_views_are_readonly_memory_maps_and_open_reads_no_data(store, tmp_path):
    write(store, np.arange(100), 1)
    store.close()
    st = Store.open(tmp_path / "idx", read_only=True)
    seg = st.snapshot().segments[0]
    assert seg.segment.verified_columns == frozenset()  # O(manifest) open: nothing checksummed yet
    scan = seg.column("scan")
    assert scan.shape == (100, CODES["scan"]) and scan.dtype == np.uint8
    assert not scan.flags.writeable and not scan.flags.owndata
    assert seg.segment.verified_columns == {"code:scan"}  # lazily, only the column that was used
    assert seg.ids.dtype == np.uint64 and seg.vectors.dtype == np.float16 and seg.extra("list").dtype == np.int32
    with pytest.raises(InvalidInput, match="unknown code column 'nope'"):
        seg.column("nope")


def test_get_unknown_ids_and_add_existing_ids(store):
    write(store, np.arange(10), 1)
    with pytest.raises(UnknownIds, match=r"2 id\(s\) not found: \[11, 12\]"):
        store.snapshot().get([3, 11, 12])
    with pytest.raises(Conflict, match=r"1 id\(s\) already exist \(use upsert"):
        write(store, [9, 10], 2)
    got = store.snapshot().get([7, 7, 2])  # repeated ids and request order are kept
    np.testing.assert_array_equal(got.ids, [7, 7, 2])
    np.testing.assert_array_equal(got.columns["scan"], expected_rows(np.array([7, 7, 2]), 1)["scan"])


def test_create_existing_and_open_missing(tmp_path):
    Store.create(tmp_path / "a", config()).close()
    with pytest.raises(AlreadyExists, match="an index already exists"):
        Store.create(tmp_path / "a", config())
    with pytest.raises(NotFound, match="no index at"):
        Store.open(tmp_path / "missing")


def test_metadata_inputs_normalised_to_one_storage_type(tmp_path):
    st = Store.create(tmp_path / "m", StoreConfig(code_columns={"c": 2}, dim=3))

    def codes(n):
        return {"c": np.zeros((n, 2), np.uint8)}

    st.write([0, 1], codes(2))  # before any metadata: rows get nulls later
    st.write([2, 3], codes(2), metadata={"tag": ["x", "y"], "n": np.array([1, 2])})
    st.write([4, 5], codes(2), metadata=pd.DataFrame({"n": [3, 4], "tag": pd.Categorical(["z", "x"])}))
    st.write([6], codes(1), metadata=pa.table({"tag": pa.array(["w"], pa.string()), "n": pa.array([5], pa.int8())}))
    st.write([7], codes(1), metadata=pa.record_batch({"tag": ["v"], "n": [6]}))
    schema = st.snapshot().metadata_schema
    assert schema.field("tag").type == pa.large_string() and schema.field("n").type == pa.int64()
    meta = st.snapshot().get(np.arange(8)).metadata
    assert meta.column("tag").to_pylist() == [None, None, "x", "y", "z", "x", "w", "v"]
    assert meta.column("n").to_pylist() == [None, None, 1, 2, 3, 4, 5, 6]
    st.compact()  # merges segments written with and without metadata
    assert st.stats()["segments"] == 1
    assert st.snapshot().get(np.arange(8)).metadata.equals(meta)
    masks = st.snapshot().filter_masks({"n": {"gte": 3}, "tag": {"nin": ["w"]}})
    got = np.concatenate([s.ids[m] for s, m in zip(st.snapshot().segments, masks)])
    assert sorted(got.tolist()) == [4, 5, 7]
    with pytest.raises(InvalidInput, match=r"metadata column 'n' has type string, expected int64"):
        st.write([8], codes(1), metadata={"tag": ["a"], "n": ["not a number"]})
    with pytest.raises(InvalidInput, match=r"metadata column name 'id' is reserved for the row id"):
        st.write([8], codes(1), metadata={"tag": ["a"], "id": [1]})
    with pytest.raises(InvalidInput, match=r"metadata has 2 rows, expected 1"):
        st.write([8], codes(1), metadata={"tag": ["a", "b"], "n": [1, 2]})
    with pytest.raises(InvalidInput, match="metadata column name .and. is reserved for the filter language"):
        Store.create(tmp_path / "r", StoreConfig(code_columns={}, dim=1,
                                                 metadata_schema=pa.schema([("and", pa.int8())])))
    st.close()


def test_time_travel(tmp_path):
    store = Store.create(tmp_path / "idx", config(auto_compact=False))
    v1 = write(store, np.arange(10), 1)
    v2 = write(store, np.arange(5, 15), 2, upsert=True)
    v3 = store.delete(np.arange(0, 3))
    assert [v.version for v in store.versions()] == [1, v1, v2, v3]
    assert [v.rows for v in store.versions()] == [0, 10, 15, 12]
    old = Store.open(tmp_path / "idx", version=v1, read_only=True)
    check_matches(old.snapshot(), dict.fromkeys(range(10), 1))
    mid = Store.open(tmp_path / "idx", version=v2, read_only=True)
    check_matches(mid.snapshot(), {**dict.fromkeys(range(5), 1), **dict.fromkeys(range(5, 15), 2)})
    with pytest.raises(InvalidInput, match="time travel.*read-only"):
        Store.open(tmp_path / "idx", version=v1, read_only=False)
    assert Store.open(tmp_path / "idx", version=v1).read_only  # time travel implies read-only
    with pytest.raises(NotFound, match="version 99 .* is not retained"):
        Store.open(tmp_path / "idx", version=99, read_only=True)
    assert store.restore(v1) == v3 + 1
    check_matches(store.snapshot(), dict.fromkeys(range(10), 1))
    store.close()


def test_retention_and_gc_keep_exactly_what_retained_versions_reference(tmp_path):
    root = tmp_path / "g"
    st = Store.create(root, config(keep_versions=3, merge_fanout=3, target_segment_bytes=1 << 16))
    model: dict[int, int] = {}
    rng = np.random.default_rng(4)
    for gen in range(1, 40):
        ids = rng.choice(300, size=int(rng.integers(1, 30)), replace=False)
        if gen % 5 == 0:
            present = [i for i in ids if i in model]
            if present:
                st.delete(present)
                for i in present:
                    del model[i]
            continue
        write(st, ids, gen, upsert=True)
        model.update(dict.fromkeys(ids.tolist(), gen))
    (root / "segments" / ("0" * 32 + ".arrow")).write_bytes(b"orphan from a crashed writer")
    write(st, [1000], 99)
    model[1000] = 99
    versions = list_versions(root)
    assert len(versions) == 3 and versions[-1] == st.version
    referenced: set[str] = set()
    for v in versions:
        old = Store.open(root, version=v, read_only=True)
        assert old.verify() == []  # every retained version is complete on disk
        referenced |= old.snapshot().manifest.files()
    on_disk = {str(p.relative_to(root)) for sub in ("segments", "deletions", "quantizers")
               for p in (root / sub).iterdir()}
    assert on_disk == referenced
    check_matches(st.snapshot(), model)
    st.close()


def test_pinned_snapshot_survives_newer_versions_and_gc(tmp_path):
    st = Store.create(tmp_path / "p", config(keep_versions=1))
    write(st, np.arange(20), 1)
    pinned = st.snapshot()
    write(st, np.arange(20), 2, upsert=True)
    st.compact()  # the pinned version's files are now unreferenced and deleted
    assert not (tmp_path / "p" / pinned.segments[0].name).exists()
    check_matches(pinned, dict.fromkeys(range(20), 1))
    check_matches(st.snapshot(), dict.fromkeys(range(20), 2))
    st.close()


def test_readers_open_consistent_versions_while_the_writer_commits_and_gcs(tmp_path):
    root = tmp_path / "r"
    st = Store.create(root, config(keep_versions=1, merge_fanout=2, target_segment_bytes=1 << 14))
    write(st, np.arange(20), 0)
    errors: list[BaseException] = []
    opened = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                snap = Store.open(root, read_only=True).snapshot()
                gens = {g for s in snap.segments
                        for g in np.asarray(s.metadata_table().column("gen").to_numpy())[s.live].tolist()}
                (gen,) = gens
                check_matches(snap, dict.fromkeys(range(20), gen))  # one whole version, never a mix
                opened.append(snap.version)
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)

    t = threading.Thread(target=reader)
    t.start()
    try:
        for gen in range(1, 40):  # every commit deletes the previous version's files
            write(st, np.arange(20), gen, upsert=True)
    finally:
        stop.set()
        t.join(30)
        st.close()
    assert not errors, errors[0]
    assert len(set(opened)) > 1


def test_single_writer_lock(tmp_path):
    root = tmp_path / "l"
    st = Store.create(root, config())
    with pytest.raises(Conflict, match=r"locked by another writer \(pid \d+"):
        Store.open(root)
    reader = Store.open(root, read_only=True)  # readers need no lock
    with pytest.raises(Conflict, match="opened read-only"):
        write(reader, [1], 1)
    write(st, [1], 1)
    assert reader.snapshot().num_rows == 0 and reader.refresh() == st.version and len(reader) == 1
    st.close()
    with pytest.raises(Conflict, match="is closed"):
        write(st, [2], 1)
    with Store.open(root) as again:
        write(again, [2], 1)
    Store.open(root).close()  # released by the context manager


# ------------------------------------------------------------------ bad input
BAD_CALLS = [
    ("wrong dim", DimensionMismatch, "vectors have dimension 5, expected 4",
     lambda st, r: st.write([100], {"scan": r["scan"], "rescore": r["rescore"]}, np.zeros((1, 5)), r["meta"],
                            extra={"list": r["list"]})),
    ("code width", InvalidCodes, "width 9 bytes, expected code_size 8",
     lambda st, r: st.write([100], {"scan": np.zeros((1, 9), np.uint8), "rescore": r["rescore"]}, r["vectors"],
                            r["meta"], extra={"list": r["list"]})),
    ("code dtype", InvalidCodes, "must be uint8",
     lambda st, r: st.write([100], {"scan": r["scan"].astype(np.int16), "rescore": r["rescore"]}, r["vectors"],
                            r["meta"], extra={"list": r["list"]})),
    ("missing column", InvalidInput, "do not match the index",
     lambda st, r: st.write([100], {"scan": r["scan"]}, r["vectors"], r["meta"], extra={"list": r["list"]})),
    ("duplicate ids", InvalidInput, r"duplicate ids in one batch \(1\): \[100\]",
     lambda st, r: st.write([100, 100], {"scan": np.repeat(r["scan"], 2, 0), "rescore": np.repeat(r["rescore"], 2, 0)},
                            np.repeat(r["vectors"], 2, 0), None, extra={"list": np.repeat(r["list"], 2)})),
    ("negative ids", InvalidInput, "must be non-negative",
     lambda st, r: st.write([-1], {"scan": r["scan"], "rescore": r["rescore"]}, r["vectors"], r["meta"],
                            extra={"list": r["list"]})),
    ("metadata length", InvalidInput, "metadata has 2 rows, expected 1",
     lambda st, r: st.write([100], {"scan": r["scan"], "rescore": r["rescore"]}, r["vectors"],
                            {k: v * 2 for k, v in r["meta"].items()}, extra={"list": r["list"]})),
    ("metadata type", InvalidInput, "metadata column 'year' has type string, expected int64",
     lambda st, r: st.write([100], {"scan": r["scan"], "rescore": r["rescore"]}, r["vectors"],
                            {**r["meta"], "year": ["x"]}, extra={"list": r["list"]})),
    ("metadata family", InvalidInput, "metadata column 'year' has type double, expected int64",
     lambda st, r: st.write([100], {"scan": r["scan"], "rescore": r["rescore"]}, r["vectors"],
                            {**r["meta"], "year": [1.5]}, extra={"list": r["list"]})),
    ("metadata overflow", InvalidInput, "metadata column 'year': cannot convert uint64 to int64",
     lambda st, r: st.write([100], {"scan": r["scan"], "rescore": r["rescore"]}, r["vectors"],
                            {**r["meta"], "year": np.array([2**63], np.uint64)}, extra={"list": r["list"]})),
    ("extra mismatch", InvalidInput, r"extra columns \['other'\] do not match the declared \['list'\]",
     lambda st, r: st.write([100], {"scan": r["scan"], "rescore": r["rescore"]}, r["vectors"], r["meta"],
                            extra={"other": r["list"]})),
    ("extra range", InvalidInput, "values out of range for int32",
     lambda st, r: st.write([100], {"scan": r["scan"], "rescore": r["rescore"]}, r["vectors"], r["meta"],
                            extra={"list": np.array([2**40])})),
    ("nan vector", NonFiniteInput, "vectors contain NaN",
     lambda st, r: st.write([100], {"scan": r["scan"], "rescore": r["rescore"]}, np.full((1, 4), np.nan),
                            r["meta"], extra={"list": r["list"]})),
    ("existing id", Conflict, "already exist",
     lambda st, r: write(st, [3], 5)),
    ("delete unknown", UnknownIds, r"cannot delete 1 id\(s\) that are not present: \[777\]",
     lambda st, r: st.delete([3, 777])),
    ("unknown filter field", InvalidInput, "unknown filter field 'colour'",
     lambda st, r: st.snapshot().filter_masks({"colour": "red"})),
]


@pytest.mark.parametrize("name,exc,match,call", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_input_raises_typed_error_and_leaves_store_unchanged(store, name, exc, match, call):
    write(store, np.arange(10), 1)
    store.delete([9])
    before = listing(store.path)
    version = store.version
    with pytest.raises(exc, match=match):
        call(store, expected_rows(np.array([100]), 7))
    assert store.version == version
    assert listing(store.path) == before
    check_matches(store.snapshot(), dict.fromkeys(range(9), 1))


def test_config_and_policy_validation(tmp_path):
    with pytest.raises(InvalidInput, match="code_size must be an int"):
        Store.create(tmp_path / "a", StoreConfig(code_columns={"scan": 0}, dim=4))
    with pytest.raises(InvalidInput, match="vector_dtype must be one of"):
        Store.create(tmp_path / "a", StoreConfig(code_columns={}, dim=4, vector_dtype="float64"))
    with pytest.raises(InvalidInput, match="config is not JSON-serialisable"):
        Store.create(tmp_path / "a", StoreConfig(code_columns={}, dim=4, config={"x": object()}))
    with pytest.raises(InvalidInput, match="keep_versions must be an int >= 1"):
        StorePolicy(keep_versions=0)
    with pytest.raises(InvalidInput, match="on_corrupt must be"):
        Store.open(tmp_path / "a", on_corrupt="ignore")
    assert not (tmp_path / "a" / "_manifests").exists()


def test_write_can_replace_config_and_blobs_atomically(store, tmp_path):
    r = expected_rows(np.arange(3), 1)
    store.write(np.arange(3), {"scan": r["scan"], "rescore": r["rescore"]}, r["vectors"], r["meta"],
                extra={"list": r["list"]}, config={"metric": "ip", "trained": True}, blobs={"scan": b"trained"})
    v = store.set_config(blobs={"scan": b"trained", "rescore": b"r"})
    reopened = Store.open(tmp_path / "idx", read_only=True)
    assert reopened.version == v and reopened.config == {"metric": "ip", "trained": True}
    assert reopened.blobs == {"scan": b"trained", "rescore": b"r"}
    assert reopened.snapshot().num_rows == 3


def test_code_columns_declared_after_training(tmp_path):
    st = Store.create(tmp_path / "t", StoreConfig(code_columns={}, dim=4, config={"scan": "pq"}))
    v = st.set_trained(code_columns={"scan": 3}, blobs={"scan": b"fitted"})
    assert st.layout.code_columns == {"scan": 3} and st.blobs == {"scan": b"fitted"} and st.version == v
    st.write([1, 2], {"scan": np.ones((2, 3), np.uint8)})
    with pytest.raises(Conflict, match="code columns are frozen once segments exist"):
        st.set_trained(code_columns={"scan": 4}, blobs={})
    st.close()
    again = Store.open(tmp_path / "t", read_only=True)
    assert again.layout.code_columns == {"scan": 3} and again.blobs == {"scan": b"fitted"}
    np.testing.assert_array_equal(again.snapshot().get([2]).columns["scan"], [[1, 1, 1]])


# ------------------------------------------------------------------ compaction
def test_auto_compaction_bounds_segments_and_drops_dead_rows(tmp_path):
    pol = {"merge_fanout": 4, "target_segment_bytes": 1 << 16, "keep_versions": 2}
    st = Store.create(tmp_path / "c", config(**pol))
    model: dict[int, int] = {}
    worst_partial = worst_files = 0
    for gen in range(1, 81):
        write(st, [gen], gen)
        model[gen] = gen
        worst_partial = max(worst_partial, st.stats()["partial_segments"])
        worst_files = max(worst_files, len(list((tmp_path / "c" / "segments").iterdir())))
    # Partial segments (< 32 KiB) fall in tiers 0 and 1 of 4 KiB * 4**t, at most fanout - 1 = 3 each.
    assert worst_partial <= 6, worst_partial
    assert worst_files <= 2 * 6 + 1, worst_files  # two retained versions' worth, no unbounded growth
    check_matches(st.snapshot(), model)
    big = np.arange(1000, 1400)
    write(st, big, 1)
    model.update(dict.fromkeys(big.tolist(), 1))
    st.delete(big[:120])  # 30 % of that segment: above max_deleted_fraction, so it is rewritten
    for i in big[:120].tolist():
        del model[i]
    assert st.stats()["dead_rows"] == 0
    check_matches(st.snapshot(), model)
    assert len(list((tmp_path / "c" / "_manifests").iterdir())) == 2
    st.close()


def test_compact_on_demand_and_large_writes_split(tmp_path):
    st = Store.create(tmp_path / "d", config(auto_compact=False, target_segment_bytes=8192))
    write(st, np.arange(500), 1)  # ~ 70 bytes/row with metadata: several segments, one version
    assert st.version == 2 and st.stats()["segments"] > 3
    model = dict.fromkeys(range(500), 1)
    for k in range(10):
        write(st, [1000 + k], 2)
        model[1000 + k] = 2
    st.delete(np.arange(0, 500, 3))
    for i in range(0, 500, 3):
        del model[i]
    before = st.stats()
    assert before["dead_rows"] == len(range(0, 500, 3))
    st.compact()
    after = st.stats()
    assert after["dead_rows"] == 0 and after["segments"] < before["segments"]
    check_matches(st.snapshot(), model)
    v = st.version
    assert st.compact() == v  # nothing left to do: no new version
    st.close()


# ------------------------------------------------------------------ corruption
def _segment_files(root: Path) -> list[Path]:
    return sorted((root / "segments").iterdir())


def _two_segment_store(tmp_path) -> Path:
    root = tmp_path / "x"
    with Store.create(root, config(auto_compact=False)) as st:
        write(st, np.arange(0, 20), 1)
        write(st, np.arange(20, 40), 2)
    return root


def test_truncated_segment_raises_and_skip_opens_the_rest(tmp_path):
    root = _two_segment_store(tmp_path)
    victim = Store.open(root, read_only=True).snapshot().segments[0].name
    path = root / victim
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CorruptData, match=rf"segment .*{Path(victim).name} has \d+ bytes, the manifest records"):
        Store.open(root)
    st = Store.open(root, on_corrupt="skip")
    assert [s.file for s in st.skipped] == [victim]
    check_matches(st.snapshot(), dict.fromkeys(range(20, 40), 2))
    write(st, [100], 3)  # the writer's next version drops the corrupt segment
    assert victim not in st.snapshot().manifest.files()
    st.close()
    check_matches(Store.open(root).snapshot(), {**dict.fromkeys(range(20, 40), 2), 100: 3})


def test_bitflip_is_caught_lazily_by_the_column_checksum(tmp_path):
    root = _two_segment_store(tmp_path)
    snap = Store.open(root, read_only=True).snapshot()
    victim = snap.segments[1]
    needle = expected_rows(np.array([25]), 2)["rescore"].tobytes()
    data = bytearray((root / victim.name).read_bytes())
    pos = data.find(needle)
    assert pos > 0
    data[pos + 3] ^= 0xFF
    (root / victim.name).write_bytes(bytes(data))
    st = Store.open(root, read_only=True)  # structure is intact: open stays O(manifest)
    seg = st.snapshot().segments[1]
    seg.column("scan")  # other columns are unaffected
    with pytest.raises(CorruptData, match=rf"{Path(victim.name).name}: checksum mismatch in column 'code:rescore'"):
        seg.column("rescore")
    assert [p.file for p in st.verify()] == [victim.name]
    skipping = Store.open(root, read_only=True, on_corrupt="skip")
    assert [s.file for s in skipping.skipped] == [victim.name]
    check_matches(skipping.snapshot(), dict.fromkeys(range(20), 1))


def test_corrupt_manifest_raises_and_skip_falls_back(tmp_path):
    root = _two_segment_store(tmp_path)
    latest = root / "_manifests" / "00000003.json"
    latest.write_bytes(latest.read_bytes()[:200])
    with pytest.raises(CorruptData, match=r"00000003\.json: manifest is not valid JSON"):
        Store.open(root, read_only=True)
    st = Store.open(root, on_corrupt="skip")
    assert st.version == 2 and [s.file for s in st.skipped] == ["_manifests/00000003.json"]
    check_matches(st.snapshot(), dict.fromkeys(range(20), 1))
    assert write(st, [50], 4) == 4  # never reuses the corrupt version's number
    st.close()


def test_manifest_fields_are_validated_not_trusted(tmp_path):
    root = _two_segment_store(tmp_path)
    cases = [
        (lambda b: b["segments"][0].update(file="../../etc/passwd"), "file name '../../etc/passwd' is not valid"),
        (lambda b: b["segments"][0].update(rows=5), r"has 20 rows \(header says 20\), the manifest records 5"),
        (lambda b: b["layout"]["code_columns"][0].__setitem__(1, 9), "code columns .* do not match the index"),
        (lambda b: b["layout"].update(dim=5), "dim/vector dtype 4/float16 do not match the index"),
        (lambda b: b["segments"][0]["checksums"].pop("id"), r"lacks checksums for \['id'\]"),
        (lambda b: b["segments"][0].update(rows=-1), "rows must be an int"),
    ]
    original = (root / "_manifests" / "00000003.json").read_bytes()
    for edit, match in cases:
        (root / "_manifests" / "00000003.json").write_bytes(original)
        rewrite_manifest(root, 3, edit)
        with pytest.raises(CorruptData, match=match):
            Store.open(root, read_only=True)


def test_corrupt_deletion_file_and_blob(tmp_path):
    root = _two_segment_store(tmp_path)
    with Store.open(root) as st:
        st.delete([1, 2])
        dfile = st.snapshot().segments[0].deletion.entry.file
    data = bytearray((root / dfile).read_bytes())
    needle = np.array([1, 2], dtype=np.uint32).tobytes()
    data[data.find(needle)] ^= 0x40
    (root / dfile).write_bytes(bytes(data))
    st = Store.open(root, read_only=True)
    with pytest.raises(CorruptData, match=rf"deletion file .*{Path(dfile).name}: checksum mismatch"):
        _ = st.snapshot().segments[0].live
    blob = next((root / "quantizers").iterdir())
    blob.write_bytes(b"tampered")
    with pytest.raises(CorruptData, match=rf"blob .*{blob.name} does not match its sha256"):
        Store.open(root, read_only=True)


def test_cluster_by_keeps_rows_grouped_through_writes_and_compaction(tmp_path):
    cfg = StoreConfig(code_columns={"c": 1}, dim=2, extra_columns={"list": "int32"}, cluster_by="list",
                      policy=StorePolicy(merge_fanout=2))
    rng = np.random.default_rng(0)
    with Store.create(tmp_path / "s", cfg) as st:
        for b in range(5):
            lists = rng.integers(0, 7, size=50).astype(np.int32)
            ids = np.arange(b * 50, (b + 1) * 50, dtype=np.uint64)
            st.write(ids, {"c": ids.astype(np.uint8)[:, None]}, extra={"list": lists},
                     metadata={"orig": lists.astype(np.int64)})
        st.compact()
        snap = st.snapshot()
        for seg in snap.segments:
            lists = np.asarray(seg.extra("list"))
            assert (np.diff(lists) >= 0).all(), "rows of a segment must be sorted by the cluster column"
            # every row kept its own values: code byte = id, metadata = its list
            np.testing.assert_array_equal(np.asarray(seg.column("c"))[:, 0], np.asarray(seg.ids).astype(np.uint8))
            np.testing.assert_array_equal(seg.metadata_table().column("orig").to_numpy(), lists)
        assert snap.num_rows == 250
    with pytest.raises(InvalidInput, match="cluster_by='nope' must name a declared extra column"):
        Store.create(tmp_path / "t", StoreConfig(code_columns={"c": 1}, dim=2, extra_columns={}, cluster_by="nope"))


# ------------------------------------------------------------------ evolving metadata
def test_random_writes_updates_and_schema_growth_match_the_model(tmp_path):
    """Adds, upserts and update_metadata with random column subsets (new columns appear over time),
    deletes and compactions, checked after every step against a plain-Python model, then again
    after reopening and for every retained older version."""
    root = tmp_path / "ev"
    st = Store.create(root, config(keep_versions=6, merge_fanout=3, target_segment_bytes=1 << 15))
    rng = random.Random(11)
    model = MetadataModel()
    history: dict[int, MetadataModel] = {}
    next_id = 0
    ops = {"add": 0, "upsert": 0, "update": 0, "delete": 0, "compact": 0}
    for gen in range(1, 61):
        roll = rng.random()
        cols = rng.sample(sorted(POOL), rng.randint(0, 3))
        if roll < 0.25 or not model.rows:
            op, ids = "add", list(range(next_id, next_id + rng.randint(1, 25)))
            next_id += len(ids)
        elif roll < 0.45:
            op = "upsert"
            ids = rng.sample(sorted(model.rows), min(len(model.rows), rng.randint(1, 10))) + [next_id]
            next_id += 1
        elif roll < 0.8:
            op, ids = "update", rng.sample(sorted(model.rows), min(len(model.rows), rng.randint(1, 30)))
            cols = cols or [rng.choice(sorted(POOL))]
        elif roll < 0.95:
            op, ids = "delete", rng.sample(sorted(model.rows), min(len(model.rows), rng.randint(1, 8)))
        else:
            op, ids = "compact", []
        values = {c: random_values(rng, c, len(ids)) for c in cols}
        if op in ("add", "upsert"):
            write_model_rows(st, ids, gen, values, upsert=op == "upsert")
            model.write(ids, values, gen)
        elif op == "update":
            st.update_metadata(ids, metadata_table(values) if rng.random() < 0.5 else values)
            model.update(ids, values)
        elif op == "delete":
            st.delete(ids)
            model.delete(ids)
        else:
            st.compact()
        ops[op] += 1
        check_model(st.snapshot(), model)
        history[st.version] = model.copy()
    assert min(ops.values()) > 0, ops
    assert set(model.columns) == set(POOL)  # every pool column was declared along the way
    st.close()
    with Store.open(root, read_only=True) as again:
        check_model(again.snapshot(), model)
    retained = [v.version for v in Store.open(root, read_only=True).versions()]
    assert len(retained) == 6
    for v in retained:
        if v in history:  # versions committed by automatic compaction have the same contents
            check_model(Store.open(root, version=v).snapshot(), history[v])


def test_partial_and_new_columns(tmp_path):
    st = Store.create(tmp_path / "p", config(auto_compact=False))
    write_model_rows(st, [0, 1], 1, {"a": [1, 2], "s": ["x", "y"]}, upsert=False)
    v_before = st.version
    write_model_rows(st, [2], 2, {"s": ["z"]}, upsert=False)  # omits 'a': null for this row
    write_model_rows(st, [3], 3, {"f": [0.5], "a": [7]}, upsert=False)  # declares 'f': null for rows 0..2
    write_model_rows(st, [4], 4, None, upsert=False)  # no metadata at all: every column null
    snap = st.snapshot()
    assert snap.metadata_schema.names == ["a", "s", "f"]
    assert snap.metadata_schema.field("s").type == pa.large_string()
    assert snap.get(np.arange(5)).metadata.to_pylist() == [
        {"a": 1, "s": "x", "f": None}, {"a": 2, "s": "y", "f": None}, {"a": None, "s": "z", "f": None},
        {"a": 7, "s": None, "f": 0.5}, {"a": None, "s": None, "f": None}]
    assert snap.segments[2].segment.metadata_columns == {"a", "f"}  # a segment stores only what it was given
    # The schema change is part of the committed version: the older version never had 'f'.
    assert Store.open(tmp_path / "p", version=v_before).snapshot().metadata_schema.names == ["a", "s"]
    with pytest.raises(InvalidInput, match="metadata column 'a' has type string, expected int64"):
        st.write([5], {"scan": np.zeros((1, 8), np.uint8), "rescore": np.zeros((1, 16), np.uint8)},
                 np.zeros((1, 4)), {"a": ["nope"]}, extra={"list": np.zeros(1, np.int32)})
    with pytest.raises(InvalidInput, match="metadata column 'g' has no type"):
        st.write([5], {"scan": np.zeros((1, 8), np.uint8), "rescore": np.zeros((1, 16), np.uint8)},
                 np.zeros((1, 4)), {"g": [None]}, extra={"list": np.zeros(1, np.int32)})
    st.compact()  # merges segments with different column subsets
    assert st.snapshot().get(np.arange(5)).metadata.equals(snap.get(np.arange(5)).metadata)
    st.close()


def test_update_metadata_keeps_codes_and_rejects_bad_input_without_writing(tmp_path):
    st = Store.create(tmp_path / "u", config())
    write_model_rows(st, np.arange(20), 1, {"a": list(range(20)), "text": [f"doc {i}" for i in range(20)]},
                     upsert=False)
    st.delete([19])
    model = MetadataModel()
    model.write(range(20), {"a": list(range(20)), "text": [f"doc {i}" for i in range(20)]}, 1)
    model.delete([19])
    before, version = listing(st.path), st.version
    bad = [
        (UnknownIds, r"cannot update 2 id\(s\) that are not present: \[19, 99\]",
         lambda: st.update_metadata([1, 19, 99], {"a": [1, 2, 3]})),
        (InvalidInput, "metadata column 'a' has type string, expected int64",
         lambda: st.update_metadata([1], {"a": ["x"]})),
        (InvalidInput, "metadata has 1 rows, expected 2", lambda: st.update_metadata([1, 2], {"a": [5]})),
        (InvalidInput, r"duplicate ids in one batch \(1\): \[3\]", lambda: st.update_metadata([3, 3], {"a": [1, 2]})),
        (InvalidInput, "update_metadata needs at least one column", lambda: st.update_metadata([3], {})),
        (InvalidInput, "metadata column name 'id' is reserved", lambda: st.update_metadata([3], {"id": [4]})),
        (InvalidInput, "must be non-negative", lambda: st.update_metadata([-3], {"a": [4]})),
    ]
    for exc, match, call in bad:
        with pytest.raises(exc, match=match):
            call()
        assert st.version == version and listing(st.path) == before
    assert st.update_metadata([], {"a": []}) == version  # nothing to do: no new version
    st.update_metadata([4, 2], {"text": ["new four", None], "flag": pa.array([True, False])})
    model.update([4, 2], {"text": ["new four", None], "flag": [True, False]})
    check_model(st.snapshot(), model)  # codes, vectors and extras of rows 2 and 4 are unchanged
    st.update_metadata(np.arange(19), pd.DataFrame({"a": np.arange(19) * 10}))
    model.update(range(19), {"a": [i * 10 for i in range(19)]})
    check_model(st.snapshot(), model)
    assert st.snapshot().segments[-1].segment.metadata_columns == {"a", "text", "flag"}
    st.close()
    check_model(Store.open(tmp_path / "u").snapshot(), model)


@pytest.mark.parametrize("operation", ["update_metadata", "new_column"])
def test_failed_commit_of_metadata_changes_leaves_the_store_unchanged(tmp_path, monkeypatch, operation):
    import vqsearch.storage.commit as commit

    st = Store.create(tmp_path / "f", config())
    write_model_rows(st, np.arange(10), 1, {"a": list(range(10))}, upsert=False)
    model = MetadataModel()
    model.write(range(10), {"a": list(range(10))}, 1)
    before, version = listing(st.path), st.version

    def fail(root, m):
        raise OSError("disk full (injected)")

    monkeypatch.setattr(commit, "write_manifest", fail)
    with pytest.raises(OSError, match="disk full"):
        if operation == "update_metadata":
            st.update_metadata([1, 2], {"a": [5, 6], "s": ["new", "column"]})
        else:
            write_model_rows(st, [10], 2, {"f": [1.0]}, upsert=False)
    assert st.version == version and listing(st.path) == before  # the new files were removed
    check_model(st.snapshot(), model)
    monkeypatch.undo()
    st.update_metadata([1], {"s": ["after"]})  # the writer still works
    model.update([1], {"s": ["after"]})
    check_model(st.snapshot(), model)
    st.close()


# ------------------------------------------------------------------ count, scroll, metadata by id
def _has(row: dict, column: str) -> bool:
    return row.get(column) is not None


FILTERS = [  # (filter, the same predicate in plain Python over (model row, id))
    (None, lambda r, i: True),
    ({}, lambda r, i: True),
    ({"a": {"gte": 0}}, lambda r, i: _has(r, "a") and r["a"] >= 0),
    ({"tags": {"contains": "py"}}, lambda r, i: _has(r, "tags") and "py" in r["tags"]),
    ({"s": {"prefix": "py"}}, lambda r, i: _has(r, "s") and r["s"].startswith("py")),
    ({"s": {"contains": "t"}}, lambda r, i: _has(r, "s") and "t" in r["s"]),
    ({"text": {"is_null": True}}, lambda r, i: not _has(r, "text")),
    ({"flag": {"is_null": False}, "f": {"lt": 1}}, lambda r, i: _has(r, "flag") and _has(r, "f") and r["f"] < 1),
    ({"id": {"lt": 150}}, lambda r, i: i < 150),
    ({"or": [{"id": {"in": [3, 50, 2**64]}}, {"flag": True}]}, lambda r, i: i in (3, 50) or r.get("flag") is True),
    ({"not": {"s": {"contains": "y"}}}, lambda r, i: not (_has(r, "s") and "y" in r["s"])),
    ({"id": {"gt": 10**6}}, lambda r, i: False),
]


@pytest.fixture(scope="module")
def evolved_store(tmp_path_factory):
    """A store with several segments clustered by a non-id key, deletions, upserts and evolving metadata."""
    root = tmp_path_factory.mktemp("scroll") / "s"
    cfg = StoreConfig(code_columns=dict(CODES), dim=4, vector_dtype="float16", extra_columns={"list": "int32"},
                      cluster_by="list", policy=StorePolicy(auto_compact=False, target_segment_bytes=8192))
    st = Store.create(root, cfg)
    rng = random.Random(3)
    model = MetadataModel()
    ids = rng.sample(range(400), 300)
    for gen, start in enumerate(range(0, 300, 60), 1):
        batch = ids[start:start + 60]
        cols = rng.sample(sorted(POOL), rng.randint(1, 4))
        values = {c: random_values(rng, c, len(batch), nulls=0.3) for c in cols}
        write_model_rows(st, batch, gen, values, upsert=False)
        model.write(batch, values, gen)
    upd = rng.sample(sorted(model.rows), 80)
    values = {"s": random_values(rng, "s", 80), "tags": random_values(rng, "tags", 80)}
    st.update_metadata(upd, values)
    model.update(upd, values)
    gone = rng.sample(sorted(model.rows), 40)
    st.delete(gone)
    model.delete(gone)
    assert st.stats()["segments"] > 3 and st.stats()["dead_rows"] > 0
    yield st.snapshot(), model
    st.close()


@pytest.mark.parametrize("flt,pred", FILTERS, ids=[str(f[0]) for f in FILTERS])
def test_count_and_scroll_match_the_model(evolved_store, flt, pred):
    snap, model = evolved_store
    want = sorted(i for i, r in model.rows.items() if pred(r, i))
    assert snap.count(flt) == len(want)
    assert sum(int(m.sum()) for m in snap.filter_masks(flt)) == len(want)
    for limit, columns in ((1, ["s"]), (7, None), (1000, []), (64, ["tags", "a"])):
        got, after, pages = [], None, 0
        while True:
            page = snap.scroll(flt, after=after, limit=limit, columns=columns)
            pages += 1
            assert len(page) <= limit and page.ids.dtype == np.uint64
            assert page.metadata.num_rows == len(page)
            names = model.columns if columns is None else columns
            assert page.metadata.column_names == names
            rows = [{c: model.rows[int(i)].get(c) for c in names} for i in page.ids]
            assert page.metadata.to_pylist() == rows if names else True
            got += page.ids.tolist()
            if page.next_after is None:
                break
            assert len(page) == limit and page.next_after == page.ids[-1]
            after = page.next_after
        assert got == want  # ascending ids, each matching row exactly once
        assert pages == max(1, -(-len(want) // limit))
    mid = 200  # a cursor that is not itself an id
    assert snap.scroll(flt, after=mid, limit=1000, columns=[]).ids.tolist() == [i for i in want if i > mid]


def test_scroll_reads_a_pinned_version(evolved_store, tmp_path):
    st = Store.create(tmp_path / "p", config())
    write(st, np.arange(30), 1)
    pinned = st.snapshot()
    st.delete(np.arange(10))
    write(st, np.arange(30, 40), 2)
    assert pinned.scroll(limit=100, columns=[]).ids.tolist() == list(range(30))
    assert st.snapshot().scroll(limit=100, columns=[]).ids.tolist() == list(range(10, 40))
    assert st.snapshot().count({"gen": 2}) == 10 and pinned.count({"gen": 2}) == 0
    empty = Store.create(tmp_path / "e", config()).snapshot()
    page = empty.scroll({"id": {"gte": 0}})
    assert page.ids.size == 0 and page.next_after is None and empty.count() == 0
    st.close()


def test_metadata_by_id_reads_only_what_is_asked(evolved_store):
    snap, model = evolved_store
    live = sorted(model.rows)
    ids = np.array([live[5], live[0], live[5]], np.uint64)
    assert snap.metadata(ids, ["a", "s"]).to_pylist() == [
        {c: model.rows[int(i)].get(c) for c in ["a", "s"]} for i in ids]
    padded = np.array([live[1], -1, 10**6, live[2]], np.int64)  # -1 pads search results; 10**6 was never added
    got = snap.metadata(padded, ["text"], missing="null").to_pylist()
    assert got == [{"text": model.rows[live[1]].get("text")}, {"text": None}, {"text": None},
                   {"text": model.rows[live[2]].get("text")}]
    assert snap.metadata(padded, [], missing="null").num_rows == 4
    assert snap.metadata(ids).column_names == model.columns
    with pytest.raises(UnknownIds, match=r"1 id\(s\) not found: \[1000000\]"):
        snap.metadata([live[0], 10**6])
    with pytest.raises(InvalidInput, match="must be non-negative"):
        snap.metadata(padded)


BAD_READS = [
    (lambda s: s.scroll(limit=0), "limit must be in \\[1, 100000\\], got 0"),
    (lambda s: s.scroll(limit=100_001), "limit must be in \\[1, 100000\\], got 100001"),
    (lambda s: s.scroll(limit=2.5), "limit must be an integer, got float"),
    (lambda s: s.scroll(after=-1), "after must be an id in \\[0, 2\\*\\*64 - 1\\], got -1"),
    (lambda s: s.scroll(after="7"), "after must be an integer id or None, got str"),
    (lambda s: s.scroll(columns=["nope"]), "unknown metadata column\\(s\\) \\['nope'\\]"),
    (lambda s: s.scroll(columns="a"), "columns must be a list of metadata column names"),
    (lambda s: s.scroll({"nope": 1}), "unknown filter field 'nope'"),
    (lambda s: s.count({"a": {"gt": 10**400}}), "filter field 'a': the number .* is out of range"),
    (lambda s: s.metadata([1], missing="skip"), "missing must be 'raise' or 'null'"),
]


@pytest.mark.parametrize("call,match", BAD_READS, ids=[b[1][:40] for b in BAD_READS])
def test_bad_reads_raise_invalid_input(evolved_store, call, match):
    with pytest.raises(InvalidInput, match=match):
        call(evolved_store[0])
