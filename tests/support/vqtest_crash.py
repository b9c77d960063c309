"""The writer process of ``tests/test_storage_crash.py``.

It lives in a support module (importable by plain name, like every helper under ``tests/support``)
because the forkserver that starts it imports it by name: a test module is not importable under
pytest's ``importlib`` import mode.
"""

from __future__ import annotations

import json
import os
import random

import pandas  # noqa: F401  (pyarrow imports it lazily at the first conversion, ~1 s: do it in the forkserver)
from vqtest_storage import write

from vqsearch.storage import Store

ID_SPACE = 1500


def child(root: str, log_path: str, seed: int, start_gen: int) -> None:  # pragma: no cover - runs in a child
    """Add, upsert, delete and compact forever, logging "begin" before and "ack" after each call."""
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
