"""Rate–distortion of every quantiser on i.i.d. N(0,1) data and on the shared Debian-MiniLM vectors.

Measures, per quantiser spec: bits/dim (everything stored per vector), MSE per scalar
(Gaussian) or relative error ‖x − x̂‖²/‖x‖² (Debian-MiniLM, 384-d unit vectors), encode
and decode throughput in million values/s, next to the Gaussian bound D(R) = 2^(-2R) and
the reference numbers of ``../shared/design/quantizers.md``.

Run::

    python benchmarks/rate_distortion.py                  # everything
    python benchmarks/rate_distortion.py --only e8p,leech # rows whose spec starts with these
    VQSEARCH_RD_N=1024 python benchmarks/rate_distortion.py

Gaussian data: N × 768 float32 scalars (default N = 512 → 393,216 ≥ 2^18 scalars), seed 0.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import banner, load_debian, table, timed
from vqsearch import quantizers

GAUSS_N = int(os.environ.get("VQSEARCH_RD_N", 512))
GAUSS_D = 768
DEBIAN_N = int(os.environ.get("VQSEARCH_RD_DEBIAN_N", 10_000))

# (spec, reference MSE on N(0,1) from quantizers.md or None). Rows are grouped by family;
# each family's owner keeps its own list.
FOUNDATION_ROWS: list[tuple[str, float | None]] = [
    ("float16", None),
]
LATTICE_ROWS: list[tuple[str, float | None]] = []
TRELLIS_ROWS: list[tuple[str, float | None]] = []

# Specs also run on the Debian-MiniLM vectors (relative error, with RHT where it applies).
DEBIAN_SPECS: list[str] = [
    "float16",
]


def measure(spec: str, xt: np.ndarray, x: np.ndarray) -> dict[str, float]:
    q = quantizers.get(spec)
    q.fit(xt)
    codes, t_enc = timed(lambda: q.encode(x), warmup=1)
    x_hat, t_dec = timed(lambda: q.decode(codes), warmup=1, repeat=3)
    err = (x_hat - x).astype(np.float64)
    return {
        "bits": q.bits_per_dim,
        "mse": float(np.mean(err**2)),
        "rel": float(np.sum(err**2) / np.sum(x.astype(np.float64) ** 2)),
        "enc": x.size / t_enc / 1e6,
        "dec": x.size / t_dec / 1e6,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated spec prefixes to run")
    ap.add_argument("--skip-debian", action="store_true")
    args = ap.parse_args()
    prefixes = tuple(p for p in args.only.split(",") if p)

    def wanted(spec: str) -> bool:
        return not prefixes or spec.startswith(prefixes)

    banner("Rate–distortion")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((GAUSS_N, GAUSS_D), dtype=np.float32)
    xt = rng.standard_normal((max(GAUSS_N, 4096), GAUSS_D), dtype=np.float32)
    rows = []
    for spec, ref in FOUNDATION_ROWS + LATTICE_ROWS + TRELLIS_ROWS:
        if not wanted(spec):
            continue
        m = measure(spec, xt, x)
        bound = 2.0 ** (-2 * m["bits"])
        rows.append([spec, m["bits"], m["mse"], ref if ref is not None else float("nan"), bound,
                     m["mse"] / bound, m["enc"], m["dec"]])
        print(f"  done {spec}", file=sys.stderr, flush=True)
    print(f"## i.i.d. N(0,1), {GAUSS_N} × {GAUSS_D} = {x.size:,} scalars, seed 0\n")
    print(table(["spec", "bits/dim", "MSE", "reference MSE", "D(R)=2^-2R", "MSE/D(R)",
                 "encode Mval/s", "decode Mval/s"], rows))
    print()

    data = None if args.skip_debian else load_debian()
    if data is not None:
        xb = data["xb"]
        perm = np.random.default_rng(1).permutation(len(xb))
        xe, xtrain = xb[perm[:DEBIAN_N]], xb[perm[DEBIAN_N:DEBIAN_N + 20_000]]
        rows = []
        for spec in DEBIAN_SPECS:
            if not wanted(spec):
                continue
            m = measure(spec, xtrain, xe)
            rows.append([spec, m["bits"], m["bits"] * xe.shape[1] / 8, m["rel"],
                         m["rel"] * 2.0 ** (2 * m["bits"]), m["enc"], m["dec"]])
            print(f"  done debian {spec}", file=sys.stderr, flush=True)
        print(f"## Debian-MiniLM, {len(xe):,} × {xe.shape[1]} (unit norm),"
              f" trained on {len(xtrain):,} others\n")
        print(table(["spec", "bits/dim", "bytes/vector", "‖x−x̂‖²/‖x‖²", "rel·2^(2R) (lower = better per bit)",
                     "encode Mval/s", "decode Mval/s"], rows))
        print()


if __name__ == "__main__":
    main()
