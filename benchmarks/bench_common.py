"""Shared benchmark helpers: environment banner, shared-data loading, timers, markdown tables."""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("VQSEARCH_SHARED_DATA", ROOT.parent / "shared" / "data"))
DEBIAN = SHARED_DATA / "debian-minilm"


def banner(title: str) -> None:
    """Print machine, thread and library versions first, as every benchmark must."""
    import faiss
    import numba
    import pyarrow

    import vqsearch

    print(f"# {title}")
    print()
    print(f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"- machine: {platform.machine()} {platform.processor() or ''} cores={os.cpu_count()}"
          f" python={platform.python_version()}")
    print(f"- threads: numba={numba.get_num_threads()} faiss={faiss.omp_get_max_threads()}")
    print(f"- versions: vqsearch={vqsearch.__version__} numpy={np.__version__} numba={numba.__version__}"
          f" faiss={faiss.__version__} pyarrow={pyarrow.__version__}")
    print(f"- command: {' '.join([Path(sys.executable).name] + sys.argv)}")
    print()


def load_debian(limit: int | None = None) -> dict[str, np.ndarray] | None:
    """The shared Debian-MiniLM set as float32 arrays, or None (with a message) when absent."""
    if not (DEBIAN / "base.f16.npy").exists():
        print(f"(shared data not found at {DEBIAN}; skipping the Debian-MiniLM part)")
        return None
    xb = np.load(DEBIAN / "base.f16.npy").astype(np.float32)
    if limit is not None:
        xb = xb[:limit]
    return {
        "xb": xb,
        "xq": np.load(DEBIAN / "queries.f16.npy").astype(np.float32),
        "gt": np.load(DEBIAN / "groundtruth.i32.npy"),
        "labels": np.load(DEBIAN / "labels.i32.npy"),
    }


def timed(fn: Callable[[], object], repeat: int = 1, warmup: int = 1) -> tuple[object, float]:
    """Run ``fn`` ``warmup`` times (dropped, e.g. numba compilation), then return (result, best seconds)."""
    out = None
    for _ in range(warmup):
        out = fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Render a GitHub-markdown table."""

    def fmt(v: object) -> str:
        if isinstance(v, float):
            if v != v:
                return "–"
            if abs(v) >= 1000:
                return f"{v:,.0f}"
            if abs(v) >= 1:
                return f"{v:.3f}"
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)
