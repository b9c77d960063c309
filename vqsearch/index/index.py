"""``vqsearch.Index``: quantised vector search over Arrow segments.

Search is two-stage: a fast first-stage **scan** over compact codes (popcount /
lookup-table kernels) keeps up to ``k × oversample`` candidates per query, then a
**rescore** stage decodes finer codes of just those candidates and keeps the best
``k``.  Scan estimates with an error bound (RaBitQ for sign codes) skip candidates
that cannot reach the top ``k``.  With ``ivf`` set, vectors are grouped into k-means lists and a query scans
only its ``nprobe`` nearest lists.  Storage is a :class:`vqsearch.storage.Store`
(immutable Arrow segments + versioned manifests); the index composes quantisers,
the coarse quantiser and the store, and keeps no state that the store does not.

This module is the facade: lifecycle, writes and lookups.  The pieces live next to it:

* :mod:`.config` — :class:`IndexConfig`, the presets and defaults;
* :mod:`.metric` — everything that differs between ``cosine``, ``ip`` and ``l2``;
* :mod:`.codecs` — the fitted quantisers: training, loading, encoding rows;
* :mod:`.searcher` — one search over a pinned snapshot (scan, filtered exact search, rescoring);
* :mod:`.scanners` — the first-stage scan of each quantiser family;
* :mod:`.selection` and :mod:`.rowref` — top-k of candidates and the packed row references;
* :mod:`.ivf` — the coarse quantiser; :mod:`.protocols` — what the index needs from storage.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .. import parallel, quantizers
from .._validation import as_float_matrix
from ..errors import EmptyInput, InvalidInput
from ..quantizers import Quantizer
from .codecs import Codecs, fit_codecs
from .config import DEFAULT_OVERSAMPLE, DEFAULT_RESCORE, DEFAULT_SCAN, PRESETS, UNSET, IndexConfig, check_target_recall
from .ivf import IVFConfig
from .metric import Metric, MetricLike, get_metric
from .protocols import StoreLike
from .searcher import Searcher, SegmentCache
from .tuning import RecallTuning, RecallWarning

__all__ = ["DEFAULT_OVERSAMPLE", "DEFAULT_RESCORE", "DEFAULT_SCAN", "PRESETS", "Index", "IndexConfig",
           "RecallWarning"]


class Index:
    """A quantised vector index; use :meth:`create` or :meth:`open`, not the constructor."""

    def __init__(self, store: StoreLike, *, tmpdir: str | None = None) -> None:
        self._store = store
        self._config = IndexConfig.from_json(store.config)
        self._tmpdir = tmpdir
        if tmpdir is not None:
            weakref.finalize(self, shutil.rmtree, tmpdir, True)
        self._codecs: Codecs | None = None
        self._segments = SegmentCache()
        self._next_id: int | None = None
        self._load_trained()
        self._set_tuning(RecallTuning.from_blobs(store.blobs))

    # ------------------------------------------------------------ lifecycle
    @classmethod
    def create(
        cls,
        path: str | Path | None = None,
        *,
        dim: int,
        metric: MetricLike = "cosine",
        preset: str = "default",
        scan: str = UNSET,
        rescore: str | None = UNSET,
        ivf: IVFConfig | dict | str | None = UNSET,
        oversample: int = UNSET,
        residual: bool = UNSET,
        target_recall: float | None = UNSET,
    ) -> Index:
        """Create an empty index at ``path`` (a new directory; ``None`` = a temporary one).

        Parameters
        ----------
        dim:
            Vector dimension.
        metric:
            ``"cosine"`` (vectors and queries are L2-normalised; scores are cosines, higher is better),
            ``"ip"`` (raw inner product) or ``"l2"`` (squared Euclidean distance, lower is better).
        preset:
            Named defaults for the arguments below (:data:`~vqsearch.index.config.PRESETS`): ``"default"``,
            ``"compact"`` or ``"accurate"``.  Any argument given explicitly wins over the preset.
        scan:
            Quantiser spec of the first-stage codes (``"binary"``, ``"ternary"``, ``"pq:m=96,nbits=4"``, ...).
        rescore:
            Quantiser spec of the rescoring codes (``"sq8"``, ``"e8p:bits=4"``, ``"float16"``...) or ``None``
            to rank by the scan estimate alone.
        ivf:
            ``None`` for a flat scan, IVF options such as ``{"nlist": 1024, "nprobe": 256}``, or ``"auto"``
            (the list count follows the size of the first batch; a single list — a flat scan — below 100,000).
        oversample:
            Default candidates per result kept by the scan for rescoring (at most ``k × oversample``; a scan
            with an error bound keeps only those that can still reach the top ``k``).
        residual:
            Rescore codes encode the residual ``x − decode(scan code)`` and rescoring uses the sum of both
            reconstructions (two-stage residual quantisation).  The scan code is stored anyway, so this
            lowers the rescoring error at no extra bytes (benchmarks/RESULTS.md, section 6).
        target_recall:
            Recall@10 that the default search settings aim at (every preset: 0.95), or ``None`` to search
            with the configured ones.  The index measures its own recall curve on a calibration sample of the
            vectors it is given (:mod:`vqsearch.index.tuning`) and picks the cheapest ``oversample`` and IVF
            ``nprobe`` that meet the target with a margin, except those given explicitly here.  When its codes
            cannot reach the target it says so with a :class:`RecallWarning` naming the estimate and what
            would reach it; ``stats()`` reports ``estimated_recall`` and ``recall_warning``.
        """
        from ..storage import Store, StoreConfig

        cfg = IndexConfig.from_arguments(dim=dim, metric=metric, preset=preset, scan=scan, rescore=rescore,
                                         ivf=ivf, oversample=oversample, residual=residual,
                                         target_recall=target_recall)
        # Validate the specs now, so that a typo fails at create time and not at the first add.
        scan_q = quantizers.get(cfg.scan)
        rescore_q = quantizers.get(cfg.rescore) if cfg.rescore else None
        tmpdir = None
        if path is None:
            tmpdir = tempfile.mkdtemp(prefix="vqsearch-")
            path = Path(tmpdir) / "index"
        columns = {"scan": scan_q.code_size_for(cfg.dim)}
        codecs = {"scan": f"{scan_q.spec} codec {scan_q.codec_id} v{scan_q.format_version}"}
        if rescore_q is not None:
            columns["rescore"] = rescore_q.code_size_for(cfg.dim)
            codecs["rescore"] = f"{rescore_q.spec} codec {rescore_q.codec_id} v{rescore_q.format_version}"
        extra = {}
        if cfg.ivf is not None:
            extra["list"] = "int32"
        if get_metric(cfg.metric).uses_norms:
            extra["norm2"] = "float32"
        store = Store.create(path, StoreConfig(code_columns=columns, dim=cfg.dim, vector_dtype=None,
                                               config=cfg.to_json(), extra_columns=extra, codecs=codecs,
                                               cluster_by="list" if cfg.ivf is not None else None))
        return cls(store, tmpdir=tmpdir)

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        version: int | None = None,
        read_only: bool = False,
        on_corrupt: Literal["raise", "skip"] = "raise",
    ) -> Index:
        """Open an existing index (memory-mapped).  ``version`` opens an older manifest read-only."""
        from ..storage import Store

        store = Store.open(path, version=version, read_only=read_only or version is not None,
                           on_corrupt=on_corrupt)
        return cls(store)

    def close(self) -> None:
        """Release the writer lock and file handles."""
        self._store.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ properties
    @property
    def config(self) -> IndexConfig:
        return self._config

    @property
    def dim(self) -> int:
        return self._config.dim

    @property
    def metric(self) -> str:
        return self._config.metric

    @property
    def is_trained(self) -> bool:
        return self._codecs is not None

    @property
    def scan_quantizer(self) -> Quantizer | None:
        """The fitted quantiser of the scan codes (``None`` until the index is trained)."""
        return None if self._codecs is None else self._codecs.scan

    @property
    def rescore_quantizer(self) -> Quantizer | None:
        """The fitted quantiser of the rescoring codes (``None`` until trained, or without rescoring)."""
        return None if self._codecs is None else self._codecs.rescore

    @property
    def path(self) -> Path:
        return Path(self._store.path)

    def __len__(self) -> int:
        return int(self._store.snapshot().num_rows)

    def __repr__(self) -> str:
        c = self._config
        return (f"<vqsearch.Index {self.path} n={len(self)} dim={c.dim} metric={c.metric} scan={c.scan!r} "
                f"rescore={c.rescore!r} ivf={None if c.ivf is None else c.ivf.nlist}>")

    @property
    def _metric(self) -> Metric:
        return get_metric(self._config.metric)

    # ------------------------------------------------------------ training
    def _load_trained(self) -> None:
        blobs = self._store.blobs
        if "scan" in blobs:
            self._codecs = Codecs.from_blobs(blobs, self._config)

    def train(self, x: np.ndarray) -> Index:
        """Fit the scan/rescore quantisers (and IVF centroids) on a sample; the first ``add`` does it if needed."""
        if self.is_trained:
            raise InvalidInput("index is already trained; quantisers are frozen once codes exist")
        x = self._metric.prepare(as_float_matrix(x, d=self.dim, name="training vectors", allow_empty=False))
        with parallel.threads_for():
            blobs, cfg = fit_codecs(x, self._config)
        tuning = self._tuning.with_training_sample(x)
        self._store.set_config(config=cfg.to_json(), blobs={**blobs, **tuning.blobs()})
        self._config = cfg
        self._load_trained()
        self._set_tuning(tuning)
        return self

    # ------------------------------------------------------------ writes
    def _ids_array(self, ids: object, n: int | None = None) -> np.ndarray:
        arr = np.asarray(ids)
        if arr.ndim == 0:
            arr = arr.reshape(1)
        if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
            raise InvalidInput(f"ids must be a 1-D array of non-negative integers, got shape {arr.shape} "
                               f"dtype {arr.dtype}")
        if arr.size and arr.dtype.kind == "i" and arr.min() < 0:
            raise InvalidInput("ids must be non-negative")
        if n is not None and arr.shape[0] != n:
            raise InvalidInput(f"got {arr.shape[0]} ids for {n} vectors")
        return arr.astype(np.uint64)

    def _write(self, vectors: np.ndarray, ids: object, metadata: Any, *, upsert: bool) -> np.ndarray:
        x = as_float_matrix(vectors, d=self.dim, name="vectors", allow_empty=False)
        n = x.shape[0]
        if ids is None:
            if upsert:
                raise InvalidInput("upsert needs explicit ids")
            start = self._peek_next_id()
            ids_arr = np.arange(start, start + n, dtype=np.uint64)
        else:
            ids_arr = self._ids_array(ids, n)
        if np.unique(ids_arr).shape[0] != n:
            raise InvalidInput("duplicate ids in one batch")
        x = self._metric.prepare(x)
        with parallel.threads_for():
            blobs = new_cfg = None
            old_cfg = self._config
            if not self.is_trained:  # train on this batch; the states are committed with its rows
                blobs, new_cfg = fit_codecs(x, self._config)
                self._config = new_cfg
                self._codecs = Codecs.from_blobs(blobs, new_cfg)
            columns, extra = self._codecs.encode_rows(x, self._metric)
            tuning = self._tuning.after_write(x, ids_arr, self._metric)
        tuning_blobs = tuning.blobs()
        if blobs is not None or any(self._store.blobs.get(name) != b for name, b in tuning_blobs.items()):
            blobs = {**(self._store.blobs if blobs is None else blobs), **tuning_blobs}
        try:
            self._store.write(ids_arr, columns, vectors=None, metadata=metadata, extra=extra or None,
                              upsert=upsert, blobs=blobs, config=None if new_cfg is None else new_cfg.to_json())
        except Exception:
            if blobs is not None:  # nothing was committed: forget the trained state
                self._codecs = None
                self._config = old_cfg
            raise
        self._next_id = max(self._next_id or 0, int(ids_arr.max()) + 1)
        self._set_tuning(tuning)
        self._calibrate()
        return ids_arr

    def _peek_next_id(self) -> int:
        if self._next_id is None:
            top = -1
            for seg in self._store.snapshot().segments:
                if seg.num_rows:
                    top = max(top, int(np.max(seg.ids)))
            self._next_id = top + 1
        return self._next_id

    def add(self, vectors: np.ndarray, ids: object = None, metadata: Any = None) -> np.ndarray:
        """Add vectors (float (n, dim)); returns their uint64 ids (new ids are assigned when ``ids`` is None).

        Adding an id that already exists raises; use :meth:`upsert` to replace.  The first add trains the
        quantisers on (a sample of) its vectors unless :meth:`train` was called.
        """
        return self._write(vectors, ids, metadata, upsert=False)

    def upsert(self, vectors: np.ndarray, ids: object, metadata: Any = None) -> np.ndarray:
        """Insert or replace vectors by id (the newest write wins)."""
        return self._write(vectors, ids, metadata, upsert=True)

    def delete(self, ids: object) -> None:
        """Delete ids; raises ``UnknownIds`` (changing nothing) if any id is not in the index."""
        arr = self._ids_array(ids)
        if arr.size == 0:
            raise EmptyInput("no ids to delete")
        self._store.delete(arr)

    def compact(self) -> None:
        """Merge small segments and drop deleted rows now (also done automatically)."""
        self._store.compact()
        self._segments.clear()
        self._calibrate(force=True)

    # ------------------------------------------------------------ self-calibration (see .tuning)
    def _set_tuning(self, tuning: RecallTuning) -> None:
        self._tuning = tuning
        self._search_defaults = tuning.defaults(self._config)

    def _calibrate(self, force: bool = False) -> None:
        """Measure the recall curve when due (the index doubled or halved since the last time, or ``force``),
        store it, and warn when the target is out of reach."""
        n = len(self)
        if self._codecs is None or not (force or self._tuning.measure_due(n)):
            return

        def candidate_ids(xq: np.ndarray, k: int, oversample: int, nprobe: int | None) -> np.ndarray:
            searcher = Searcher(self._store.snapshot(), self._codecs, self._config, self._segments)
            with parallel.single_threaded_blas(), parallel.threads_for(searcher.expected_work(xq.shape[0], nprobe)):
                return searcher.candidate_ids(xq, k, k * oversample, nprobe)

        tuning = self._tuning.measured(
            self._config, lambda xq, k, o, p: self.search(xq, k, oversample=o, nprobe=p)[1], candidate_ids,
            lambda ids: np.asarray(self._store.snapshot().contains(ids)), n)
        if tuning is self._tuning:
            return
        self._store.set_config(blobs={**self._store.blobs, **tuning.blobs()})
        self._set_tuning(tuning)
        RecallTuning.warn(self._search_defaults, stacklevel=4)

    def versions(self) -> list:
        return self._store.versions()

    def stats(self) -> dict[str, Any]:
        """Counts, sizes and settings: ``count``, ``bytes_per_vector`` (codes the search touches),
        ``scan_kernel`` (the first-stage kernel on this CPU, ``None`` until trained), ..."""
        s = dict(self._store.stats())
        c = self._config
        codecs = self._codecs
        s.update({"count": len(self), "dim": c.dim, "metric": c.metric, "scan": c.scan, "rescore": c.rescore,
                  "ivf": None if c.ivf is None else dict(c.ivf.__dict__), "trained": self.is_trained,
                  "bytes_per_vector": 0 if codecs is None else codecs.bytes_per_vector(self._metric),
                  "scan_kernel": None if codecs is None else codecs.scanner.kernel})
        s.update(self._tuning.stats(self._config))
        return s

    # ------------------------------------------------------------ search
    def search(
        self,
        queries: np.ndarray,
        k: int = 10,
        filter: dict | None = None,
        oversample: int | None = None,
        nprobe: int | None = None,
        target_recall: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """k nearest neighbours of each query → ``(distances, ids)``, each (nq, k), best first.

        ``distances`` are similarities (higher is better) for ``cosine``/``ip`` and squared distances
        (lower is better) for ``l2``.  Missing results (a filter that keeps fewer than k rows) have
        id ``-1`` and distance ``-inf`` (similarity) / ``+inf`` (l2).

        Parameters
        ----------
        k:
            Results per query, 1 ≤ k ≤ number of vectors.
        filter:
            Metadata predicate, e.g. ``{"section": "python"}`` or ``{"year": {"gte": 2020}}``.
        oversample:
            Scan candidates kept per result for rescoring (default: chosen for the index's ``target_recall``,
            else its ``oversample``; ``stats()["search_defaults"]``); higher = better recall, slower.
        nprobe:
            IVF lists scanned per query (default: chosen for the index's ``target_recall``, else ``ivf.nprobe``).
        target_recall:
            Recall@10 this search should reach: ``oversample`` and ``nprobe`` not given are chosen from the
            index's measured recall curve (see :meth:`create`); a :class:`RecallWarning` says when the
            target is out of reach.
        """
        xq = as_float_matrix(queries, d=self.dim, name="queries", allow_empty=False)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InvalidInput(f"k must be a positive integer, got {k!r}")
        if target_recall is not None:
            choice = self._tuning.settings(self._config, check_target_recall(target_recall), oversample, nprobe)
            RecallTuning.warn(choice)
            oversample, nprobe = choice.oversample, choice.nprobe
        defaults = self._search_defaults
        oversample = defaults.oversample if oversample is None else oversample
        nprobe = defaults.nprobe if nprobe is None else nprobe
        if isinstance(oversample, bool) or not isinstance(oversample, (int, np.integer)) or oversample < 1:
            raise InvalidInput(f"oversample must be a positive integer, got {oversample!r}")
        if nprobe is not None and (isinstance(nprobe, bool) or not isinstance(nprobe, (int, np.integer))
                                   or nprobe < 1):
            raise InvalidInput(f"nprobe must be a positive integer, got {nprobe!r}")
        snap = self._store.snapshot()
        n = int(snap.num_rows)
        codecs = self._codecs
        if n == 0 or codecs is None:
            raise EmptyInput("the index is empty")
        if k > n:
            raise InvalidInput(f"k={k} exceeds the number of vectors in the index ({n})")
        xq = self._metric.prepare(xq)
        searcher = Searcher(snap, codecs, self._config, self._segments)
        with parallel.single_threaded_blas(), parallel.threads_for(searcher.expected_work(xq.shape[0], nprobe)):
            return searcher.search(xq, k, filter, int(oversample), nprobe)

    # ------------------------------------------------------------ lookups by id
    def get_metadata(self, ids: object, columns: list[str] | None = None, *,
                     missing: Literal["raise", "null"] = "raise") -> Any:
        """Metadata rows of ``ids`` (a ``pyarrow.Table``, request order), read from one pinned snapshot.

        Parameters
        ----------
        columns:
            Metadata columns to return (``None`` = all; ``[]`` = none, the table then only has a row count).
            An unknown name raises ``InvalidInput`` listing the columns that exist.
        missing:
            ``"raise"`` (default): ids not in the index raise ``UnknownIds``.  ``"null"``: their rows are
            null, e.g. for search hits deleted between the search and this call.
        """
        import pyarrow as pa

        from ..errors import UnknownIds
        from ..storage.snapshot import as_id_array

        if missing not in ("raise", "null"):
            raise InvalidInput(f"missing must be 'raise' or 'null', got {missing!r}")
        q = as_id_array(ids)
        snap = self._store.snapshot()
        names = [] if snap.metadata_schema is None else list(snap.metadata_schema.names)
        cols = names if columns is None else list(columns)
        unknown = [c for c in cols if c not in names]
        if unknown:
            raise InvalidInput(f"unknown metadata column(s) {unknown}; this index has {names}")
        found = snap.contains(q)
        if missing == "raise" and not found.all():
            bad = q[~found]
            shown = ", ".join(str(int(i)) for i in bad[:10])
            raise UnknownIds(f"{bad.size} id(s) not found: [{shown}{', ...' if bad.size > 10 else ''}]")
        if not cols:
            return pa.table({"_": pa.nulls(q.shape[0])}).select([])
        table = snap.get(q[found]).metadata.select(cols)
        if not found.all():
            pos = np.cumsum(found) - 1
            table = table.take(pa.array(pos, mask=~found))
        return table

    def reconstruct(self, ids: object) -> np.ndarray:
        """Approximate vectors of ``ids`` decoded from the finest stored codes → float32 (n, dim).

        The index keeps codes, not the original floats, so this is ``decode(encode(x))`` of the rescore
        quantiser (the scan quantiser without one); for ``cosine`` it approximates the unit-norm vector.
        Raises ``UnknownIds`` for ids not in the index.
        """
        rows = self._store.snapshot().get(ids)
        if rows.ids.size == 0 or self._codecs is None:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = sum(q.decode(rows.columns[column]) for q, column in self._codecs.reconstruction_parts())
        return np.ascontiguousarray(out, dtype=np.float32)
