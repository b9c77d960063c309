"""``vqsearch demo``: the main job on a corpus every installation has.

Embeds the docstrings of the Python standard library (:mod:`vqsearch.corpus`) with the
offline MiniLM model, builds an :class:`vqsearch.Index` with the default quantisers,
runs example queries, and reports recall against exact float32 search, memory per
vector and query throughput.  Embeddings are cached under ``~/.cache/vqsearch``.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import numpy as np

from .corpus import python_docstrings
from .embed import MiniLMEmbedder
from .eval import recall_at_k
from .index import Index

PROBE_QUERIES = 500
TIMED_RUNS = 3
WARMUP_VECTORS = 2_000


def _cache_dir() -> Path:
    root = os.environ.get("VQSEARCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "vqsearch")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def embed_corpus(texts: list[str], embedder: MiniLMEmbedder, out: TextIO) -> np.ndarray:
    """Embeddings of ``texts``, cached by a hash of the texts."""
    key = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    cache = _cache_dir() / f"pydocs-minilm-{key}.npy"
    if cache.exists():
        emb = np.load(cache)
        if emb.shape == (len(texts), embedder.dim):
            print(f"embeddings: loaded {len(texts):,} from cache {cache}", file=out)
            return emb
    t0 = time.perf_counter()
    print(f"embeddings: encoding {len(texts):,} docstrings with all-MiniLM-L6-v2 (CPU, once) ...", file=out)
    emb = embedder.encode(texts, show_progress=out.isatty() if hasattr(out, "isatty") else False)
    tmp = cache.with_suffix(".tmp.npy")
    np.save(tmp, emb)
    os.replace(tmp, cache)
    print(f"embeddings: done in {time.perf_counter() - t0:.1f} s", file=out)
    return emb


def warm_up(xb: np.ndarray, probe: np.ndarray, index_options: dict) -> None:
    """Compile (or load from numba's cache) every kernel the demo's build and searches use.

    A throw-away index with the same options over a slice of the corpus runs the same code paths as
    the real one: encoding, the batched scan, rescoring and the single-query path.  Without this, the
    first run's throughput figure would mostly measure numba's compiler.
    """
    with tempfile.TemporaryDirectory(prefix="vqsearch-warmup-") as tmp:
        index = Index.create(os.path.join(tmp, "warmup"), dim=xb.shape[1], metric="cosine", **index_options)
        index.add(xb[:WARMUP_VECTORS])
        index.search(probe, k=10)
        index.search(probe[:1], k=10)
        index.close()


def run_demo(*, path: str | None = None, queries: Sequence[str], k: int = 5, scan: str | None = None,
             rescore: str | None = None, out: TextIO = sys.stdout) -> dict[str, float]:
    docs = python_docstrings()
    names = [d[0] for d in docs]
    texts = [d[1] for d in docs]
    print(f"corpus: {len(docs):,} Python standard-library docstrings", file=out)
    embedder = MiniLMEmbedder()
    xb = embed_corpus(texts, embedder, out)

    kwargs = {}
    if scan:
        kwargs["scan"] = scan
    if rescore:
        kwargs["rescore"] = None if rescore.lower() == "none" else rescore
    rng = np.random.default_rng(0)
    probe = xb[rng.choice(len(xb), min(PROBE_QUERIES, len(xb)), replace=False)]
    t0 = time.perf_counter()
    warm_up(xb, probe, kwargs)
    print(f"compiling kernels (first run only; cached afterwards) ... {time.perf_counter() - t0:.1f} s", file=out)

    t0 = time.perf_counter()
    index = Index.create(path, dim=xb.shape[1], metric="cosine", **kwargs)
    index.add(xb, metadata={"name": names})
    build_s = time.perf_counter() - t0
    st = index.stats()
    print(f"index: {index.path} scan={st['scan']!r} rescore={st['rescore']!r} "
          f"{st['bytes_per_vector']} bytes/vector (float32: {4 * xb.shape[1]}), built in {build_s:.2f} s", file=out)

    xq = embedder.encode(list(queries))
    _, ids = index.search(xq, k=k)
    for text, row in zip(queries, ids):
        print(f"\nquery: {text}", file=out)
        for rank, i in enumerate(row, 1):
            if i >= 0:
                print(f"  {rank}. {texts[i][:110]}", file=out)

    # Quality and speed on the corpus itself: held-in docstrings as queries vs exact search.
    # Throughput is the median of a few warm batch runs (the kernels were compiled above).
    exact = np.argsort(-(probe @ xb.T), axis=1)[:, :10]
    seconds = []
    for _ in range(TIMED_RUNS):
        t0 = time.perf_counter()
        _, got = index.search(probe, k=10)
        seconds.append(time.perf_counter() - t0)
    qps = len(probe) / float(np.median(seconds))
    recall = recall_at_k(got, exact, 10)
    print(f"\nrecall@10 vs exact float32 search ({len(probe)} docstring queries): {recall:.3f}; "
          f"{qps:,.0f} queries/s (batch, warm)", file=out)
    index.close()
    return {"recall@10": recall, "qps": qps, "bytes_per_vector": float(st["bytes_per_vector"])}
