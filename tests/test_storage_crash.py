"""Crash test: a writer process is SIGKILLed at random moments; nothing acknowledged may be lost.

A child process adds, upserts, deletes and compacts in a loop.  Before each call it
appends a "begin" record to a side log, and after the call returns an "ack" record
(plain ``os.write``: the page cache survives the kill).  The parent kills the child
after a random delay, then checks that ``Store.open`` succeeds (the dead writer's
lock is gone), that the store equals the model of every acknowledged operation,
or that model plus the one in-flight operation applied entirely (commits are
atomic), that each row holds its latest value, that deleted ids stay deleted and
that every segment reads back with valid checksums.

Children are forked from a forkserver that has imported this module once, so a
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

import numpy as np
from vqtest_storage import check_matches, config, write

from vqsearch.storage import Store

TRIALS = 30
SEED = 20240611
ID_SPACE = 1500


def _child(root: str, log_path: str, seed: int, start_gen: int) -> None:  # pragma: no cover - runs in a child
    st = Store.open(root)
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def record(obj: dict) -> None:
        os.write(fd, (json.dumps(obj) + "\n").encode())

    record({"ready": seed})
    r = random.Random(seed)
    gen = start_gen
    while True:
        gen += 1
        roll = r.random()
        if roll < 0.3:
            op, ids = "add", [10_000 + gen * 32 + k for k in range(r.randint(1, 20))]
        elif roll < 0.75:
            op, ids = "upsert", r.sample(range(ID_SPACE), r.randint(1, 40))
        elif roll < 0.95:
            snap = st.snapshot()
            live = [int(i) for s in snap.segments for i in s.ids[s.live]]
            op, ids = "delete", r.sample(live, min(len(live), r.randint(1, 30)))
        else:
            op, ids = "compact", []
        record({"begin": gen, "op": op, "ids": ids})
        if op == "add":
            write(st, ids, gen)
        elif op == "upsert":
            write(st, ids, gen, upsert=True)
        elif op == "delete" and ids:
            st.delete(ids)
        elif op == "compact":
            st.compact()
        record({"ack": gen})


def _replay(log_path: Path, model: dict[int, int], seen: int) -> tuple[dict[int, int], dict[int, int] | None, int, int]:
    """Apply acknowledged ops after line ``seen``; return (acked model, model with in-flight op, last gen, lines)."""
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
            pending = None
    inflight = None
    if pending is not None:
        inflight = dict(acked)
        _apply(inflight, pending)
    return acked, inflight, last_gen, len(lines)


def _apply(model: dict[int, int], rec: dict) -> None:
    if rec["op"] in ("add", "upsert"):
        model.update(dict.fromkeys(rec["ids"], rec["begin"]))
    elif rec["op"] == "delete":
        for i in rec["ids"]:
            del model[i]


def _store_state(snap) -> dict[int, int]:
    """id -> generation, read back from the store (the 'gen' metadata column)."""
    out: dict[int, int] = {}
    for seg in snap.segments:
        live = seg.live
        gens = np.asarray(seg.metadata_table().column("gen").to_numpy(zero_copy_only=False))[live]
        ids = seg.ids[live]
        for i, g in zip(ids.tolist(), gens.tolist()):
            assert i not in out, f"id {i} is live twice"
            out[i] = int(g)
    return out


def _wait_ready(log_path: Path, seed: int, proc, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    marker = json.dumps({"ready": seed})
    while time.monotonic() < deadline:
        if log_path.exists() and marker in log_path.read_text():
            return
        assert proc.is_alive(), f"child died before becoming ready (exit code {proc.exitcode})"
        time.sleep(0.002)
    raise AssertionError("child did not become ready")


def test_sigkill_at_random_moments_loses_nothing_acknowledged(tmp_path):
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    root = tmp_path / "crash"
    log_path = tmp_path / "ops.log"
    # Small segments, short retention and eager merging: kills also land in compaction and GC.
    Store.create(root, config(keep_versions=3, merge_fanout=3, target_segment_bytes=1 << 15)).close()
    rnd = random.Random(SEED)
    model: dict[int, int] = {}
    gen, seen = 0, 0
    outcomes = {"acked": 0, "inflight_applied": 0, "killed_mid_operation": 0}
    for trial in range(TRIALS):
        seed = SEED + trial
        proc = ctx.Process(target=_child, args=(str(root), str(log_path), seed, gen))
        proc.start()
        if trial % 6 == 5:  # sometimes kill while the child is still opening the store
            time.sleep(rnd.uniform(0.0, 0.01))
        else:
            _wait_ready(log_path, seed, proc)
            time.sleep(rnd.uniform(0.0, 0.25))
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(10)
        assert proc.exitcode == -signal.SIGKILL

        acked, inflight, last_gen, seen = _replay(log_path, model, seen)
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
            check_matches(snap, state)  # every row holds exactly its latest value
            assert st.verify() == []  # every segment and deletion file reads back with valid checksums
            masks = snap.filter_masks({"gen": {"gte": 0}})
            assert sum(int(m.sum()) for m in masks) == snap.num_rows == len(state)
        model = state
        gen = max(gen, last_gen)
    assert outcomes["acked"] + outcomes["inflight_applied"] == TRIALS
    # Most kills must land inside a store call (timing-dependent, but the child spends nearly all
    # its time in write/delete/compact), otherwise the test would not exercise torn commits.
    assert outcomes["killed_mid_operation"] >= TRIALS // 3, outcomes
    assert len(model) > 100, "the children did too little work for the test to mean anything"

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
