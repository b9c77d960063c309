"""``vqsearch serve --demo-debian DIR``: serve the shared Debian-MiniLM set as collection ``debian``.

``DIR`` holds ``texts.parquet`` (id, package, synopsis, description, section) and
``base.f16.npy`` (the all-MiniLM-L6-v2 embeddings of the same rows, float16).  The
collection uses the MiniLM embedder when the ``models`` extra is installed, so it can
be searched with ``{"texts": [...]}``; otherwise only by vector.  Loading is skipped
when the collection already exists (a restart reuses it).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from ..errors import InvalidInput, MissingDependency, NotFound
from .registry import CollectionRegistry

LOG = logging.getLogger(__name__)

NAME = "debian"
METADATA = ("package", "synopsis", "section")


def load_debian(registry: CollectionRegistry, directory: Path, name: str = NAME) -> None:
    """Create and fill collection ``name`` from ``directory`` unless it exists already."""
    import pyarrow.parquet as pq

    directory = Path(directory)
    texts_path, vectors_path = directory / "texts.parquet", directory / "base.f16.npy"
    for p in (texts_path, vectors_path):
        if not p.exists():
            raise NotFound(f"demo data file {p} not found")
    if name in registry.names():
        c = registry.get(name)
        LOG.info("demo: collection %r exists (%d vectors); not reloading", name, len(c.index))
        if c.embedder_name is not None:
            c.embedder().encode(["warm-up"])
        return
    t0 = time.perf_counter()
    table = pq.read_table(texts_path, columns=["id", *METADATA])
    x = np.load(vectors_path).astype(np.float32)
    if x.shape[0] != table.num_rows:
        raise InvalidInput(f"{vectors_path} has {x.shape[0]} rows but {texts_path} has {table.num_rows}")
    embedder: str | None = "minilm" if "minilm" in registry.embedders else None
    options = {"ivf": None}  # 60k vectors: a flat scan is fast, and skipping k-means keeps startup to seconds
    try:
        c = registry.create(name, dim=x.shape[1], metric="cosine", embedder=embedder, options=options)
    except MissingDependency as exc:
        LOG.warning("demo: %s; the collection is searchable by vector only", exc)
        c = registry.create(name, dim=x.shape[1], metric="cosine", embedder=None, options=options)
    ids = table.column("id").to_numpy().astype(np.uint64)
    c.index.upsert(x, ids, metadata=table.select(list(METADATA)), progress=False)  # a server logs, no bars
    LOG.info("demo: loaded %d Debian packages into %r in %.1f s", len(c.index), name, time.perf_counter() - t0)
    if c.embedder_name is not None:  # load the model now, so that the first text query is fast
        c.embedder().encode(["warm-up"])
