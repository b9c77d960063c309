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
    """Write, update metadata, delete and compact forever, logging "begin" before and "ack" after each call.

    Operations: ``add`` (new ids), ``evolve`` (new ids carrying a new metadata column ``x<gen>``, so the
    commit also changes the schema), ``upsert``, ``update`` (``update_metadata`` of column ``note``),
    ``delete`` and ``compact``.
    """
    st = Store.open(root)
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def record(obj: dict) -> None:
        os.write(fd, (json.dumps(obj) + "\n").encode())

    def live_ids() -> list[int]:
        snap = st.snapshot()
        return [int(i) for s in snap.segments for i in s.ids[s.live]]

    record({"ready": seed})
    r = random.Random(seed)
    gen = start_gen
    while True:
        gen += 1
        roll = r.random()
        if roll < 0.2:
            op, ids = "add", [10_000 + gen * 32 + k for k in range(r.randint(1, 20))]
        elif roll < 0.3:
            op, ids = "evolve", [10_000 + gen * 32 + k for k in range(r.randint(1, 20))]
        elif roll < 0.6:
            op, ids = "upsert", r.sample(range(ID_SPACE), r.randint(1, 40))
        elif roll < 0.8:
            live = live_ids()
            op, ids = "update", r.sample(live, min(len(live), r.randint(1, 40)))
        elif roll < 0.95:
            live = live_ids()
            op, ids = "delete", r.sample(live, min(len(live), r.randint(1, 30)))
        else:
            op, ids = "compact", []
        record({"begin": gen, "op": op, "ids": ids})
        if op == "add":
            write(st, ids, gen)
        elif op == "evolve":
            write(st, ids, gen, extra_metadata={f"x{gen}": [gen] * len(ids)})
        elif op == "upsert":
            write(st, ids, gen, upsert=True)
        elif op == "update" and ids:
            st.update_metadata(ids, {"note": [gen] * len(ids)})
        elif op == "delete" and ids:
            st.delete(ids)
        elif op == "compact":
            st.compact()
        record({"ack": gen})
