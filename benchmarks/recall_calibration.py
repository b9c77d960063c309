"""Self-calibration: the recall@10 an index estimates for itself against the recall measured on held-out queries.

Each index is built with its preset's ``target_recall`` (0.95) and default search settings, which the
index chooses from the recall curve it measures on its calibration sample (rows of the index).  The
queries measured here were never written to the index.  Sets:

* Debian-MiniLM (shared, 60,179 × 384, its 1,000 queries and exact top 10), when present;
* synthetic sets generated here (seeded): clustered directions with log-normal norms (l2 and ip),
  heavy-tailed hub-heavy data (l2), a 6-dimensional manifold in 128 dimensions (cosine) and rank-96
  clusters rotated into 768 dimensions (cosine).

Columns: the build time (training, encoding, writing and the calibration), the default settings the
index chose, its estimated recall, the measured recall, and whether it warned that the target is out
of reach (and what it suggests).

Run::

    python benchmarks/recall_calibration.py          # about 5 minutes on 2 cores
    VQSEARCH_CAL_N=20000 python benchmarks/recall_calibration.py
    VQSEARCH_CAL_SETS=debian VQSEARCH_SHARED_DATA=/path/to/data python benchmarks/recall_calibration.py
"""

from __future__ import annotations

import os
import time
import warnings

import numpy as np
from bench_common import banner, load_debian, table

import vqsearch
from vqsearch.eval import recall_at_k

N = int(os.environ.get("VQSEARCH_CAL_N", 50_000))
NQ = 1000
PRESETS = os.environ.get("VQSEARCH_CAL_PRESETS", "default,accurate").split(",")
SETS = os.environ.get("VQSEARCH_CAL_SETS", "debian,synthetic").split(",")


def varying_norms(n: int, d: int, seed: int) -> np.ndarray:
    r = np.random.default_rng(seed)
    centres = r.standard_normal((64, d))
    x = centres[r.integers(0, 64, n)] + 0.8 * r.standard_normal((n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return (x * np.exp(r.normal(0, 0.9, (n, 1)))).astype(np.float32)


def hub_heavy(n: int, d: int, seed: int) -> np.ndarray:
    r = np.random.default_rng(seed)
    t = r.standard_t(3, (n, d)) * np.exp(r.normal(0, 0.5, (n, 1)))
    return (t + 0.5 * r.standard_normal(d)).astype(np.float32)


def low_intrinsic(n: int, d: int, seed: int) -> np.ndarray:
    r = np.random.default_rng(seed)
    z = r.uniform(-1, 1, (n, 6))
    f = np.concatenate([z, np.sin(3 * z), np.cos(2 * z), z**2], axis=1)
    return (f @ r.standard_normal((f.shape[1], d)) + 0.02 * r.standard_normal((n, d))).astype(np.float32)


def rotated_768(n: int, seed: int) -> np.ndarray:
    r = np.random.default_rng(seed)
    low = (r.standard_normal((32, 96)) * 1.5)[r.integers(0, 32, n)] + r.standard_normal((n, 96))
    rotation, _ = np.linalg.qr(r.standard_normal((768, 768)))
    return (np.pad(low, ((0, 0), (0, 672))) @ rotation).astype(np.float32)


def exact_top10(xq: np.ndarray, xb: np.ndarray, metric: str) -> np.ndarray:
    if metric == "cosine":
        xq = xq / np.linalg.norm(xq, axis=1, keepdims=True)
        xb = xb / np.linalg.norm(xb, axis=1, keepdims=True)
    out = np.empty((xq.shape[0], 10), np.int64)
    for s in range(0, xq.shape[0], 100):
        ip = xq[s:s + 100] @ xb.T
        score = 2 * ip - (xb**2).sum(1)[None] if metric == "l2" else ip
        top = np.argpartition(-score, 10, axis=1)[:, :10]
        out[s:s + 100] = np.take_along_axis(top, np.argsort(-np.take_along_axis(score, top, 1), axis=1), 1)
    return out


def sets():
    debian = load_debian() if "debian" in SETS else None
    if debian is not None:
        yield "debian-minilm", "cosine", debian["xb"], debian["xq"], debian["gt"][:, :10]
    if "synthetic" not in SETS:
        return
    for name, metric, make in (
        ("varying norms d=384", "l2", lambda: varying_norms(N + NQ, 384, 1)),
        ("varying norms d=384", "ip", lambda: varying_norms(N + NQ, 384, 1)),
        ("hub-heavy t(3) d=128", "l2", lambda: hub_heavy(N + NQ, 128, 2)),
        ("6-d manifold in d=128", "cosine", lambda: low_intrinsic(N + NQ, 128, 3)),
        ("rank 96 rotated to d=768", "cosine", lambda: rotated_768(N // 2 + NQ, 4)),
    ):
        x = make()
        xb, xq = x[:-NQ], x[-NQ:]
        yield name, metric, xb, xq, exact_top10(xq, xb, metric)


def main() -> None:
    banner("Self-calibration: estimated against held-out recall@10")
    rows = []
    for name, metric, xb, xq, gt in sets():
        for preset in PRESETS:
            t0 = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                idx = vqsearch.Index.create(None, dim=xb.shape[1], metric=metric, preset=preset)
                idx.add(xb)
            build = time.perf_counter() - t0
            stats = idx.stats()
            _, ids = idx.search(xq, k=10)
            measured = recall_at_k(ids, gt)
            t0 = time.perf_counter()
            idx.search(xq, k=10)
            qps = xq.shape[0] / (time.perf_counter() - t0)
            warned = [str(w.message) for w in caught if issubclass(w.category, vqsearch.index.RecallWarning)]
            defaults = stats["search_defaults"]
            rows.append([name, xb.shape[0], metric, preset, f"{build:.1f}", defaults["oversample"],
                         defaults["nprobe"] or "flat", stats["estimated_recall"], round(measured, 4),
                         round(stats["estimated_recall"] - measured, 4), f"{qps:,.0f}",
                         stats["calibration"]["exact_rescoring_recall"], "yes" if warned else "no"])
            print(" | ".join(str(v) for v in rows[-1]), flush=True)
            for text in warned:
                print("   warning:", text, flush=True)
            idx.close()
    print()
    print(table(["set", "n", "metric", "preset", "build s", "oversample", "nprobe", "estimated", "measured",
                 "est − meas", "QPS", "exact-rescoring est.", "warned"], rows))


if __name__ == "__main__":
    main()
