"""Fine-tuning after rounding on the real all-MiniLM-L6-v2: rounded vs fine-tuned rows at 2.0 / 2.5 / 3.0 bits.

Each row runs ``vqsearch.weights.compress`` from scratch on the 22.7 M-parameter model, calibration
included (256 Debian texts: half long descriptions, half synopses, none from the packages the
queries point at), then loads the compressed weights back into sentence-transformers and embeds
the 1,000 shared queries and 1,000 corpus synopses (disjoint from the calibration texts):

* bits/param — every stored array counted, over all parameters (the whole output folder);
* total s — wall seconds of ``compress``: calibration + rounding (+ fine-tuning); ``FT s`` is the
  fine-tuning part alone;
* cos q / cos c — mean cosine to the float model's embeddings of the queries / synopses (max
  sequence length 64 / 256); recall@10 and label@10 as in ``benchmarks/weights.py`` (query side);
* the fine-tuning report's end-to-end loss (1 − cos on the calibration texts) before and after.

A plot of cos q against bits/param is written to ``benchmarks/weights_finetune.png``.

Run::

    python benchmarks/weights_finetune.py                     # all rows, ~30 min on a quiet 2-core machine
    VQSEARCH_FT_ONLY=2.0 python benchmarks/weights_finetune.py  # rows whose label contains this
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_common import DEBIAN, banner, table

NQ = int(os.environ.get("VQSEARCH_FT_NQ", 1000))
N_CORPUS = int(os.environ.get("VQSEARCH_FT_CORPUS", 1000))
N_CALIB = int(os.environ.get("VQSEARCH_FT_CALIB", 256))
ONLY = [s for s in os.environ.get("VQSEARCH_FT_ONLY", "").split(",") if s]
PLOT = Path(__file__).with_name("weights_finetune.png")
K = 10

CONFIGS: list[tuple[str, dict]] = [
    ("fisher 2.0 +LDLQ", {"target_bits": 2.0}),
    ("fisher 2.0 +LDLQ +FT", {"target_bits": 2.0, "finetune": True}),
    ("fisher 2.1 +LDLQ +FT", {"target_bits": 2.1, "finetune": True}),
    ("fisher 2.5 +LDLQ", {"target_bits": 2.5}),
    ("fisher 2.5 +LDLQ +FT", {"target_bits": 2.5, "finetune": True}),
    ("fisher 3.0 +LDLQ", {"target_bits": 3.0}),
    ("fisher 3.0 +LDLQ +FT", {"target_bits": 3.0, "finetune": True}),
    ("fisher 3.1 +LDLQ +FT", {"target_bits": 3.1, "finetune": True}),
]


def _texts():
    import pyarrow.parquet as pq

    queries = pq.read_table(DEBIAN / "queries.parquet")
    texts = pq.read_table(DEBIAN / "texts.parquet")
    labels = set(queries.column("label").to_pylist())
    rng = np.random.default_rng(2024)
    order = [int(i) for i in rng.permutation(texts.num_rows) if int(i) not in labels]
    desc, syn = texts.column("description").to_pylist(), texts.column("synopsis").to_pylist()
    calib = [desc[i] for i in order[: N_CALIB // 2]] + [syn[i] for i in order[N_CALIB // 2:N_CALIB]]
    corpus = [syn[i] for i in order[N_CALIB:N_CALIB + N_CORPUS]]
    return queries.column("query").to_pylist()[:NQ], corpus, calib


def _plot(rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for ft, marker, name in ((False, "o", "rounded (LDLQ)"), (True, "s", "fine-tuned")):
        pts = [r for r in rows if r["ft"] == ft]
        ax.scatter([r["bits"] for r in pts], [r["cos_q"] for r in pts], marker=marker, label=name, zorder=3)
        for r in pts:
            ax.annotate(r["label"].replace(" +LDLQ", "").replace(" +FT", ""), (r["bits"], r["cos_q"]),
                        textcoords="offset points", xytext=(4, -10 if ft else 4), fontsize=7)
    for y, x in ((0.95, 2.1), (0.985, 3.1)):
        ax.plot([x - 0.15, x], [y, y], color="grey", linestyle="--", linewidth=1)
        ax.plot([x, x], [y - 0.01, y], color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("bits / parameter (whole output folder)")
    ax.set_ylabel("mean cosine to the float model (1,000 queries)")
    ax.set_title("all-MiniLM-L6-v2: fine-tuning after rounding")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(PLOT)
    plt.close(fig)


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    banner("Fine-tuning after rounding on all-MiniLM-L6-v2 (vqsearch.weights, finetune=True)")
    try:
        import faiss
        import torch
        from sentence_transformers import SentenceTransformer

        from vqsearch import weights
        from vqsearch.embed import model_dir
    except ImportError as exc:
        print(f"(needs the models extra: {exc})")
        return
    if not (DEBIAN / "queries.parquet").exists():
        print(f"(shared data not found at {DEBIAN})")
        return
    queries, corpus, calib = _texts()
    print(f"- torch={torch.__version__} threads={torch.get_num_threads()}; queries={len(queries)}, corpus sample="
          f"{len(corpus)} synopses, calibration={len(calib)} texts (none from the queries' packages); fine-tuning "
          f"defaults {json.dumps(weights.FinetuneOptions().__dict__)}")
    folder = model_dir()
    src = folder / "model.safetensors"
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

    ref_q, ref_c = embed()
    headers = ["config", "bits/param", "MB", "total s", "FT s", "e2e loss before→after", "cos q", "cos c",
               "recall@10", "label@10"]
    rec0, lab0 = retrieval(ref_q)
    rows = [["float32 (original)", 32.0, src.stat().st_size / 1e6, float("nan"), float("nan"), "–", 1.0, 1.0,
             rec0, lab0]]
    print(table(headers, rows), flush=True)
    points: list[dict] = []
    work = Path(tempfile.mkdtemp(prefix="vq-ft-bench-"))
    try:
        for label, kw in CONFIGS:
            if ONLY and not any(s in label for s in ONLY):
                continue
            out = work / "model"
            shutil.rmtree(out, ignore_errors=True)
            t0 = time.perf_counter()
            res = weights.compress(src, out, calibration=calib, progress=False, **kw)
            total = time.perf_counter() - t0
            manifest = json.loads((out / "manifest.json").read_text())
            ft = manifest.get("finetune")
            archive = weights.load(out)
            auto.load_state_dict({k: torch.from_numpy(np.array(archive[k])) for k in archive}, strict=False)
            eq, ec = embed()
            auto.load_state_dict(original)
            rec, lab = retrieval(eq)
            cos_q = float(np.mean(np.sum(eq * ref_q, axis=1)))
            e2e = "–"
            if ft:
                last = ft["stages"][-1]
                e2e = f"{last['loss_before']:.4f}→{last['loss_after']:.4f}"
            row = [label, res.bits_per_param, res.bytes_on_disk / 1e6, total, ft["seconds"] if ft else float("nan"),
                   e2e, cos_q, float(np.mean(np.sum(ec * ref_c, axis=1))), rec, lab]
            rows.append(row)
            points.append({"label": label, "bits": res.bits_per_param, "cos_q": cos_q, "ft": bool(ft)})
            print(table(headers, [row]).splitlines()[2], flush=True)
            if ft:
                stages = ", ".join(f"{s['stage']} {s['loss_before']:.4f}→{s['loss_after']:.4f}"
                                   f"{' (reverted)' if s.get('reverted') else ''} [{s['codes_changed']} codes]"
                                   for s in ft["stages"])
                print(f"    per-stage loss: {stages}; truncated by time budget: {ft['truncated_by_time_budget']}",
                      flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(table(headers, rows))
    if points:
        _plot(points)
        print(f"\nplot: {PLOT.name}")


if __name__ == "__main__":
    main()
