"""What the moving progress bar of ``vqsearch build`` costs: commits of ~1 s of encoding vs 65,536 rows.

Both builds use the default preset on Debian-MiniLM (60,179 × 384), train on the same sample and end
with ``compact()``, as the CLI does.  "one commit per batch" is the previous behaviour (one ``add`` per
65,536-row read batch: the bar jumps from 0 to 100 %).

    python benchmarks/bench_cli_build.py
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_common import banner, load_debian, table

from vqsearch import Index
from vqsearch.cli import ChunkSizer, add_in_chunks, ivf_setting


def _build(root: Path, xb: np.ndarray, sample: np.ndarray, *, adaptive: bool) -> list[object]:
    updates: list[int] = []
    t0 = time.perf_counter()
    with Index.create(root, dim=xb.shape[1], ivf=ivf_setting("auto", 0, xb.shape[0])) as index:
        index.train(sample)
        t_train = time.perf_counter() - t0
        sizer = ChunkSizer(maximum=65_536) if adaptive else ChunkSizer(maximum=65_536, minimum=65_536)
        for start in range(0, xb.shape[0], 65_536):
            add_in_chunks(index, xb[start:start + 65_536], None, None, sizer, updates.append)
        t_add = time.perf_counter() - t0 - t_train
        commits = index.stats()["version"]
        index.compact()
        total = time.perf_counter() - t0
        segments = index.stats()["segments"]
    return ["~1 s of encoding per commit" if adaptive else "one commit per 65,536-row batch", len(updates),
            max(updates), commits, t_train, t_add, total, segments]


def main() -> None:
    banner("CLI build: progress-sized commits against one commit per read batch")
    data = load_debian()
    if data is None:
        return
    xb = data["xb"]
    sample = xb[np.sort(np.random.default_rng(0).choice(xb.shape[0], xb.shape[0], replace=False))]
    tmp = Path(tempfile.mkdtemp(prefix="vqbench-cli-"))
    try:
        with Index.create(tmp / "warm", dim=xb.shape[1]) as warm:  # compile the kernels before timing
            warm.add(xb[:5000])
        rows = [_build(tmp / "a", xb, sample, adaptive=False), _build(tmp / "b", xb, sample, adaptive=True)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(table(["commits sized by", "bar updates", "largest add", "versions", "train s", "add s", "total s",
                 "segments after compact"], rows))


if __name__ == "__main__":
    main()
