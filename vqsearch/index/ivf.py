"""Inverted-file (IVF) coarse quantiser: k-means centroids (faiss) and list probing.

Each vector is assigned to its nearest centroid ("list"); a query scans only its
``nprobe`` nearest lists.  Probing is a brute-force matrix product over the
centroids, or an hnswlib graph search when there are many centroids (the graph
is rebuilt from the centroids on load, which takes well under a second for the
list counts used here).
"""

from __future__ import annotations

import io
import logging
import math
import threading
from dataclasses import dataclass, replace

import numpy as np

from .. import parallel
from ..errors import CorruptData, InvalidInput
from ..kernels.ivf import select_lists, select_lists_serial
from .metric import Metric, get_metric

LOG = logging.getLogger(__name__)

#: Probed lists come nearest first for this many lists (then in list order): scans that keep a running
#: top-k prune more once they have seen the best candidates.
PROBE_LEAD = 8


@dataclass(frozen=True)
class IVFConfig:
    """IVF settings (``ivf={"nlist": 1024}`` in :meth:`vqsearch.Index.create`).

    Parameters
    ----------
    nlist:
        Number of lists (k-means centroids); ``0`` = automatic: chosen from the training sample (the first
        batch) as the power of two nearest 4·√n, or 1 (a flat scan) below ``auto_min_vectors`` vectors:
        batched flat scans group queries per code load, which makes a row of a flat scan several times
        cheaper than a row of short lists, so at that size a flat scan is as fast as IVF at nprobe = nlist/4
        and loses no recall to the lists (benchmarks/RESULTS.md, sections 2 and 6).
    nprobe:
        Default lists scanned per query (per-call ``nprobe`` overrides it). More = higher recall, slower.
        ``0`` = automatic: 1/4 of the lists, chosen on Debian-MiniLM, whose queries are worded unlike its
        corpus (benchmarks/RESULTS.md, section 2); tighter data needs fewer.
    hnsw:
        Probe centroids with an hnswlib graph: ``"auto"`` (when nlist ≥ ``hnsw_min_nlist``), ``True``, ``False``.
    hnsw_min_nlist:
        List count from which ``"auto"`` switches to the graph.
    train_size:
        At most this many vectors are used for k-means (faiss itself samples 256 per centroid).
    niter:
        k-means iterations.
    """

    nlist: int = 0
    nprobe: int = 0
    hnsw: bool | str = "auto"
    hnsw_min_nlist: int = 4096
    train_size: int = 262_144
    niter: int = 10
    seed: int = 0
    auto_min_vectors: int = 100_000

    def __post_init__(self) -> None:
        if not 0 <= self.nlist <= 1 << 20:
            raise InvalidInput(f"ivf nlist must be in [0 (auto), 2^20], got {self.nlist}")
        if self.nprobe < 0:
            raise InvalidInput(f"ivf nprobe must be >= 0 (0 = auto), got {self.nprobe}")
        if self.hnsw not in (True, False, "auto"):
            raise InvalidInput(f"ivf hnsw must be true, false or 'auto', got {self.hnsw!r}")

    def resolved(self, n_train: int) -> IVFConfig:
        """A copy with automatic ``nlist``/``nprobe`` fixed for a training sample of ``n_train`` vectors."""
        nlist = self.nlist
        if nlist == 0:
            nlist = 1 if n_train < self.auto_min_vectors else 1 << int(round(math.log2(4 * math.sqrt(n_train))))
        nprobe = self.nprobe or max(1, nlist // 4)
        return replace(self, nlist=nlist, nprobe=nprobe)

    @classmethod
    def from_any(cls, value: IVFConfig | dict | str | None) -> IVFConfig | None:
        if value is None or isinstance(value, IVFConfig):
            return value
        if value == "auto":
            return cls()
        if not isinstance(value, dict):
            raise InvalidInput(f"ivf must be a dict like {{'nlist': 1024}}, got {type(value).__name__}")
        unknown = set(value) - set(cls.__dataclass_fields__)
        if unknown:
            raise InvalidInput(f"unknown ivf option(s) {sorted(unknown)}; valid: {sorted(cls.__dataclass_fields__)}")
        return cls(**value)


class CoarseQuantizer:
    """Centroids plus assignment/probing in the order of the index's metric (:mod:`.metric`)."""

    def __init__(self, centroids: np.ndarray, metric: str | Metric, cfg: IVFConfig) -> None:
        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        self.metric = get_metric(metric)
        self.cfg = cfg
        self.nlist = self.centroids.shape[0]
        self._centroid_norms = np.einsum("ij,ij->i", self.centroids, self.centroids)
        self._probe_bias = self.metric.probe_bias(self._centroid_norms)  # probes rank by ⟨q, c⟩ + bias
        self._use_graph = cfg.hnsw if cfg.hnsw != "auto" else self.nlist >= cfg.hnsw_min_nlist
        self._graph = None  # built on first probe, so that opening an index stays fast
        self._graph_lock = threading.Lock()

    @classmethod
    def train(cls, x: np.ndarray, metric: str | Metric, cfg: IVFConfig) -> CoarseQuantizer:
        import faiss

        metric = get_metric(metric)
        if x.shape[0] < cfg.nlist:
            raise InvalidInput(f"IVF with nlist={cfg.nlist} needs at least {cfg.nlist} training vectors, "
                               f"got {x.shape[0]}")
        rng = np.random.default_rng(cfg.seed)
        if x.shape[0] > cfg.train_size:
            x = x[np.sort(rng.choice(x.shape[0], cfg.train_size, replace=False))]
        km = faiss.Kmeans(x.shape[1], cfg.nlist, niter=cfg.niter, seed=cfg.seed,
                          spherical=metric.spherical, verbose=False)
        km.train(np.ascontiguousarray(x, dtype=np.float32))
        return cls(km.centroids, metric, cfg)

    def _build_graph(self):
        import hnswlib

        g = hnswlib.Index(space=self.metric.graph_space, dim=self.centroids.shape[1])
        g.init_index(max_elements=self.nlist, ef_construction=200, M=32, random_seed=self.cfg.seed)
        g.add_items(self.centroids, np.arange(self.nlist))
        return g

    def _scores(self, x: np.ndarray) -> np.ndarray:
        """Ranking scores of rows of ``x`` against every centroid (higher = nearer)."""
        return self.metric.score(x @ self.centroids.T, self._centroid_norms[None, :])

    def assign(self, x: np.ndarray, batch: int = 65_536) -> np.ndarray:
        """Nearest list of every row, int32 (n,)."""
        out = np.empty(x.shape[0], dtype=np.int32)
        for s in range(0, x.shape[0], batch):
            out[s:s + batch] = np.argmax(self._scores(x[s:s + batch]), axis=1)
        return out

    def probe(self, xq: np.ndarray, nprobe: int, batch: int = 4096, lead: int = PROBE_LEAD) -> np.ndarray:
        """The ``nprobe`` nearest lists of each query, int64 (nq, nprobe): the ``lead`` nearest first,
        nearest first, then the rest in ascending list order (see :func:`~vqsearch.kernels.ivf.select_lists`;
        the graph probe returns all of them nearest first)."""
        nprobe = min(nprobe, self.nlist)
        if self._use_graph:
            with self._graph_lock:
                if self._graph is None:
                    self._graph = self._build_graph()
                self._graph.set_ef(max(2 * nprobe, 64))
                labels, _ = self._graph.knn_query(xq, k=nprobe, num_threads=parallel.active_threads())
            return labels.astype(np.int64)
        out = np.empty((xq.shape[0], nprobe), dtype=np.int64)
        for s in range(0, xq.shape[0], batch):
            scores = np.ascontiguousarray(
                parallel.matmul_split(xq[s:s + batch], self.centroids.T, parallel.active_threads()), dtype=np.float32)
            select = select_lists if parallel.queries_parallel(scores.shape[0]) else select_lists_serial
            out[s:s + batch] = select(scores, self._probe_bias, nprobe, lead)
        return out

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.save(buf, self.centroids, allow_pickle=False)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes, metric: str, cfg: IVFConfig) -> CoarseQuantizer:
        try:
            c = np.load(io.BytesIO(blob), allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise CorruptData(f"IVF centroids are unreadable: {exc}") from None
        if c.ndim != 2 or c.shape[0] != cfg.nlist or not np.isfinite(c).all():
            raise CorruptData(f"IVF centroids have shape {c.shape}, expected ({cfg.nlist}, d), finite")
        return cls(c, metric, cfg)
