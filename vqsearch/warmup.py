"""Compile the numba kernels of the search path ahead of time, so that the first real request is not slow.

numba compiles a kernel on its first call for each new combination of argument types and stores the
machine code in its cache (``__pycache__`` beside the source, or ``NUMBA_CACHE_DIR``); later processes load
it in milliseconds.  A fresh install therefore pays the compilation on its first write and first search:
tens of seconds on a small machine.  :func:`warmup` pays it up front (in a container build, before a server
takes traffic, before a test run) by running the paths an index takes on a few thousand random vectors:

* for each preset and metric, a flat index and an IVF one (the ``"auto"`` IVF of a small corpus is flat);
* writes, searches of one query and of a batch, a filtered search and a search returning metadata;
* each of them with every kernel in its serial and its parallel variant (:func:`vqsearch.parallel.forced_variants`),
  since the size of a real call decides which one runs.

Run it with ``vqsearch warmup`` (see ``--help``) or from Python.  Several processes may warm up at once
(each a different preset, say): numba's cache is safe to share.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import parallel
from .index import Index
from .index.config import PRESETS
from .index.metric import METRICS

#: Rows of each warm-up index: enough for every IVF list to hold vectors, small enough to encode in moments.
WARMUP_ROWS = 2048
#: Dimension of the warm-up vectors (compiled code does not depend on it).
WARMUP_DIM = 64


@dataclass(frozen=True)
class WarmupStep:
    """One warmed configuration and the seconds it took (mostly compilation on a cold cache)."""

    preset: str
    metric: str
    ivf: bool
    seconds: float


def warmup(presets: Sequence[str] = ("default",), metrics: Sequence[str] = ("cosine",), *,
           ivf: Sequence[bool] = (False, True), dim: int = WARMUP_DIM, rows: int = WARMUP_ROWS,
           on_step: Callable[[WarmupStep], object] | None = None) -> list[WarmupStep]:
    """Compile (or load from numba's cache) the kernels that indexes of these presets and metrics run.

    Returns one :class:`WarmupStep` per (preset, metric, ivf); ``on_step`` is called with each as it
    finishes.  Raises ``ValueError`` for an unknown preset or metric before any work.
    """
    unknown = [p for p in presets if p not in PRESETS] + [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown preset or metric {unknown[0]!r}: presets are {sorted(PRESETS)}, "
                         f"metrics {sorted(METRICS)}")
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((16, dim)).astype(np.float32)
    x = centres[rng.integers(0, 16, rows)] + 0.3 * rng.standard_normal((rows, dim)).astype(np.float32)
    group = (np.arange(rows) % 4).astype(np.int64)
    steps = []
    with tempfile.TemporaryDirectory(prefix="vqsearch-warmup-") as tmp:
        for preset in presets:
            for metric in metrics:
                for with_ivf in ivf:
                    t0 = time.perf_counter()
                    path = Path(tmp) / f"{preset}-{metric}-{int(with_ivf)}"
                    _exercise(path, x, group, preset=preset, metric=metric, with_ivf=with_ivf)
                    step = WarmupStep(preset, metric, with_ivf, time.perf_counter() - t0)
                    steps.append(step)
                    if on_step is not None:
                        on_step(step)
    return steps


def _exercise(path: Path, x: np.ndarray, group: np.ndarray, *, preset: str, metric: str, with_ivf: bool) -> None:
    half = x.shape[0] // 2
    ivf = {"nlist": 8, "nprobe": 2} if with_ivf else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a RecallWarning about random vectors says nothing about the kernels
        with Index.create(path, dim=x.shape[1], metric=metric, preset=preset, ivf=ivf) as index:
            for use_parallel, part in ((True, slice(0, half)), (False, slice(half, None))):
                with parallel.forced_variants(use_parallel):
                    index.add(x[part], metadata={"group": group[part]}, progress=False)
            for use_parallel in (True, False):
                with parallel.forced_variants(use_parallel):
                    index.search(x[:1], k=10)
                    index.search(x[:32], k=10)
                    index.search(x[:8], k=10, filter={"group": 1})
                    index.search(x[:2], k=5, include=["group"])
