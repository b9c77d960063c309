"""Leech lattice kernels: decoder NSM (large sample), nearest-point, angular-search and unrank throughput.

Measures

* the normalised second moment of the exact Golay-coset decoder on a uniform source
  (J = √8·Λ24 on the torus [0, 8)^24; literature 0.0657711), with its standard error;
* nearest-point decoding throughput (values/s, all cores);
* per rate of the ``leech`` quantiser: exact angular search (encode core) blocks/s and the mean
  number of cosets solved by the branch and bound, and unrank (decode core) values/s.

Run::

    python benchmarks/bench_leech.py
    VQSEARCH_LEECH_NSM_N=262144 VQSEARCH_LEECH_BLOCKS=2048 python benchmarks/bench_leech.py
"""

from __future__ import annotations

import os
import sys

import numpy as np
from bench_common import banner, table, timed
from vqsearch.kernels import leech as kl
from vqsearch.kernels import leech_codes as kc

from vqsearch import quantizers
from vqsearch.quantizers.leech import DEFAULT_SHELLS, golay_words, nearest_point_j

NSM_N = int(os.environ.get("VQSEARCH_LEECH_NSM_N", 1 << 20))
BLOCKS = int(os.environ.get("VQSEARCH_LEECH_BLOCKS", 4096))
UNRANK_N = int(os.environ.get("VQSEARCH_LEECH_UNRANK_N", 200_000))


def measure_rate(block_bits: int, x: np.ndarray, rng: np.random.Generator) -> list:
    """Search (encode core) and unrank (decode core) throughput for the ball of one rate."""
    cw = golay_words()
    ball = quantizers.get(f"leech:bits={block_bits / 24}").ball
    pts = np.zeros((len(x), 24), np.int64)
    cos = np.zeros(len(x))
    solved = np.zeros(len(x), np.int64)
    _, t_search = timed(lambda: kl.best_directions(x, cw, *ball.tables, ball.radii, ball.nlo, ball.nhi,
                                                   pts, cos, solved))
    big = rng.integers(0, 1 << 62, UNRANK_N).astype(object) * (1 << 40) % ball.size
    ranks = np.array([[int(r) >> kc.LIMB, int(r) & kc.MASK] for r in big], dtype=np.int64)
    out = np.zeros((UNRANK_N, 24), np.int64)
    _, t_unrank = timed(lambda: kc.unrank_points(ranks, cw, *ball.tables, ball.F, ball.offs, out), repeat=3)
    return [block_bits / 24, ball.shells, ball.extra, len(ball.radii), float(cos.mean()), float(solved.mean()),
            int(solved.max()), len(x) / t_search, len(x) * 24 / t_search / 1e6,
            UNRANK_N * 24 / t_unrank / 1e6]


def main() -> None:
    banner("Leech lattice kernels")
    rng = np.random.default_rng(0)
    nearest_point_j(rng.uniform(0, 8, (4, 24)))  # compile
    d2 = np.empty(0)
    secs = 0.0
    for start in range(0, NSM_N, 1 << 18):  # bounded memory
        y = rng.uniform(0, 8, (min(1 << 18, NSM_N - start), 24))
        x, t = timed(lambda y=y: nearest_point_j(y), warmup=0)
        secs += t
        d2 = np.r_[d2, ((y - x) ** 2).sum(axis=1)]
    g = d2 / (24 * 8)
    print(f"## Decoder, uniform source, {NSM_N:,} points\n")
    print(table(["NSM", "std. error", "literature", "decode Mval/s"],
                [[float(g.mean()), float(g.std() / np.sqrt(len(g))), 0.0657711, NSM_N * 24 / secs / 1e6]]))
    print()

    x = rng.standard_normal((BLOCKS, 24))
    rows = []
    for block_bits in sorted(DEFAULT_SHELLS):
        rows.append(measure_rate(block_bits, x, rng))
        print(f"  done {block_bits} bits/block", file=sys.stderr, flush=True)
    print(f"## Exact angular search and unranking ({BLOCKS:,} N(0,1) blocks, {UNRANK_N:,} random ranks)\n")
    print(table(["bits/dim", "shells M", "cosets with shell M+1", "probes", "mean cos", "cosets solved (mean)", "max",
                 "search blocks/s", "search Mval/s", "unrank Mval/s"], rows))
    print()


if __name__ == "__main__":
    main()
