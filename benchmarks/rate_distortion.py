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

import numpy as np
from bench_common import banner, load_debian, table

from vqsearch import quantizers
from vqsearch.eval import timed

GAUSS_N = int(os.environ.get("VQSEARCH_RD_N", 512))
GAUSS_D = 768
DEBIAN_N = int(os.environ.get("VQSEARCH_RD_DEBIAN_N", 10_000))

# (spec, reference MSE on N(0,1) from quantizers.md or None). Rows are grouped by family;
# each family's owner keeps its own list.
FOUNDATION_ROWS: list[tuple[str, float | None]] = [
    ("float16", None),
    ("sq8", None),
    ("sq4", 0.0095),  # Lloyd–Max 4-bit (non-uniform levels); the best uniform 16-level quantiser has 0.01154
    ("sq4:clip=minmax", None),
    ("binary", 0.3634),  # 1 − 2/π
    ("ternary", 0.1902),  # top-k with 54 % non-zeros: 1 − 0.8999²
    ("ternary:mode=optimal", 0.1902),
    ("ternary:mode=absmean", 0.2633),
    ("ternary:packing=base3", 0.1902),
    ("pq:m=192,nbits=4", None),
    ("pq:m=96,nbits=8", None),
    ("pq:m=384,nbits=8", None),
]
LATTICE_ROWS: list[tuple[str, float | None]] = [
    ("e8p", 0.0915),
    ("e8p:bits=3", 0.0295),
    ("e8p:bits=4", 0.0096),
    ("e8p:scale=vector", None),
    ("e8:bits=1", None),
    ("e8:bits=1.5", None),
    ("e8:bits=2", None),
    ("e8:bits=2.5", None),
    ("e8:bits=3", None),
    ("e8:bits=4", None),
    ("leech:bits=1.5", None),
    ("leech:bits=2", 0.084),  # LLVQ spherical Λ24(13); LLVQ shape–gain Λ24(12) + 1 gain bit: 0.078
    ("leech:bits=2,scale=vector", None),
    ("leech:bits=3", None),
]
TRELLIS_ROWS: list[tuple[str, float | None]] = [
    ("trellis:bits=1,L=16,code=1mad", None),
    ("trellis:bits=2,L=16,code=1mad", 0.0684),
    ("trellis:bits=3,L=16,code=1mad", 0.0174),
    ("trellis:bits=4,L=16,code=1mad", 0.00445),
    ("trellis:bits=1,L=16,code=3inst", None),
    ("trellis:bits=2,L=16,code=3inst", 0.0682),
    ("trellis:bits=3,L=16,code=3inst", None),
    ("trellis:bits=4,L=16,code=3inst", None),
    ("trellis:bits=1,L=16,code=lut", None),
    ("trellis:bits=2,L=16,code=lut", 0.0676),
    ("trellis:bits=3,L=16,code=lut", None),
    ("trellis:bits=4,L=16,code=lut", None),
    ("trellis:bits=1,L=16,V=2,code=hyb", None),
    ("trellis:bits=2,L=16,V=2,code=hyb", 0.0700),
    ("trellis:bits=3,L=16,V=2,code=hyb", None),
    ("trellis:bits=4,L=16,V=2,code=hyb", None),
    ("trellis:bits=2,L=16,code=1mad,tail_window=64", None),
    ("trellis:bits=2,L=14,code=1mad", None),
    ("trellis:bits=2,L=12,code=1mad", None),
]

# Specs also run on the Debian-MiniLM vectors (relative error, with RHT where it applies).
DEBIAN_SPECS: list[str] = [
    "float16",
    "e8p:rht=true",
    "e8p:rht=true,scale=vector",
    "e8p:bits=3,rht=true",
    "e8p:bits=4,rht=true",
    "e8:bits=2,rht=true",
    "binary",
    "ternary",
    "ternary:packing=base3",
    "sq4",
    "sq8",
    "pq:m=96,nbits=4",
    "pq:m=48,nbits=8",
    "opq:m=96,nbits=4",
    "trellis:bits=2,L=12,rht=true",
    "trellis:bits=2,L=14,rht=true",
    "leech:bits=1.5,rht=true",
    "leech:bits=2,rht=true",
    "leech:bits=2,rht=true,scale=vector",
    "leech:bits=3,rht=true",
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
