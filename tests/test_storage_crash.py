"""Crash test: a writer process is SIGKILLed at random moments; nothing acknowledged may be lost.

A child process adds, upserts, updates metadata (``update_metadata``), writes rows that
declare new metadata columns (schema evolution), deletes and compacts in a loop.  Before each call it
appends a "begin" record to a side log, and after the call returns an "ack" record
(plain ``os.write``: the page cache survives the kill).  The parent kills the child
after a random delay, then checks that ``Store.open`` succeeds (the dead writer's
lock is gone), that the store equals the model of every acknowledged operation,
or that model plus the one in-flight operation applied entirely (commits are
atomic), that each row holds its latest value (codes of its last write, metadata of its last
update), that a schema change is visible exactly when its write committed, that
deleted ids stay deleted and that every segment reads back with valid checksums.

Children are forked from a forkserver that has imported the child's module (``vqtest_crash``) once, so a
trial costs milliseconds instead of a fresh interpreter start.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import signal
import time
from pathlib import Path

import pyarrow as pa
import vqtest_crash
from vqtest_crash import child
from vqtest_storage import check_matches, config, write

from vqsearch.storage import Store

TRIALS = 30
SEED = 20240611


#: The model of one row: (generation of its codes and 'gen' column, 'note' set by update_metadata or None,
#: the evolved column 'x<gen>' its write declared or None).
Row = tuple[int, "int | None", "str | None"]


def _replay(log_path: Path, model: dict[int, Row], seen: int, columns: set[str]):
    """Apply acknowledged ops after line ``seen`` (adding the columns acked 'evolve' ops declared to ``columns``).

    Returns (acked model, model with the in-flight op or None, the in-flight op or None, last gen, lines read).
    """
    lines = log_path.read_text().splitlines()
    acked = dict(model)
    pending: dict | None = None
    last_gen = 0
    for i, line in enumerate(lines[seen:]):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # only the very last line can be torn by the kill
            assert seen + i == len(lines) - 1, f"torn log line in the middle: {line!r}"
            continue
        if "begin" in rec:
            assert pending is None, "two operations in flight"
            pending = rec
            last_gen = rec["begin"]
        elif "ack" in rec:
            assert pending is not None and pending["begin"] == rec["ack"]
            _apply(acked, pending)
            if pending["op"] == "evolve":
                columns.add(f"x{pending['begin']}")
            pending = None
    inflight = None
    if pending is not None:
        inflight = dict(acked)
        _apply(inflight, pending)
    return acked, inflight, pending, last_gen, len(lines)


def _apply(model: dict[int, Row], rec: dict) -> None:
    gen = rec["begin"]
    if rec["op"] in ("add", "upsert"):
        model.update(dict.fromkeys(rec["ids"], (gen, None, None)))
    elif rec["op"] == "evolve":
        model.update(dict.fromkeys(rec["ids"], (gen, None, f"x{gen}")))
    elif rec["op"] == "update":
        for i in rec["ids"]:
            model[i] = (model[i][0], gen, model[i][2])
    elif rec["op"] == "delete":
        for i in rec["ids"]:
            del model[i]


def _store_state(snap) -> dict[int, Row]:
    """id -> (gen, note, evolved column), read back from the store's metadata."""
    out: dict[int, Row] = {}
    names = [] if snap.metadata_schema is None else snap.metadata_schema.names
    evolved = [c for c in names if c.startswith("x")]
    for seg in snap.segments:
        live = seg.live
        table = seg.metadata_table().filter(pa.array(live))
        gens = table.column("gen").to_pylist()
        notes = table.column("note").to_pylist() if "note" in names else [None] * len(gens)
        xs = {c: table.column(c).to_pylist() for c in evolved}
        for k, i in enumerate(seg.ids[live].tolist()):
            assert i not in out, f"id {i} is live twice"
            set_x = [c for c in evolved if xs[c][k] is not None]
            assert len(set_x) <= 1 and all(xs[c][k] == int(c[1:]) for c in set_x), (i, set_x)
            out[i] = (int(gens[k]), notes[k], set_x[0] if set_x else None)
    return out


def _wait_ready(log_path: Path, seed: int, proc, acks: int = 0, timeout: float = 60.0) -> None:
    """Wait until the child with ``seed`` has opened the store and acknowledged ``acks`` operations.

    Waiting for progress (rather than for a fixed time) keeps the work per trial independent of
    how loaded the machine is; the random delay after it still places the kill anywhere.
    """
    deadline = time.monotonic() + timeout
    marker = json.dumps({"ready": seed})
    while time.monotonic() < deadline:
        text = log_path.read_text() if log_path.exists() else ""
        if marker in text and text.split(marker, 1)[1].count('"ack"') >= acks:
            return
        assert proc.is_alive(), f"child died before becoming ready (exit code {proc.exitcode})"
        time.sleep(0.002)
    raise AssertionError(f"child did not become ready and acknowledge {acks} operation(s) in {timeout} s")


def test_sigkill_at_random_moments_loses_nothing_acknowledged(tmp_path, monkeypatch):
    # The forkserver imports its preload modules with the environment's path only (it ignores the
    # parent's sys.path), so the support folder must be on PYTHONPATH or every child imports from scratch.
    support = str(Path(vqtest_crash.__file__).parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [support, os.environ.get("PYTHONPATH")])))
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["vqtest_crash"])
    root = tmp_path / "crash"
    log_path = tmp_path / "ops.log"
    # Small segments, short retention and eager merging: kills also land in compaction and GC.
    Store.create(root, config(keep_versions=3, merge_fanout=3, target_segment_bytes=1 << 15)).close()
    rnd = random.Random(SEED)
    model: dict[int, Row] = {}
    evolved: set[str] = set()  # columns declared by committed 'evolve' writes
    gen, seen = 0, 0
    outcomes = {"acked": 0, "inflight_applied": 0, "killed_mid_operation": 0}
    for trial in range(TRIALS):
        seed = SEED + trial
        proc = ctx.Process(target=child, args=(str(root), str(log_path), seed, gen))
        proc.start()
        if trial % 6 == 5:  # sometimes kill while the child is still opening the store
            time.sleep(rnd.uniform(0.0, 0.01))
        else:
            _wait_ready(log_path, seed, proc, acks=rnd.randint(0, 4))
            time.sleep(rnd.uniform(0.0, 0.15))
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(10)
        assert proc.exitcode == -signal.SIGKILL

        acked, inflight, pending, last_gen, seen = _replay(log_path, model, seen, evolved)
        outcomes["killed_mid_operation"] += inflight is not None
        with Store.open(root) as st:  # the killed writer's lock is released by the kernel
            snap = st.snapshot()
            state = _store_state(snap)
            if state == acked:
                outcomes["acked"] += 1
            else:
                assert inflight is not None and state == inflight, (
                    f"trial {trial}: store differs from the acknowledged model "
                    f"(missing {sorted(set(acked) - set(state))[:10]}, extra {sorted(set(state) - set(acked))[:10]})")
                outcomes["inflight_applied"] += 1
                if pending["op"] == "evolve":
                    evolved.add(f"x{pending['begin']}")
            # A schema change is committed with its rows or not at all.
            names = [] if snap.metadata_schema is None else snap.metadata_schema.names
            assert {c for c in names if c.startswith("x")} == evolved
            check_matches(snap, {i: row[0] for i, row in state.items()})  # codes and columns of their write
            assert st.verify() == []  # every segment and deletion file reads back with valid checksums
            if snap.metadata_schema is not None:  # declared by the first committed write
                masks = snap.filter_masks({"gen": {"gte": 0}})
                assert sum(int(m.sum()) for m in masks) == snap.num_rows == len(state)
        model = state
        gen = max(gen, last_gen)
    assert outcomes["acked"] + outcomes["inflight_applied"] == TRIALS
    # Most kills must land inside a store call (timing-dependent, but the child spends nearly all
    # its time in write/delete/compact), otherwise the test would not exercise torn commits.
    assert outcomes["killed_mid_operation"] >= TRIALS // 3, outcomes
    assert len(model) > 100, "the children did too little work for the test to mean anything"
    assert evolved and any(row[1] is not None for row in model.values()), "no schema change or metadata update"

    # Leftovers of killed writers (orphan segments, temp files) are collected by the next commit.
    with Store.open(root) as st:
        write(st, [999_999], gen + 1)
        referenced: set[str] = set()
        for v in st.versions():
            referenced |= Store.open(root, version=v.version, read_only=True).snapshot().manifest.files()
    on_disk = {str(p.relative_to(root)) for sub in ("segments", "deletions", "quantizers")
               for p in (root / sub).iterdir()}
    assert on_disk == referenced
    assert not [p for p in root.rglob(".tmp-*")]
