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
* :mod:`.trained_state` — the trained state as one portable blob, and rows encoded with it elsewhere;
* :mod:`.searcher` — one search over a pinned snapshot (scan, filtered exact search, rescoring);
* :mod:`.scanners` — the first-stage scan of each quantiser family;
* :mod:`.selection` and :mod:`.rowref` — top-k of candidates and the packed row references;
* :mod:`.results` — the padding contract of search answers and :class:`SearchResult` (hits with metadata);
* :mod:`.ivf` — the coarse quantiser; :mod:`.protocols` — what the index needs from storage.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .. import parallel
from .._validation import as_float_matrix, as_ids
from ..errors import Conflict, EmptyInput, InvalidInput
from ..quantizers import Quantizer
from .codecs import Codecs, fit_codecs, store_layout
from .config import DEFAULT_OVERSAMPLE, DEFAULT_RESCORE, DEFAULT_SCAN, PRESETS, UNSET, IndexConfig, check_target_recall
from .ivf import IVFConfig
from .metric import Metric, MetricLike, get_metric
from .progress import describe_stage, write_progress_bar
from .protocols import SnapshotLike, StoreLike
from .results import SearchResult, padded
from .searcher import Searcher, SegmentCache
from .trained_state import EncodedVectors, adopt_state, pack_state, state_id
from .tuning import TUNING_BLOBS, RecallTuning, RecallWarning

__all__ = ["DEFAULT_OVERSAMPLE", "DEFAULT_RESCORE", "DEFAULT_SCAN", "PRESETS", "Index", "IndexConfig", "RecallWarning",
           "SearchResult"]

class Index:
    """A quantised vector index; use :meth:`create` or :meth:`open`, not the constructor."""

    def __init__(self, store: StoreLike, *, tmpdir: str | None = None) -> None:
        self._store = store
        self._config = IndexConfig.from_json(store.config)
        self._tmpdir = tmpdir
        if tmpdir is not None:
            weakref.finalize(self, shutil.rmtree, tmpdir, True)
        self._codecs: Codecs | None = None
        self._state_id: str | None = None  # cached hash of trained_state(); reset whenever _codecs changes
        self._segments = SegmentCache()
        self._next_id: int | None = None
        self._closed = False
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
        from ..storage import Store

        cfg = IndexConfig.from_arguments(dim=dim, metric=metric, preset=preset, scan=scan, rescore=rescore,
                                         ivf=ivf, oversample=oversample, residual=residual,
                                         target_recall=target_recall)
        layout = store_layout(cfg)  # validates the specs now, so that a typo fails at create time, not at add
        tmpdir = None
        if path is None:
            tmpdir = tempfile.mkdtemp(prefix="vqsearch-")
            path = Path(tmpdir) / "index"
        store = Store.create(path, layout)
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
        """Release the writer lock and file handles.  Every later call on this object raises ``Conflict``."""
        self._closed = True
        self._store.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def _snapshot(self) -> SnapshotLike:
        """The current version, pinned; raises ``Conflict`` once the index is closed (reads and writes alike)."""
        if self._closed:
            raise Conflict("the index is closed; open it again with vqsearch.Index.open")
        return self._store.snapshot()

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
        return int(self._snapshot().num_rows)

    def __repr__(self) -> str:
        c = self._config
        if self._closed:
            return f"<vqsearch.Index {self.path} closed>"
        return (f"<vqsearch.Index {self.path} n={len(self)} dim={c.dim} metric={c.metric} scan={c.scan!r} "
                f"rescore={c.rescore!r} ivf={None if c.ivf is None else c.ivf.nlist}>")

    @property
    def _metric(self) -> Metric:
        return get_metric(self._config.metric)

    # ------------------------------------------------------------ training
    def _set_codecs(self, codecs: Codecs | None) -> None:
        self._codecs = codecs
        self._state_id = None

    def _load_trained(self) -> None:
        blobs = self._store.blobs
        if "scan" in blobs:
            self._set_codecs(Codecs.from_blobs(blobs, self._config))

    def train(self, x: np.ndarray) -> Index:
        """Fit the scan/rescore quantisers (and IVF centroids) on a sample; the first ``add`` does it if needed."""
        self._snapshot()  # closed: raise
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

    def trained_state(self) -> bytes:
        """The trained state (resolved settings + fitted quantiser and IVF states) as one portable blob, for
        :meth:`load_trained_state` on other indexes: "train once, encode everywhere"."""
        self._snapshot()  # closed: raise
        if not self.is_trained:
            raise InvalidInput("the index is not trained yet; call train() or add() first")
        blobs = {name: blob for name, blob in self._store.blobs.items() if name not in TUNING_BLOBS}
        return pack_state(self._config.to_json(), blobs)

    @property
    def state_id(self) -> str | None:
        """Content hash of :meth:`trained_state` (``None`` before training); equal ids score identically."""
        if self._state_id is None and self.is_trained:
            self._state_id = state_id(self.trained_state())
        return self._state_id

    def load_trained_state(self, state: bytes) -> Index:
        """Give this empty, untrained index the state of another (:meth:`trained_state`) instead of training.

        The state must come from an index created with the same ``dim``, ``metric``, ``scan``, ``rescore``,
        ``residual`` and IVF-or-not; its resolved IVF lists and default ``oversample`` are adopted.
        """
        self._snapshot()  # closed: raise
        if self.is_trained:
            raise InvalidInput("index is already trained; quantisers are frozen once codes exist")
        cfg, blobs = adopt_state(state, self._config)
        codecs = Codecs.from_blobs(blobs, cfg)  # parses every blob before anything is committed
        self._store.set_config(config=cfg.to_json(), blobs=blobs)
        self._config = cfg
        self._set_codecs(codecs)
        return self

    # ------------------------------------------------------------ writes
    def encode(self, vectors: np.ndarray) -> EncodedVectors:
        """Encode vectors with this index's trained state without writing them; pass the result to ``add`` or
        ``upsert`` of any index with the same :attr:`state_id` (e.g. encode on many workers, commit on one)."""
        self._snapshot()  # closed: raise
        codecs = self._codecs
        if codecs is None:
            raise InvalidInput("the index is not trained yet; call train() or load_trained_state() first")
        x = self._metric.prepare(as_float_matrix(vectors, d=self.dim, name="vectors", allow_empty=False))
        with parallel.threads_for():
            columns, extra = codecs.encode_rows(x, self._metric)
        return EncodedVectors(self.state_id, columns, extra)

    def _write(self, vectors: np.ndarray | EncodedVectors, ids: object, metadata: Any, *, upsert: bool,
               progress: bool | None) -> np.ndarray:
        self._snapshot()  # closed: raise before any work
        encoded = vectors if isinstance(vectors, EncodedVectors) else None
        if encoded is not None:
            encoded.require_state(self.state_id)
            n = len(encoded)
        else:
            x = as_float_matrix(vectors, d=self.dim, name="vectors", allow_empty=False)
            n = x.shape[0]
        if ids is None:
            if upsert:
                raise InvalidInput("upsert needs explicit ids")
            start = self._peek_next_id()
            ids_arr = np.arange(start, start + n, dtype=np.uint64)
        else:
            ids_arr = as_ids(ids, n)
        if np.unique(ids_arr).shape[0] != n:
            raise InvalidInput("duplicate ids in one batch")
        blobs = new_cfg = None
        old_cfg = self._config
        tuning = self._tuning  # pre-encoded rows bring no floats: the calibration lists cannot see them
        bar = None
        if encoded is not None:
            columns, extra = encoded.columns, encoded.extra
        else:
            x = self._metric.prepare(x)
            bar = write_progress_bar(n, progress)
        try:
            if encoded is None:
                with parallel.threads_for():
                    if not self.is_trained:  # train on this batch; the states are committed with its rows
                        describe_stage(bar, "training")
                        blobs, new_cfg = fit_codecs(x, self._config)
                        self._config = new_cfg
                        self._set_codecs(Codecs.from_blobs(blobs, new_cfg))
                    describe_stage(bar, "encoding")
                    columns, extra = self._codecs.encode_rows(x, self._metric, bar)
                    tuning = self._tuning.after_write(x, ids_arr, self._metric)
            write_blobs = blobs
            tuning_blobs = tuning.blobs()
            if blobs is not None or any(self._store.blobs.get(name) != b for name, b in tuning_blobs.items()):
                write_blobs = {**(self._store.blobs if blobs is None else blobs), **tuning_blobs}
            describe_stage(bar, "writing")
            self._store.write(ids_arr, columns, vectors=None, metadata=metadata, extra=extra or None,
                              upsert=upsert, blobs=write_blobs,
                              config=None if new_cfg is None else new_cfg.to_json())
        except Exception:
            if new_cfg is not None:  # trained here and nothing was committed: forget the trained state
                self._set_codecs(None)
                self._config = old_cfg
            raise
        finally:
            if bar is not None:
                bar.close()
        self._next_id = max(self._next_id or 0, int(ids_arr.max()) + 1)
        self._set_tuning(tuning)
        self._calibrate()
        return ids_arr

    @property
    def next_id(self) -> int:
        """The first id :meth:`add` assigns when ``ids`` is None (one above every id written so far)."""
        self._snapshot()
        return self._peek_next_id()

    def _peek_next_id(self) -> int:
        if self._next_id is None:
            top = -1
            for seg in self._snapshot().segments:
                if seg.num_rows:
                    top = max(top, int(np.max(seg.ids)))
            self._next_id = top + 1
        return self._next_id

    def add(self, vectors: np.ndarray | EncodedVectors, ids: object = None, metadata: Any = None, *,
            progress: bool | None = None) -> np.ndarray:
        """Add vectors (float (n, dim), or :class:`EncodedVectors` from :meth:`encode`); returns their uint64 ids
        (new ids are assigned when ``ids`` is None).

        Adding an id that already exists raises; use :meth:`upsert` to replace.  The first add trains the
        quantisers on (a sample of) its vectors unless :meth:`train` was called.  ``metadata`` may carry
        any subset of the existing columns plus new ones (see :meth:`update_metadata`).

        ``progress``: ``None`` (default) shows a tqdm bar (training, encoding, writing) only when the call
        runs longer than :data:`~vqsearch.index.progress.PROGRESS_DELAY` seconds, ``True`` always, ``False`` never.
        """
        return self._write(vectors, ids, metadata, upsert=False, progress=progress)

    def upsert(self, vectors: np.ndarray | EncodedVectors, ids: object, metadata: Any = None, *,
               progress: bool | None = None) -> np.ndarray:
        """Insert or replace vectors by id (the newest write wins); ``progress`` as in :meth:`add`."""
        return self._write(vectors, ids, metadata, upsert=True, progress=progress)

    def update_metadata(self, ids: object, values: Mapping[str, Any] | Any) -> None:
        """Set metadata columns of existing points without re-encoding their vectors; one atomic commit.

        ``values`` is ``{column: values}`` (one value per id), a pyarrow Table or a pandas DataFrame.
        Columns not named keep their values; a new column is added to the schema (other rows read it as
        null); ``None`` sets nulls.  Raises ``UnknownIds`` (changing nothing) if an id is not present.
        """
        self._snapshot()
        arr = as_ids(ids)
        if arr.size == 0:
            raise EmptyInput("no ids to update")
        self._store.update_metadata(arr, values)

    def delete(self, ids: object) -> None:
        """Delete ids; raises ``UnknownIds`` (changing nothing) if any id is not in the index."""
        self._snapshot()
        arr = as_ids(ids)
        if arr.size == 0:
            raise EmptyInput("no ids to delete")
        self._store.delete(arr)

    def compact(self) -> None:
        """Merge small segments and drop deleted rows now (also done automatically)."""
        self._snapshot()
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
        """Retained versions, oldest first: ``VersionInfo(version, timestamp, rows)`` (timestamp in epoch s)."""
        self._snapshot()
        return self._store.versions()

    @property
    def version(self) -> int:
        """The current version number (each committed write makes a new one)."""
        return int(self._snapshot().version)

    def count(self, filter: dict | None = None) -> int:
        """Exact number of points matching ``filter`` (all points for ``None``), from one pinned snapshot."""
        return int(self._snapshot().count(filter))

    def scroll(self, filter: dict | None = None, after: int | None = None, limit: int = 1000,
               columns: Sequence[str] | None = None) -> Any:
        """One page of the points matching ``filter``, ascending by id, with ids greater than ``after``.

        Returns a ``ScrollPage``: ``ids`` (uint64), ``metadata`` (a pyarrow Table of ``columns``, all by
        default, ``[]`` for none) and ``next_after``, the ``after`` of the next page (``None`` at the end)::

            page = idx.scroll(limit=1000)
            while page.next_after is not None:
                page = idx.scroll(after=page.next_after, limit=1000)

        ``limit`` is 1 to 100,000; one call costs O(limit × segments) memory.
        """
        return self._snapshot().scroll(filter, after, limit, columns)

    def stats(self) -> dict[str, Any]:
        """Counts, sizes and settings: ``count``, ``bytes_per_vector`` (codes the search touches),
        ``scan_kernel`` (the first-stage kernel on this CPU, ``None`` until trained), ..."""
        self._snapshot()
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
        include: Sequence[str] | None = None,
        target_recall: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray] | SearchResult:
        """k nearest neighbours of each query → ``(distances, ids)``, each (nq, k), best first.

        ``distances`` are similarities (higher is better) for ``cosine``/``ip`` and squared distances
        (lower is better) for ``l2``.  Missing results (``k`` above the number of points, an empty index,
        a filter that keeps fewer than k rows) have id ``-1`` and distance ``-inf`` (similarity) /
        ``+inf`` (l2), as FAISS pads (:mod:`vqsearch.index.results`).

        Parameters
        ----------
        k:
            Results per query (≥ 1).
        filter:
            Metadata predicate, e.g. ``{"section": "python"}`` or ``{"year": {"gte": 2020}}``.
        oversample:
            Scan candidates kept per result for rescoring (default: chosen for the index's ``target_recall``,
            else its ``oversample``; ``stats()["search_defaults"]``); higher = better recall, slower.
        nprobe:
            IVF lists scanned per query (default: chosen for the index's ``target_recall``, else ``ivf.nprobe``).
        include:
            Metadata columns to return with the hits (``[]``: none, but still a result object).  Then the
            answer is a :class:`SearchResult` with ``.distances``, ``.ids`` and ``.metadata`` (a pyarrow
            Table, nq × k rows in hit order, null rows for padding) read from the same snapshot as the hits.
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
        if include is not None and (isinstance(include, str) or not all(isinstance(c, str) for c in include)):
            raise InvalidInput(f"include must be a list of metadata column names, got {include!r}")
        snap = self._snapshot()
        codecs = self._codecs
        if include:
            snap.metadata(np.zeros(0, np.uint64), list(include))  # unknown columns raise before the search
        n = int(snap.num_rows)
        k = int(k)
        if n == 0 or codecs is None:
            if filter is not None:
                snap.count(filter)  # a malformed filter raises on an empty index too
            dist, ids = padded(np.zeros((xq.shape[0], 0), np.float32), np.zeros((xq.shape[0], 0), np.int64), k,
                               self.metric)
        else:
            xq = self._metric.prepare(xq)
            searcher = Searcher(snap, codecs, self._config, self._segments)
            with parallel.single_threaded_blas(), parallel.threads_for(searcher.expected_work(xq.shape[0], nprobe)):
                dist, ids = searcher.search(xq, min(k, n), filter, int(oversample), nprobe)
            dist, ids = padded(dist, ids, k, self.metric)
        if include is None:
            return dist, ids
        return SearchResult(dist, ids, snap.metadata(ids.ravel(), list(include), missing="null"))

    # ------------------------------------------------------------ lookups by id
    def contains(self, ids: object) -> np.ndarray:
        """Bool mask (n,): which of ``ids`` are in the index (one pinned snapshot)."""
        return self._snapshot().contains(ids)

    def get_metadata(self, ids: object, columns: list[str] | None = None, *,
                     missing: Literal["raise", "null"] = "raise") -> Any:
        """Metadata rows of ``ids`` (a ``pyarrow.Table``, request order), read from one pinned snapshot.

        The id ``-1`` (the padding of search results) is always accepted and gives a null row, so
        ``idx.get_metadata(ids[0])`` works on any search answer.

        Parameters
        ----------
        columns:
            Metadata columns to return (``None`` = all; ``[]`` = none, the table then only has a row count).
            An unknown name raises ``InvalidInput`` listing the columns that exist.
        missing:
            ``"raise"`` (default): ids not in the index raise ``UnknownIds``.  ``"null"``: their rows are
            null, e.g. for search hits deleted between the search and this call.
        """
        from ..errors import UnknownIds
        from ..storage.ids import preview

        if missing not in ("raise", "null"):
            raise InvalidInput(f"missing must be 'raise' or 'null', got {missing!r}")
        snap = self._snapshot()
        arr = np.asarray(ids)
        if arr.dtype.kind == "i" and arr.size and int(arr.min()) < -1:
            raise InvalidInput(f"ids must be non-negative (or -1 for \"no row\"), got {int(arr.min())}")
        if missing == "raise" and arr.dtype.kind in "iu" and arr.ndim <= 1:
            real = arr.reshape(-1)
            real = real[real >= 0] if arr.dtype.kind == "i" else real
            found = snap.contains(real)
            if not found.all():
                bad = real[~found]
                raise UnknownIds(f"{bad.size} id(s) not found: {preview(bad)}")
        return snap.metadata(ids, columns, missing="null")

    def reconstruct(self, ids: object) -> np.ndarray:
        """Approximate vectors of ``ids`` decoded from the finest stored codes → float32 (n, dim).

        The index keeps codes, not the original floats, so this is ``decode(encode(x))`` of the rescore
        quantiser (the scan quantiser without one); for ``cosine`` it approximates the unit-norm vector.
        Raises ``UnknownIds`` for ids not in the index.
        """
        rows = self._snapshot().get(ids)
        if rows.ids.size == 0 or self._codecs is None:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = sum(q.decode(rows.columns[column]) for q, column in self._codecs.reconstruction_parts())
        return np.ascontiguousarray(out, dtype=np.float32)
