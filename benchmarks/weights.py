"""Weight compression of the real all-MiniLM-L6-v2 model: size, bits, SQNR, time, ETA and end-to-end quality.

For each configuration (uniform formats with nearest rounding or with Hessian-aware rounding
(LDLQ after RHT), and Fisher / data-free bit allocations at 2.0 / 2.5 / 3.0 average bits) the
whole model (104 tensors, 22.7 M parameters) is compressed with ``vqsearch.weights.compress``
and loaded back into sentence-transformers (``weights.load`` → ``load_state_dict``), then:

* bits/param — every stored array counted (codes, scales, RHT seeds, quantiser states, outliers,
  float16 biases/LayerNorms, the int64 ``position_ids`` buffer), over all 22.7 M parameters;
* MB — bytes of the shard files on disk (Arrow framing included);
* SQNR — mean and minimum over the quantised tensors, in dB;
* compress time — wall seconds of ``compress`` (calibration statistics are collected once,
  before the table, and their time is printed separately);
* ETA worst — the compression progress bar's remaining-time estimate against the time that was
  really left, read at 10 / 25 / 50 / 75 % of the run: the worst factor max(est/actual, actual/est)
  (1.0 = exact; the bar is weighted by each tensor's estimated work, see ``weights.compression``);
* cos q / cos c — mean cosine between the compressed and the float model's embeddings of the
  1,000 shared queries (max_seq_length 64) and of a sample of corpus synopses;
* recall@10 / label@10 — the compressed model's query embeddings searched (exact inner product)
  against the shared corpus vectors of the original model, against its ground truth and labels
  (so this measures query-side damage; re-embedding the 60k corpus per row would cost minutes).
  The float row re-encodes the queries with the float model for reference.

Baselines in the same table: round-to-nearest int4/int2 with float16 steps per 128 weights (no
rotation), absmean ternary (BitNet, one γ per row), and the same int formats with RHT + LDLQ
(GPTQ with incoherence processing), the strongest scalar baseline we have.

Runtime: 16 min for all rows on this 2-core machine when it was quiet (calibration 17 s, each row's
compress 2–77 s plus ~20 s of embedding); expect 30–40 min when the cores are shared.  Rows print as
they finish.  Run::

    python benchmarks/weights.py
    VQSEARCH_WEIGHTS_ONLY=e8p,fisher python benchmarks/weights.py   # rows whose label contains these
    VQSEARCH_WEIGHTS_NQ=300 VQSEARCH_WEIGHTS_CORPUS=300 python benchmarks/weights.py  # quicker, noisier

Trellis rows without ``L`` use the weights default (``Quantizer.weight_defaults``: L = 12); the
``L16`` row measures the embedding default's cost on a whole model.  Leech runs at 2 bits only
(3 bits encodes at ~0.03 M values/s, ~12 min).
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_common import DEBIAN, banner, table

NQ = int(os.environ.get("VQSEARCH_WEIGHTS_NQ", 1000))
N_CORPUS = int(os.environ.get("VQSEARCH_WEIGHTS_CORPUS", 1000))
N_CALIB = int(os.environ.get("VQSEARCH_WEIGHTS_CALIB", 256))
ONLY = [s for s in os.environ.get("VQSEARCH_WEIGHTS_ONLY", "").split(",") if s]
K = 10

# (label, compress kwargs; "calibration" is filled in for rows marked with +LDLQ / fisher)
CONFIGS: list[tuple[str, dict]] = [
    ("int4 g128 RTN", {"format": "int4"}),
    ("int2 g128 RTN", {"format": "int2"}),
    ("ternary absmean", {"format": "ternary"}),
    ("e8p 2", {"format": "e8p:bits=2"}),
    ("e8p 4", {"format": "e8p:bits=4"}),
    ("trellis 2 L12", {"format": "trellis:bits=2,L=12"}),
    ("trellis 4 default L", {"format": "trellis:bits=4"}),
    ("trellis 4 L16", {"format": "trellis:bits=4,L=16"}),
    ("int4 g128 RHT +LDLQ", {"format": "int:bits=4,rht=true", "calibration": True}),
    ("int3 g128 RHT +LDLQ", {"format": "int:bits=3,rht=true", "calibration": True}),
    ("int2 g128 RHT +LDLQ", {"format": "int:bits=2,rht=true", "calibration": True}),
    ("e8p 2 +LDLQ", {"format": "e8p:bits=2", "calibration": True}),
    ("e8p 3 +LDLQ", {"format": "e8p:bits=3", "calibration": True}),
    ("e8p 4 +LDLQ", {"format": "e8p:bits=4", "calibration": True}),
    ("e8 2.5 +LDLQ", {"format": "e8:bits=2.5", "calibration": True}),
    ("trellis 2 L12 +LDLQ", {"format": "trellis:bits=2,L=12", "calibration": True}),
    ("trellis 3 L12 +LDLQ", {"format": "trellis:bits=3,L=12", "calibration": True}),
    ("trellis 4 L12 +LDLQ", {"format": "trellis:bits=4,L=12", "calibration": True}),
    ("leech 2 +LDLQ", {"format": "leech:bits=2", "calibration": True}),
    ("proxy alloc 3.0 (data-free)", {"target_bits": 3.0, "allocate": "proxy"}),
    ("fisher alloc 2.0 +LDLQ", {"target_bits": 2.0, "calibration": True}),
    ("fisher alloc 2.5 +LDLQ", {"target_bits": 2.5, "calibration": True}),
    ("fisher alloc 3.0 +LDLQ", {"target_bits": 3.0, "calibration": True}),
    ("fisher alloc 4.0 +LDLQ", {"target_bits": 4.0, "calibration": True}),
]


def _texts():
    import pyarrow.parquet as pq

    queries = pq.read_table(DEBIAN / "queries.parquet")
    texts = pq.read_table(DEBIAN / "texts.parquet")
    labels = set(queries.column("label").to_pylist())
    rng = np.random.default_rng(2024)
    order = [int(i) for i in rng.permutation(texts.num_rows) if int(i) not in labels]
    desc, syn = texts.column("description").to_pylist(), texts.column("synopsis").to_pylist()
    calib_ids = order[:N_CALIB]
    calib = [desc[i] for i in calib_ids[: N_CALIB // 2]] + [syn[i] for i in calib_ids[N_CALIB // 2:]]
    corpus = [syn[i] for i in order[N_CALIB:N_CALIB + N_CORPUS]]
    return queries.column("query").to_pylist()[:NQ], corpus, calib


class _EtaProbe:
    """Records what the ``compressing`` progress bar predicted, to compare with what really happened."""

    def __init__(self) -> None:
        self.points: list[tuple[float, float | None]] = []  # (time, predicted seconds left)
        self.start = self.end = 0.0

    def install(self) -> None:
        import tqdm.auto
        from tqdm.std import tqdm as std_tqdm

        probe = self

        class Recording(std_tqdm):
            def __init__(self, *args, **kwargs):
                kwargs.update(file=io.StringIO(), mininterval=0)
                super().__init__(*args, **kwargs)
                self._record = self.desc.startswith("compressing")
                if self._record:
                    probe.points, probe.start = [], time.perf_counter()

            def update(self, n=1):
                out = super().update(n)
                if self._record:
                    fd = self.format_dict
                    rate = fd["rate"] or (fd["n"] / fd["elapsed"] if fd["elapsed"] else None)
                    left = (fd["total"] - fd["n"]) / rate if rate else None
                    probe.points.append((time.perf_counter(), left))
                return out

            def close(self):
                if getattr(self, "_record", False):
                    probe.end = time.perf_counter()
                super().close()

        tqdm.auto.tqdm = Recording

    def worst_ratio(self) -> float:
        """Worst max(est/actual, actual/est) of the estimate standing at 10/25/50/75 % of the run."""
        total = self.end - self.start
        worst = 1.0
        for frac in (0.10, 0.25, 0.50, 0.75):
            at = self.start + frac * total
            known = [(t, left) for t, left in self.points if t <= at and left is not None]
            if not known:
                return float("nan")  # no estimate yet at that point (a single huge first tensor)
            _, left = known[-1]
            actual = self.end - at
            if left <= 0 or actual <= 0:
                continue
            worst = max(worst, left / actual, actual / left)
        return worst


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    banner("Weight compression of all-MiniLM-L6-v2 (vqsearch.weights)")
    try:
        import faiss
        import torch
        from sentence_transformers import SentenceTransformer

        from vqsearch import weights
        from vqsearch.embed import model_dir
        from vqsearch.weights.calibration import collect
    except ImportError as exc:
        print(f"(needs the models extra: {exc})")
        return
    if not (DEBIAN / "queries.parquet").exists():
        print(f"(shared data not found at {DEBIAN})")
        return
    print(f"- torch={torch.__version__} threads={torch.get_num_threads()}; queries={NQ} (max_seq_length 64), "
          f"corpus sample={N_CORPUS} synopses, calibration={N_CALIB} texts (half descriptions, half synopses, "
          "none from the queries' packages)")
    folder = model_dir()
    src = folder / "model.safetensors"
    queries, corpus, calib_texts = _texts()
    model = SentenceTransformer(str(folder), device="cpu")
    auto = model[0].auto_model
    original = {k: v.clone() for k, v in auto.state_dict().items()}

    def embed() -> tuple[np.ndarray, np.ndarray]:
        model.max_seq_length = 64
        eq = model.encode(queries, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
        model.max_seq_length = 256
        ec = model.encode(corpus, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
        return eq.astype(np.float32), ec.astype(np.float32)

    xb = np.load(DEBIAN / "base.f16.npy").astype(np.float32)
    gt = np.load(DEBIAN / "groundtruth.i32.npy")[:NQ, :K]
    labels = np.load(DEBIAN / "labels.i32.npy")[:NQ]
    index = faiss.IndexFlatIP(xb.shape[1])
    index.add(xb)

    def retrieval(eq: np.ndarray) -> tuple[float, float]:
        _, ids = index.search(eq, K)
        recall = np.mean([len(set(a) & set(b)) / K for a, b in zip(ids, gt)])
        return float(recall), float(np.mean([lab in row for lab, row in zip(labels, ids)]))

    t0 = time.perf_counter()
    ref_q, ref_c = embed()
    t_embed = time.perf_counter() - t0
    shared_q = np.load(DEBIAN / "queries.f16.npy").astype(np.float32)[:NQ]
    rec0, lab0 = retrieval(ref_q)
    print(f"- float model: re-encoded queries vs the shared query vectors: mean cosine "
          f"{float(np.mean(np.sum(ref_q * shared_q, axis=1))):.5f}; embedding pass {t_embed:.1f} s")
    t0 = time.perf_counter()
    stats = collect(folder, calib_texts, max_seq_length=128, batch_size=16)
    print(f"- calibration: {len(calib_texts)} texts, {stats.tokens} tokens, {len(stats.hessians)} linear layers, "
          f"{time.perf_counter() - t0:.1f} s (input covariances + Fisher, once for all rows)")
    print()
    headers = ["config", "bits/param", "MB", "SQNR mean", "SQNR min", "compress s", "ETA worst", "cos q", "cos c",
               "recall@10", "label@10"]
    rows: list[list[object]] = [["float32 (original)", 32.0, src.stat().st_size / 1e6, float("nan"), float("nan"),
                                 float("nan"), float("nan"), 1.0, 1.0, rec0, lab0]]
    eta = _EtaProbe()
    eta.install()
    print(table(headers, rows), flush=True)
    work = Path(tempfile.mkdtemp(prefix="vq-weights-bench-"))
    allocations = {}
    try:
        for label, kw in CONFIGS:
            if ONLY and not any(s in label for s in ONLY):
                continue
            kw = dict(kw)
            if kw.pop("calibration", False):
                kw["calibration"] = stats
            out = work / "model"
            shutil.rmtree(out, ignore_errors=True)
            t0 = time.perf_counter()
            res = weights.compress(src, out, progress=True, **kw)
            t_comp = time.perf_counter() - t0
            archive = weights.load(out)
            state = {k: torch.from_numpy(np.array(archive[k])) for k in archive}
            auto.load_state_dict(state, strict=False)
            eq, ec = embed()
            auto.load_state_dict(original)
            sq = [t.sqnr_db for t in res.tensors if t.format not in ("raw", "float16", "float32")]
            rec, lab = retrieval(eq)
            row = [label, res.bits_per_param, res.bytes_on_disk / 1e6, float(np.mean(sq)), float(np.min(sq)),
                   t_comp, eta.worst_ratio(), float(np.mean(np.sum(eq * ref_q, axis=1))),
                   float(np.mean(np.sum(ec * ref_c, axis=1))), rec, lab]
            rows.append(row)
            print(table(headers, [row]).splitlines()[2], flush=True)
            if res.allocation is not None:
                allocations[label] = res.allocation
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(table(headers, rows))
    for label, alloc in allocations.items():
        print()
        print(f"Allocation of '{label}' (format: tensors, bits/param):")
        groups: dict[str, list[float]] = {}
        for ch in alloc["choices"].values():
            groups.setdefault(ch["format"].split(",rht")[0].split(",scaling")[0], []).append(ch["bits_per_param"])
        for fmt, b in sorted(groups.items()):
            print(f"  {fmt}: {len(b)} tensors")
        for name, ch in alloc["choices"].items():
            short = (name.replace("encoder.layer.", "L").replace(".weight", "").replace("attention.self.", "")
                     .replace("attention.output.dense", "attn_out").replace("output.dense", "ffn_out")
                     .replace("intermediate.dense", "ffn_in"))
            print(f"  {short:32s} {ch['format'].split(',rht')[0]:18s} {ch['bits_per_param']:.3f} "
                  f"sens {ch['sensitivity']:.3g}")


if __name__ == "__main__":
    main()
