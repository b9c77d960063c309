"""Storage: metadata updates, schema evolution, count and scroll on the Debian-MiniLM corpus (60,179 rows).

The store holds the default preset's code layout for 384-d vectors (48-byte sign codes + 192-byte
4-bit rescoring codes), an int32 list column the rows are clustered by (as with IVF), and the
corpus's text metadata (package, section, text = synopsis + description).  Codes are random bytes:
storage costs do not depend on their values.

- ``update_metadata`` of k random rows, against re-encoding the same k vectors through
  ``Index.upsert`` (the only way to change metadata before; default preset);
- reads (count, filtered masks, a full scroll) on a fresh store, after 100 small metadata updates
  (more segments and deletion files) and after compaction;
- a write that adds a column, and a write that omits columns.

    python benchmarks/bench_storage.py
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from bench_common import DEBIAN, banner, load_debian, table

from vqsearch import Index
from vqsearch.storage import Store, StoreConfig, StorePolicy

CODES = {"scan": 48, "rescore": 192}
NLIST = 64


def _codes(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    return {k: rng.integers(0, 256, (n, w), dtype=np.uint8) for k, w in CODES.items()}


def _metadata() -> pa.Table:
    t = pq.read_table(DEBIAN / "texts.parquet")
    text = pc.binary_join_element_wise(t.column("synopsis"), t.column("description"), "\n")
    return pa.table({"package": t.column("package"), "section": t.column("section"), "text": text})


def _build(root: Path, meta: pa.Table) -> Store:
    rng = np.random.default_rng(0)
    n = meta.num_rows
    cfg = StoreConfig(code_columns=CODES, dim=384, extra_columns={"list": "int32"}, cluster_by="list",
                      policy=StorePolicy(keep_versions=2))
    st = Store.create(root, cfg)
    st.write(np.arange(n), _codes(rng, n), metadata=meta, extra={"list": rng.integers(0, NLIST, n).astype(np.int32)})
    return st


def _disk_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _timed(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _reads(st: Store) -> list[float]:
    snap = st.snapshot()

    def scroll_all() -> None:
        after = None
        while True:
            page = snap.scroll({"section": "python"}, after=after, limit=1000, columns=["package"])
            if page.next_after is None:
                return
            after = page.next_after

    def scroll_everything() -> None:
        after = None
        while True:
            page = snap.scroll(after=after, limit=1000, columns=[])
            if page.next_after is None:
                return
            after = page.next_after

    return [_timed(lambda: snap.count({"section": "python"})) * 1e3,
            _timed(lambda: snap.count({"text": {"contains": "library"}})) * 1e3,
            _timed(scroll_all) * 1e3, _timed(scroll_everything) * 1e3]


def main() -> None:
    banner("Storage: metadata updates, schema evolution, count and scroll")
    data = load_debian()
    if data is None:
        return
    meta = _metadata()
    n = meta.num_rows
    tmp = Path(tempfile.mkdtemp(prefix="vqbench-storage-"))
    try:
        st = _build(tmp / "s", meta)
        rng = np.random.default_rng(1)
        rows = []
        index = Index.create(tmp / "idx", dim=384)
        index.add(data["xb"][:20_000], metadata=meta.slice(0, 20_000).select(["section"]))
        for k in (1, 100, 1_000, 10_000, n):
            ids = np.sort(rng.choice(n, k, replace=False))
            values = {"section": pa.array([f"s{i % 7}" for i in range(k)], pa.large_string())}
            before = _disk_bytes(tmp / "s")
            t0 = time.perf_counter()
            st.update_metadata(ids, values)
            secs = time.perf_counter() - t0
            grown = _disk_bytes(tmp / "s") - before
            reencode = float("nan")
            if k <= 10_000:
                sub = np.sort(rng.choice(20_000, k, replace=False))
                t0 = time.perf_counter()
                index.upsert(data["xb"][sub], sub, metadata={"section": values["section"]})
                reencode = time.perf_counter() - t0
            rows.append([f"{k:,}", secs * 1e3, secs / k * 1e6, grown / 1e6, st.stats()["segments"],
                         reencode * 1e3, reencode / secs])
        index.close()
        print("### update_metadata against re-encoding (Index.upsert, default preset)")
        print()
        print(table(["rows", "update_metadata ms", "µs/row", "MB written (net)", "segments after",
                     "Index.upsert ms", "upsert / update"], rows))
        print()

        st.close()
        shutil.rmtree(tmp / "s")
        st = _build(tmp / "s", meta)
        reads = [["fresh (1 segment)", st.stats()["segments"], *_reads(st)]]
        for _ in range(100):
            st.update_metadata(rng.choice(n, 100, replace=False), {"section": ["updated"] * 100})
        reads.append(["after 100 updates of 100 rows", st.stats()["segments"], *_reads(st)])
        st.compact()
        reads.append(["after compact()", st.stats()["segments"], *_reads(st)])
        print(f"### Reads on {n:,} rows (best of 3)")
        print()
        print(table(["state", "segments", "count section=python ms", "count text contains ms",
                     "scroll section=python ms", "scroll all ids ms"], reads))
        print()

        extra = rng.integers(0, 256, (1000, 1), dtype=np.uint8)
        t_new = _timed(lambda: st.write(np.arange(10**6, 10**6 + 1000), _codes(rng, 1000),
                                        metadata={"stars": extra[:, 0].astype(np.int64)},
                                        extra={"list": np.zeros(1000, np.int32)}, upsert=True), repeat=1)
        t_partial = _timed(lambda: st.write(np.arange(2 * 10**6, 2 * 10**6 + 1000), _codes(rng, 1000),
                                            metadata={"section": ["x"] * 1000},
                                            extra={"list": np.zeros(1000, np.int32)}), repeat=1)
        print("### Writes of 1,000 rows")
        print()
        print(table(["write", "ms", "schema columns after"],
                    [["declares a new column 'stars'", t_new * 1e3, len(st.snapshot().metadata_schema)],
                     ["carries 'section' only (partial)", t_partial * 1e3, len(st.snapshot().metadata_schema)]]))
        st.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
