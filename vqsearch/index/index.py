"""``vqsearch.Index``: quantised vector search over Arrow segments.

Search is two-stage: a fast first-stage **scan** over compact codes (popcount /
lookup-table kernels) keeps up to ``k × oversample`` candidates per query, then a
**rescore** stage decodes finer codes of just those candidates and keeps the best
``k``.  Scan estimates with an error bound (RaBitQ for sign codes) skip candidates
that cannot reach the top ``k``.  With ``ivf`` set, vectors are grouped into k-means lists and a query scans
only its ``nprobe`` nearest lists.  Storage is a :class:`vqsearch.storage.Store`
(immutable Arrow segments + versioned manifests); the index composes quantisers,
the coarse quantiser and the store, and keeps no state that the store does not.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import tempfile
import weakref
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .. import quantizers
from .._blas import single_threaded_blas
from .._validation import as_float_matrix
from ..errors import EmptyInput, InvalidInput
from ..quantizers.base import Quantizer
from .ivf import CoarseQuantizer, IVFConfig
from .scanners import Scanner, scanner_for
from .trained_state import EncodedVectors, pack_state, state_id, unpack_state

LOG = logging.getLogger(__name__)

MetricLike = Literal["cosine", "ip", "l2"]
METRICS = ("cosine", "ip", "l2")
FORMAT_VERSION = 1

#: Named settings for :meth:`Index.create`, chosen from ``benchmarks/search.py`` on the shared
#: Debian-MiniLM set (numbers in benchmarks/RESULTS.md).  Explicit arguments override a preset.
PRESETS: dict[str, dict[str, Any]] = {
    # 248 bytes/vector: sign bits (RaBitQ) scan, residual 4-bit trellis (QTIP) rescoring; recall@10 ≥ 0.95.
    "default": {"scan": "binary", "rescore": "trellis:bits=4,L=12,rht=true", "ivf": "auto", "oversample": 12,
                "residual": True},
    # ~140 bytes/vector: residual 1.75-bit E8 lattice codes; keeps label@10 within ~0.01 of exact search.
    "compact": {"scan": "binary", "rescore": "e8:bits=1.75,rht=true,scale=vector", "ivf": "auto",
                "oversample": 10, "residual": True},
    # ~824 bytes/vector: float16 rescoring, recall@10 ≈ 0.99.
    "accurate": {"scan": "binary", "rescore": "float16", "ivf": "auto", "oversample": 10, "residual": False},
}
DEFAULT_SCAN = PRESETS["default"]["scan"]
DEFAULT_RESCORE = PRESETS["default"]["rescore"]
DEFAULT_OVERSAMPLE = PRESETS["default"]["oversample"]
_UNSET: Any = object()
#: Rows are encoded and written in chunks of this many vectors.
WRITE_CHUNK = 65_536
#: A filter that keeps at most this many rows is answered by rescoring exactly those rows (one matrix
#: product per segment); above it the scan runs with the filter as a row mask.
FILTER_EXACT_MAX = 4096
#: At most this many vectors train the quantisers.
TRAIN_MAX = 100_000

_SEG_SHIFT = 40
_ROW_MASK = (1 << _SEG_SHIFT) - 1
_EMPTY_BOOL = np.zeros(0, dtype=np.bool_)


def _normalize_metric(metric: str) -> str:
    m = str(metric).lower()
    if m not in METRICS:
        raise InvalidInput(f"metric must be one of {list(METRICS)}, got {metric!r}")
    return m


@dataclass(frozen=True)
class IndexConfig:
    """Persistent settings of an index (stored in every manifest)."""

    dim: int
    metric: str = "cosine"
    scan: str = DEFAULT_SCAN
    rescore: str | None = DEFAULT_RESCORE
    ivf: IVFConfig | None = None
    oversample: int = DEFAULT_OVERSAMPLE
    residual: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT_VERSION, "dim": self.dim, "metric": self.metric, "scan": self.scan,
                "rescore": self.rescore, "oversample": self.oversample, "residual": self.residual,
                "ivf": None if self.ivf is None else dict(self.ivf.__dict__)}

    @classmethod
    def from_json(cls, cfg: dict[str, Any]) -> IndexConfig:
        if int(cfg.get("format", 0)) > FORMAT_VERSION:
            raise InvalidInput(f"index format {cfg.get('format')} is newer than this vqsearch supports")
        return cls(dim=int(cfg["dim"]), metric=cfg["metric"], scan=cfg["scan"], rescore=cfg["rescore"],
                   ivf=IVFConfig.from_any(cfg.get("ivf")), oversample=int(cfg.get("oversample", 10)),
                   residual=bool(cfg.get("residual", False)))


class _SegmentCache:
    """Per-segment derived data that depends only on the immutable segment file (and the index's metric:
    for ``l2`` the scan's row terms already hold the ranking 2⟨q,x⟩ − ‖x‖²)."""

    __slots__ = ("row_a", "row_b", "offsets", "norm2", "scan_data")

    def __init__(self) -> None:
        self.row_a = self.row_b = self.offsets = self.norm2 = self.scan_data = None


class Index:
    """A quantised vector index; use :meth:`create` or :meth:`open`, not the constructor."""

    def __init__(self, store: Any, *, tmpdir: str | None = None) -> None:
        self._store = store
        self._config = IndexConfig.from_json(store.config)
        self._tmpdir = tmpdir
        if tmpdir is not None:
            weakref.finalize(self, shutil.rmtree, tmpdir, True)
        self._scan_q: Quantizer | None = None
        self._rescore_q: Quantizer | None = None
        self._ivf: CoarseQuantizer | None = None
        self._scanner: Scanner | None = None
        self._seg_cache: dict[str, _SegmentCache] = {}
        self._next_id: int | None = None
        self._state_id: str | None = None
        self._load_trained()

    # ------------------------------------------------------------ lifecycle
    @classmethod
    def create(
        cls,
        path: str | Path | None = None,
        *,
        dim: int,
        metric: MetricLike = "cosine",
        preset: str = "default",
        scan: str = _UNSET,
        rescore: str | None = _UNSET,
        ivf: IVFConfig | dict | str | None = _UNSET,
        oversample: int = _UNSET,
        residual: bool = _UNSET,
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
            Named defaults for the arguments below (:data:`PRESETS`): ``"default"``, ``"compact"`` or
            ``"accurate"``.  Any argument given explicitly wins over the preset.
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
            lowers the rescoring error at no extra bytes (2.5–2.7× lower for binary + 4-bit codes on MiniLM).
        """
        from ..storage import Store, StoreConfig

        if not isinstance(dim, (int, np.integer)) or dim < 1:
            raise InvalidInput(f"dim must be a positive integer, got {dim!r}")
        if preset not in PRESETS:
            raise InvalidInput(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
        given = {"scan": scan, "rescore": rescore, "ivf": ivf, "oversample": oversample, "residual": residual}
        chosen = {k: (PRESETS[preset][k] if v is _UNSET else v) for k, v in given.items()}
        scan, rescore, ivf, oversample, residual = (chosen[k] for k in given)
        cfg = IndexConfig(dim=int(dim), metric=_normalize_metric(metric), scan=scan, rescore=rescore,
                          ivf=IVFConfig.from_any(ivf), oversample=int(oversample),
                          residual=bool(residual) and rescore is not None)
        if cfg.oversample < 1:
            raise InvalidInput(f"oversample must be >= 1, got {oversample}")
        # Validate the specs now, so that a typo fails at create time and not at the first add.
        scan_q = quantizers.get(scan)
        rescore_q = quantizers.get(rescore) if rescore else None
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
        if cfg.metric == "l2":
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
        return self._scan_q is not None

    @property
    def path(self) -> Path:
        return Path(self._store.path)

    def __len__(self) -> int:
        return int(self._store.snapshot().num_rows)

    def __repr__(self) -> str:
        c = self._config
        return (f"<vqsearch.Index {self.path} n={len(self)} dim={c.dim} metric={c.metric} scan={c.scan!r} "
                f"rescore={c.rescore!r} ivf={None if c.ivf is None else c.ivf.nlist}>")

    # ------------------------------------------------------------ training
    def _load_trained(self) -> None:
        blobs = self._store.blobs
        if "scan" in blobs:
            self._apply_blobs(blobs)

    def _apply_blobs(self, blobs: dict[str, bytes]) -> None:
        self._state_id = None
        self._scan_q = quantizers.from_bytes(blobs["scan"])
        self._rescore_q = quantizers.from_bytes(blobs["rescore"]) if "rescore" in blobs else None
        if self._config.ivf is not None:
            self._ivf = CoarseQuantizer.from_bytes(blobs["ivf"], self._config.metric, self._config.ivf)
        self._scanner = scanner_for(self._scan_q)

    def _prepare(self, x: np.ndarray) -> np.ndarray:
        """Metric preprocessing of vectors and queries: cosine → unit norm (zero vectors stay zero)."""
        if self._config.metric == "cosine":  # norms in float64: float32 squares overflow above ~1e19
            norms = np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
            x = (x / np.where(norms > 0, norms, 1)).astype(np.float32)
        return np.ascontiguousarray(x, dtype=np.float32)

    def train(self, x: np.ndarray) -> Index:
        """Fit the scan/rescore quantisers (and IVF centroids) on a sample; the first ``add`` does it if needed."""
        if self.is_trained:
            raise InvalidInput("index is already trained; quantisers are frozen once codes exist")
        x = self._prepare(as_float_matrix(x, d=self.dim, name="training vectors", allow_empty=False))
        blobs, cfg = self._fit(x)
        self._store.set_config(config=cfg.to_json(), blobs=blobs)
        self._config = cfg
        self._load_trained()
        return self

    def trained_state(self) -> bytes:
        """The trained state (resolved settings + fitted quantiser and IVF states) as one portable blob, for
        :meth:`load_trained_state` on other indexes: "train once, encode everywhere"."""
        if not self.is_trained:
            raise InvalidInput("the index is not trained yet; call train() or add() first")
        return pack_state(self._config.to_json(), dict(self._store.blobs))

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
        if self.is_trained:
            raise InvalidInput("index is already trained; quantisers are frozen once codes exist")
        config, blobs = unpack_state(state)
        cfg = IndexConfig.from_json(config)
        mine = self._config
        for name in ("dim", "metric", "scan", "rescore", "residual"):
            if getattr(cfg, name) != getattr(mine, name):
                raise InvalidInput(f"trained state has {name}={getattr(cfg, name)!r}, this index "
                                   f"{name}={getattr(mine, name)!r}")
        if (cfg.ivf is None) != (mine.ivf is None):
            raise InvalidInput(f"trained state has ivf={cfg.ivf}, this index ivf={mine.ivf}")
        self._config = cfg
        try:
            self._apply_blobs(blobs)  # parses (validates) every blob before anything is committed
            self._store.set_config(config=cfg.to_json(), blobs=blobs)
        except Exception:
            self._scan_q = self._rescore_q = self._ivf = self._scanner = None
            self._config = mine
            raise
        return self

    def _rescore_quantizer(self) -> Quantizer:
        """Unfitted rescore quantiser.  In residual mode its RHT gets a seed other than the scan's unless
        the spec names one: the same rotation would leave the residual's folded, non-Gaussian per-coordinate
        shape in place, while a fresh rotation makes it Gaussian-like again (measured: recall@10 0.948 →
        0.956 with binary + e8p:bits=4 on Debian-MiniLM)."""
        cfg = self._config
        _, params = quantizers.parse_spec(cfg.rescore)
        if cfg.residual and "seed" not in params:
            scan_seed = quantizers.parse_spec(cfg.scan)[1].get("seed", 0)
            return quantizers.get(cfg.rescore, seed=int(scan_seed) + 1)
        return quantizers.get(cfg.rescore)

    def _fit(self, x: np.ndarray) -> tuple[dict[str, bytes], IndexConfig]:
        """Fitted quantiser states (blobs) for prepared training vectors, and the config with automatic
        settings (IVF list count) resolved for them."""
        n_train = x.shape[0]
        cfg = self._config
        blobs = {}
        if cfg.ivf is not None:  # k-means samples up to ivf.train_size itself (faiss wants ~39 points per list)
            cfg = replace(cfg, ivf=cfg.ivf.resolved(n_train))
            blobs["ivf"] = CoarseQuantizer.train(x, cfg.metric, cfg.ivf).to_bytes()
        if x.shape[0] > TRAIN_MAX:
            x = x[np.sort(np.random.default_rng(0).choice(x.shape[0], TRAIN_MAX, replace=False))]
        scan_q = quantizers.get(cfg.scan)
        rescore_q = self._rescore_quantizer() if cfg.rescore else None
        for q in (scan_q, rescore_q):
            if q is not None and x.shape[0] < q.min_train:
                raise EmptyInput(f"{q.spec} needs at least {q.min_train} training vectors, got {x.shape[0]}; "
                                 f"add a larger first batch or call Index.train(sample)")
        blobs["scan"] = scan_q.fit(x).to_bytes()
        if rescore_q is not None:
            target = x - scan_q.decode(scan_q.encode(x)) if cfg.residual else x
            blobs["rescore"] = rescore_q.fit(target).to_bytes()
        return blobs, cfg

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

    def encode(self, vectors: np.ndarray) -> EncodedVectors:
        """Encode vectors with this index's trained state without writing them; pass the result to ``add`` or
        ``upsert`` of any index with the same :attr:`state_id` (e.g. encode on many workers, commit on one)."""
        if not self.is_trained:
            raise InvalidInput("the index is not trained yet; call train() or load_trained_state() first")
        x = self._prepare(as_float_matrix(vectors, d=self.dim, name="vectors", allow_empty=False))
        columns, extra = self._encode_rows(x)
        return EncodedVectors(self.state_id, columns, extra)

    def _encode_rows(self, x: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Code columns and derived columns of prepared vectors."""
        extra: dict[str, np.ndarray] = {}
        if self._ivf is not None:  # the store keeps each segment's rows grouped by list
            extra["list"] = self._ivf.assign(x)
        if self.metric == "l2":
            extra["norm2"] = np.einsum("ij,ij->i", x, x).astype(np.float32)
        columns = {"scan": self._encode_chunked(self._scan_q, x)}
        if self._rescore_q is not None:
            if self._config.residual:
                x = x - self._scan_q.decode(columns["scan"])
            columns["rescore"] = self._encode_chunked(self._rescore_q, x)
        return columns, extra

    def _write(self, vectors: np.ndarray | EncodedVectors, ids: object, metadata: Any, *,
               upsert: bool) -> np.ndarray:
        encoded = vectors if isinstance(vectors, EncodedVectors) else None
        if encoded is not None:
            if encoded.state_id != self.state_id:
                raise InvalidInput("vectors were encoded with another trained state than this index's")
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
            ids_arr = self._ids_array(ids, n)
        if np.unique(ids_arr).shape[0] != n:
            raise InvalidInput("duplicate ids in one batch")
        blobs = new_cfg = None
        old_cfg = self._config
        if encoded is not None:
            columns, extra = encoded.columns, encoded.extra
        else:
            x = self._prepare(x)
            if not self.is_trained:  # train on this batch; the states are committed with its rows
                blobs, new_cfg = self._fit(x)
                self._config = new_cfg
                self._apply_blobs(blobs)
            columns, extra = self._encode_rows(x)
        try:
            self._store.write(ids_arr, columns, vectors=None, metadata=metadata, extra=extra or None,
                              upsert=upsert, blobs=blobs, config=None if new_cfg is None else new_cfg.to_json())
        except Exception:
            if blobs is not None:  # nothing was committed: forget the trained state
                self._scan_q = self._rescore_q = self._ivf = self._scanner = None
                self._config = old_cfg
            raise
        self._next_id = max(self._next_id or 0, int(ids_arr.max()) + 1)
        return ids_arr

    def _encode_chunked(self, q: Quantizer, x: np.ndarray) -> np.ndarray:
        out = np.empty((x.shape[0], q.code_size), dtype=np.uint8)
        chunks = range(0, x.shape[0], WRITE_CHUNK)
        if x.shape[0] > 4 * WRITE_CHUNK:
            from tqdm.auto import tqdm

            chunks = tqdm(chunks, desc=f"encoding {q.name}", unit_scale=WRITE_CHUNK, leave=False)
        for s in chunks:
            out[s:s + WRITE_CHUNK] = q.encode(x[s:s + WRITE_CHUNK])
        return out

    def _peek_next_id(self) -> int:
        if self._next_id is None:
            top = -1
            for seg in self._store.snapshot().segments:
                if seg.num_rows:
                    top = max(top, int(np.max(seg.ids)))
            self._next_id = top + 1
        return self._next_id

    def add(self, vectors: np.ndarray | EncodedVectors, ids: object = None, metadata: Any = None) -> np.ndarray:
        """Add vectors (float (n, dim), or :class:`EncodedVectors` from :meth:`encode`); returns their uint64 ids
        (new ids are assigned when ``ids`` is None).

        Adding an id that already exists raises; use :meth:`upsert` to replace.  The first add trains the
        quantisers on (a sample of) its vectors unless :meth:`train` was called.
        """
        return self._write(vectors, ids, metadata, upsert=False)

    def upsert(self, vectors: np.ndarray | EncodedVectors, ids: object, metadata: Any = None) -> np.ndarray:
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
        self._seg_cache.clear()

    def versions(self) -> list:
        return self._store.versions()

    def stats(self) -> dict[str, Any]:
        """Counts, sizes and settings: ``count``, ``bytes_per_vector`` (codes the search touches), ..."""
        s = dict(self._store.stats())
        c = self._config
        bpv = 0
        if self.is_trained:
            # Bytes per vector that searches read: scan codes, rescore codes, and the exact norm for l2.
            # IVF list ids are not counted: a segment's rows are sorted by list, so searches use the
            # nlist + 1 list offsets (found by binary search once per segment), not the per-row ids.
            bpv = self._scan_q.code_size + (self._rescore_q.code_size if self._rescore_q else 0)
            bpv += 4 * (c.metric == "l2")
        s.update({"count": len(self), "dim": c.dim, "metric": c.metric, "scan": c.scan, "rescore": c.rescore,
                  "ivf": None if c.ivf is None else dict(c.ivf.__dict__), "trained": self.is_trained,
                  "bytes_per_vector": bpv})
        return s

    # ------------------------------------------------------------ search
    def search(
        self,
        queries: np.ndarray,
        k: int = 10,
        filter: dict | None = None,
        oversample: int | None = None,
        nprobe: int | None = None,
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
            Scan candidates kept per result for rescoring (default: the index's ``oversample``); higher =
            better recall, slower.
        nprobe:
            IVF lists scanned per query (default: the index's ``ivf.nprobe``).
        """
        xq = as_float_matrix(queries, d=self.dim, name="queries", allow_empty=False)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InvalidInput(f"k must be a positive integer, got {k!r}")
        oversample = self._config.oversample if oversample is None else oversample
        if isinstance(oversample, bool) or not isinstance(oversample, (int, np.integer)) or oversample < 1:
            raise InvalidInput(f"oversample must be a positive integer, got {oversample!r}")
        if nprobe is not None and (isinstance(nprobe, bool) or not isinstance(nprobe, (int, np.integer))
                                   or nprobe < 1):
            raise InvalidInput(f"nprobe must be a positive integer, got {nprobe!r}")
        snap = self._store.snapshot()
        n = int(snap.num_rows)
        if n == 0 or not self.is_trained:
            raise EmptyInput("the index is empty")
        if k > n:
            raise InvalidInput(f"k={k} exceeds the number of vectors in the index ({n})")
        xq = self._prepare(xq)
        with single_threaded_blas(), _threads_for(xq.shape[0] * n * self._probe_fraction(nprobe)):
            return self._search(snap, xq, k, filter, int(oversample), nprobe)

    def _probe_fraction(self, nprobe: int | None) -> float:
        if self._ivf is None:
            return 1.0
        return min(1.0, (nprobe or self._config.ivf.nprobe) / self._ivf.nlist)

    def _search(self, snap: Any, xq: np.ndarray, k: int, filter: dict | None, oversample: int,
                nprobe: int | None) -> tuple[np.ndarray, np.ndarray]:
        masks = snap.filter_masks(filter) if filter is not None else None
        kk = k * oversample if self._rescore_q is not None else k
        if masks is not None and sum(int(m.sum()) for m in masks) <= FILTER_EXACT_MAX:
            scores, refs = self._filtered_exact(snap, xq, masks, k)
        else:
            scores, refs, scan_ip, width = self._scan(snap, xq, kk, masks, nprobe, k)
            if self._rescore_q is None:  # scanners may return their rows in any order
                scores, refs = _topk_of(scores, refs, k)
            else:
                if width is not None:
                    refs = _confident_candidates(scores, refs, width, k)
                scores, refs = self._rescore(snap, xq, refs, k, scan_ip)
        return self._finish(snap, xq, scores, refs)

    def _finish(self, snap: Any, xq: np.ndarray, scores: np.ndarray, refs: np.ndarray):
        ids = np.full(refs.shape, -1, dtype=np.int64)
        valid = refs >= 0
        seg_of = np.where(valid, refs >> _SEG_SHIFT, -1)
        for si in np.unique(seg_of[valid]):
            sel = seg_of == si
            ids[sel] = snap.segments[si].ids[refs[sel] & _ROW_MASK].astype(np.int64)
        if self.metric == "l2":
            qn = np.einsum("ij,ij->i", xq, xq)[:, None]
            dist = np.where(valid, np.maximum(qn - scores, 0), np.inf).astype(np.float32)
        else:
            dist = np.where(valid, scores, -np.inf).astype(np.float32)
        return dist, ids

    def _cache(self, seg: Any) -> _SegmentCache:
        """Derived per-segment data, built once and published only when complete (searches run concurrently
        from many threads; a racing second builder just does the same work)."""
        c = self._seg_cache.get(seg.name)
        if c is None:
            c = _SegmentCache()
            a, b = self._scanner.row_terms(seg.column("scan"))
            if self.metric == "l2":  # the scan ranks by 2⟨q,x⟩ − ‖x‖²
                c.norm2 = np.asarray(seg.extra("norm2"), dtype=np.float32)
                a = 2 * a - c.norm2 if a.size else -c.norm2
                b = 2 * b if b.size else np.full(seg.num_rows, 2, np.float32)
            c.row_a, c.row_b = np.ascontiguousarray(a, np.float32), np.ascontiguousarray(b, np.float32)
            c.scan_data = self._scanner.segment_data(seg.column("scan"), c.row_a, c.row_b)
            if self._ivf is not None:
                lists = seg.extra("list")
                c.offsets = np.searchsorted(lists, np.arange(self._ivf.nlist + 1)).astype(np.int64)
            if len(self._seg_cache) > 4096:  # bounded: forget the oldest entries
                for key in list(self._seg_cache)[:1024]:
                    self._seg_cache.pop(key, None)
            self._seg_cache[seg.name] = c
        return c

    def _scan(self, snap: Any, xq: np.ndarray, kk: int, masks: list | None, nprobe: int | None,
              k: int | None = None):
        """First stage → (scores, refs, ip, width): the best ``kk`` scan estimates per query over all segments,
        the exact ⟨q, decode(scan code)⟩ of those rows and the half-widths of the estimates' confidence
        intervals when the scanner provides them (else ``None``)."""
        nq = xq.shape[0]
        probes = None
        if self._ivf is not None:
            nprobe = self._config.ivf.nprobe if nprobe is None else int(nprobe)
            if masks is not None:  # a selective filter empties most lists: probe proportionally more
                kept = sum(int(m.sum()) for m in masks) / max(1, snap.num_rows)
                nprobe = int(math.ceil(nprobe / max(kept, 1e-6)))
            probes = self._ivf.probe(xq, min(nprobe, self._ivf.nlist))
        prep = self._scanner.prepare(xq)
        l2 = self.metric == "l2"
        parts = []
        for si, seg in enumerate(snap.segments):
            if seg.num_rows == 0:
                continue
            cache = self._cache(seg)
            if masks is not None:
                live = np.ascontiguousarray(masks[si])
            else:  # no deletions: skip the per-row mask (O(1) check instead of scanning it)
                live = _EMPTY_BOOL if seg.num_live == seg.num_rows else np.ascontiguousarray(seg.live)
            if probes is not None:
                ranges = np.stack([cache.offsets[probes], cache.offsets[probes + 1]], axis=-1)
            else:
                ranges = np.zeros((nq, 1, 2), dtype=np.int64)
                ranges[:, 0, 1] = seg.num_rows
            v, r, ip, width = self._scanner.scan(prep, seg.column("scan"), cache.row_a, cache.row_b, ranges, live,
                                                 kk, 2.0 if l2 else 1.0, cache.scan_data, k)
            parts.append((v, np.where(r >= 0, r | (si << _SEG_SHIFT), -1), ip, width))
        if not parts:
            return np.full((nq, 0), -np.inf, np.float32), np.full((nq, 0), -1, np.int64), None, None
        if len(parts) == 1:
            return parts[0]
        scores = np.concatenate([p[0] for p in parts], axis=1)
        refs = np.concatenate([p[1] for p in parts], axis=1)
        extras = [None if any(p[j] is None for p in parts) else np.concatenate([p[j] for p in parts], axis=1)
                  for j in (2, 3)]
        return _topk_of(scores, refs, kk, *extras)

    def _filtered_exact(self, snap: Any, xq: np.ndarray, masks: list, k: int):
        """Score every selected row with the finest reconstruction (BLAS products), keep the best k."""
        scores, refs = [], []
        for si, mask in enumerate(masks):
            rows = np.flatnonzero(mask)
            if rows.size == 0:
                continue
            seg = snap.segments[si]
            s = 0
            for q, column in self._reconstruction_parts():
                s = s + q.work_queries(xq) @ q.decode_work(np.asarray(seg.column(column)[rows])).T
            if self.metric == "l2":
                s = 2 * s - self._cache(seg).norm2[rows][None, :]
            scores.append(np.asarray(s, dtype=np.float32))
            refs.append(np.broadcast_to(rows.astype(np.int64) | (si << _SEG_SHIFT), s.shape))
        if not scores:
            return np.full((xq.shape[0], k), -np.inf, np.float32), np.full((xq.shape[0], k), -1, np.int64)
        return _topk_of(np.concatenate(scores, axis=1), np.concatenate(refs, axis=1), k)

    def _score_refs(self, snap: Any, xq: np.ndarray, refs: np.ndarray, q: Quantizer, column: str):
        """⟨q_i, decode(code of refs[i, j])⟩ for a (nq, m) array of row refs (−1 = none → −inf).

        Each distinct candidate row's code is read once; the quantiser scores every (query, candidate)
        pair in its work domain, where the query is rotated once (:meth:`Quantizer.ip_pairs`).
        """
        qw = q.work_queries(xq)
        scores = np.full(refs.shape, -np.inf, dtype=np.float32)
        valid = refs >= 0
        seg_of = np.where(valid, refs >> _SEG_SHIFT, -1)
        for si in np.unique(seg_of[valid]):
            seg = snap.segments[si]
            sel = seg_of == si
            rows = refs[sel] & _ROW_MASK
            uniq, inv = np.unique(rows, return_inverse=True)
            qi = np.nonzero(sel)[0].astype(np.int64)
            scores[sel] = q.ip_pairs(qw, qi, np.asarray(seg.column(column)[uniq]), inv.astype(np.int64).ravel())
        return scores

    def _reconstruction_parts(self) -> list[tuple[Quantizer, str]]:
        """(quantiser, column) pairs whose decodes sum to the finest stored reconstruction."""
        if self._rescore_q is None:
            return [(self._scan_q, "scan")]
        if self._config.residual:
            return [(self._rescore_q, "rescore"), (self._scan_q, "scan")]
        return [(self._rescore_q, "rescore")]

    def _rescore(self, snap: Any, xq: np.ndarray, refs: np.ndarray, k: int, scan_ip: np.ndarray | None = None):
        """Best ``k`` of the candidates ``refs`` by the finest reconstruction.  ``scan_ip`` (the scan's exact
        ⟨q, decode(scan code)⟩ per candidate) replaces decoding the scan codes again in residual mode."""
        scores = None
        for q, column in self._reconstruction_parts():
            if column == "scan" and scan_ip is not None:
                part = np.where(refs >= 0, scan_ip, -np.inf).astype(np.float32)
            else:
                part = self._score_refs(snap, xq, refs, q, column)
            scores = part if scores is None else scores + part
        if self.metric == "l2":
            scores = self._l2_ranking(snap, scores, refs)
        return _topk_of(scores, refs, k)

    def _l2_ranking(self, snap: Any, ip: np.ndarray, refs: np.ndarray) -> np.ndarray:
        """2⟨q, x⟩ − ‖x‖² (higher = nearer) from inner products and the stored exact norms."""
        out = np.full(refs.shape, -np.inf, dtype=np.float32)
        valid = refs >= 0
        seg_of = np.where(valid, refs >> _SEG_SHIFT, -1)
        for si in np.unique(seg_of[valid]):
            sel = seg_of == si
            out[sel] = 2 * ip[sel] - self._cache(snap.segments[si]).norm2[refs[sel] & _ROW_MASK]
        return out

    # ------------------------------------------------------------ lookups by id
    def contains(self, ids: object) -> np.ndarray:
        """Bool mask (n,): which of ``ids`` are in the index (one pinned snapshot)."""
        from ..storage.snapshot import as_id_array

        return self._store.snapshot().contains(as_id_array(ids))

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
        if rows.ids.size == 0 or self._scan_q is None:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = sum(q.decode(rows.columns[column]) for q, column in self._reconstruction_parts())
        return np.ascontiguousarray(out, dtype=np.float32)


#: Searches expected to score fewer (query, row) pairs than this run all kernels on the calling thread.
SINGLE_THREAD_WORK = 1_000_000


@contextlib.contextmanager
def _threads_for(work: float):
    """Run small searches single-threaded: waking numba's pool costs more than the work (tens of µs when
    idle, milliseconds on a loaded machine).  ``numba.set_num_threads`` is per calling thread."""
    if work >= SINGLE_THREAD_WORK:
        yield
        return
    import numba

    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(previous)


def _confident_candidates(scores: np.ndarray, refs: np.ndarray, width: np.ndarray, k: int) -> np.ndarray:
    """``refs`` with every candidate that cannot reach the top ``k`` set to −1.

    Each scan score lies within ``± width`` of the exact score (with the scanner's confidence); a candidate
    whose upper bound is below the k-th largest lower bound of its query is beaten by k others, so
    rescoring it is wasted work.
    """
    if scores.shape[1] <= k:
        return refs
    valid = refs >= 0
    lower = np.where(valid, scores - width, -np.inf)
    kth = -np.partition(-lower, k - 1, axis=1)[:, k - 1:k]
    return np.where(valid & (scores + width >= kth), refs, -1)


def _topk_of(scores: np.ndarray, refs: np.ndarray, k: int, *payload: np.ndarray | None):
    """Best k per row of (scores, refs), descending; pads with (−inf, −1).  Arrays in ``payload`` (same
    shape) are reordered alongside and returned after (scores, refs), padded with 0; ``None`` stays ``None``."""
    nq, m = scores.shape
    if m < k:
        pad = k - m
        scores = np.concatenate([scores, np.full((nq, pad), -np.inf, np.float32)], axis=1)
        refs = np.concatenate([refs, np.full((nq, pad), -1, np.int64)], axis=1)
        payload = tuple(None if p is None else np.concatenate([p, np.zeros((nq, pad), p.dtype)], axis=1)
                        for p in payload)
        m = k
    if m > k:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(m), (nq, m))
    s = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-s, axis=1, kind="stable")
    s = np.take_along_axis(s, order, axis=1)

    def pick(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else np.take_along_axis(np.take_along_axis(a, part, axis=1), order, axis=1)

    r = np.where(np.isfinite(s), pick(refs), -1)
    return (s.astype(np.float32), r, *(pick(p) for p in payload))
