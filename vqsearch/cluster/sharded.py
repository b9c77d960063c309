"""``ShardedIndex``: one collection split over shards (and replicas) held by Ray actors.

The driver (this object) routes ids to shards by a stable hash, trains the quantisers once and ships the
state to every shard, encodes writes (locally when small, in Ray tasks when large) and sends the codes to
every replica of the owning shard; a search goes to one replica per shard and the per-shard top-k are
merged exactly.  Search parameters (``oversample``, ``nprobe``) are resolved here, once for the whole
collection, and passed to every shard explicitly, so shards never pick different settings.

Writes are serialised on the driver (one writer per collection, like :class:`vqsearch.Index`); searches
may run from many threads.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from .._validation import as_ids
from ..errors import Conflict, DimensionMismatch, EmptyInput, InvalidInput, UnknownIds
from ..index import Index, IVFConfig
from . import build as bulk
from . import layout as lay
from .checks import as_metadata, as_vectors, null_table, preview, take_meta
from .errors import PartialWrite, ShardUnavailable
from .merge import empty_result, merge_topk
from .placement import CONCURRENCY_GROUPS, ReplicaSlot, make_placement_groups
from .replica import ShardReplica
from .replicaset import ReplicaSet
from .result import SearchResult
from .routing import group_by_shard
from .runtime import ensure_connected, require_ray

LOG = logging.getLogger(__name__)

#: What each replica reserves in its placement bundle: logical memory, no CPU (replicas mostly wait; their
#: searches use the node's cores in bursts, and the CPU-heavy encoding runs in tasks that do hold CPUs).
REPLICA_RESOURCES = {"memory": 256 * 2**20}
#: Seconds a remote call may take before its replica counts as unavailable.
DEFAULT_TIMEOUT = 600.0
#: Seconds to wait for a dead replica's replacement to reopen its directory.
RECOVER_TIMEOUT = 60.0
#: Stats summed over shards (the rest is the same on every shard).
_SUMMED_STATS = ("count", "rows", "dead_rows", "segments", "partial_segments", "deletion_files", "bytes")


class ShardedIndex:
    """A collection sharded over Ray actors; use :meth:`create`, :meth:`open` or :meth:`build`.

    Same methods and return shapes as :class:`vqsearch.Index` (``add``, ``upsert``, ``delete``, ``search`` →
    ``(distances, ids)``, ``get_metadata``, ``stats``, ``compact``, ``close``, ``len``).
    """

    def __init__(self, root: Path, layout: lay.ClusterLayout, *, create: bool, timeout: float,
                 recover_timeout: float) -> None:
        ray = require_ray()
        self._root = Path(root)
        self._layout = layout
        self._write_lock = threading.Lock()
        self._closed = False
        opts = {"dim": layout.dim, "metric": layout.metric, **layout.index_options}
        # The template holds the trained state on the driver: query validation, search defaults, encoding of
        # small writes, and training on the first write.  It holds no rows.
        self._template = Index.create(None, **opts)
        state = lay.read_state(self._root)
        if state is not None:
            self._template.load_trained_state(state)
        self._next_id = lay.read_next_id(self._root)
        self._groups: list[Any] = []
        self._replicas: ReplicaSet | None = None
        try:
            self._groups = make_placement_groups(layout.shards, layout.replicas, REPLICA_RESOURCES, timeout)
            actor_class = ray.remote(concurrency_groups=CONCURRENCY_GROUPS)(ShardReplica)
            slots = [[ReplicaSlot(actor_class, s, r, str(layout.replica_path(self._root, s, r)), self._groups[s],
                                  REPLICA_RESOURCES, opts if create else None, state)
                      for r in range(layout.replicas)] for s in range(layout.shards)]
            self._replicas = ReplicaSet(slots, state=self._state, timeout=timeout, recover_timeout=recover_timeout)
            # wait until every replica has opened (or created) its index
            _, failed = self._replicas.write({s: ("ping", (), {}) for s in range(layout.shards)})
            if failed:
                raise next(iter(failed.values()))
        except BaseException:
            self._shutdown()
            raise

    # ------------------------------------------------------------ lifecycle
    @classmethod
    def create(cls, root: str | Path, dim: int, *, shards: int = 1, replicas: int = 1, metric: str = "cosine",
               preset: str = "default", address: str | None = None, timeout: float = DEFAULT_TIMEOUT,
               recover_timeout: float = RECOVER_TIMEOUT, **index_options: Any) -> ShardedIndex:
        """Create an empty sharded collection at ``root`` (a new directory every node can reach, or a path that
        exists on each node) and start its replica actors.

        Parameters
        ----------
        shards, replicas:
            Shard count (ids are hashed over them) and copies of each shard (on different nodes when there
            are enough).
        metric, preset, **index_options:
            As for :meth:`vqsearch.Index.create` (``scan``, ``rescore``, ``ivf``, ``oversample``, ``residual``);
            every shard uses them with one trained state.
        address:
            Ray address to connect to when this process is not connected yet (``"auto"``, ``"host:port"``);
            ``None`` starts a local Ray.
        timeout:
            Seconds one remote call may take before its replica counts as unavailable.
        """
        for name, value in (("shards", shards), ("replicas", replicas)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise InvalidInput(f"{name} must be a positive integer, got {value!r}")
        Index.create(None, dim=dim, metric=metric, preset=preset, **index_options).close()  # validate options
        if isinstance(index_options.get("ivf"), IVFConfig):  # recorded as JSON in the layout
            index_options["ivf"] = dict(index_options["ivf"].__dict__)
        ensure_connected(address)
        layout = lay.ClusterLayout(dim=int(dim), shards=int(shards), replicas=int(replicas), metric=str(metric),
                                   index_options={"preset": preset, **index_options})
        lay.create_layout(Path(root), layout)
        return cls(Path(root), layout, create=True, timeout=timeout, recover_timeout=recover_timeout)

    @classmethod
    def build(cls, root: str | Path, inputs: Any, *, dim: int | None = None, shards: int = 1, replicas: int = 1,
              metric: str = "cosine", preset: str = "default", vector_column: str = "vector",
              id_column: str | None = "id", metadata_columns: list[str] | None = None, train_size: int | None = None,
              address: str | None = None, timeout: float = DEFAULT_TIMEOUT, **index_options: Any) -> ShardedIndex:
        """Create a collection from Parquet / Arrow IPC / ``.npy`` files, read and encoded in parallel Ray tasks.

        ``inputs``: a file, a directory, a glob or a list of them.  Parquet/Arrow inputs hold the vectors in
        ``vector_column`` (a list of floats), ids in ``id_column`` when that column exists (else ids are
        assigned in input order), and metadata in the other columns (or ``metadata_columns``).  The
        quantisers are trained once on a sample of up to ``train_size`` vectors drawn from the whole input,
        and automatic IVF settings follow the total row count, as if the input were one first ``add``.
        Each shard commits its rows as one atomic write.
        """
        from . import inputs as inp

        pieces = inp.plan_pieces(inp.expand_inputs(inputs))
        if not pieces:
            raise EmptyInput(f"no rows in {inputs}")
        in_dim = inp.input_dim(pieces[0], vector_column)
        if dim is not None and int(dim) != in_dim:
            raise DimensionMismatch(f"input vectors have dimension {in_dim}, expected {dim}")
        total = sum(p.rows for p in pieces)
        probe = Index.create(None, dim=in_dim, metric=metric, preset=preset, **index_options)
        ivf = probe.config.ivf
        probe.close()
        if ivf is not None and (ivf.nlist == 0 or ivf.nprobe == 0):  # automatic: from the whole input's size
            index_options = {**index_options, "ivf": dict(ivf.resolved(total).__dict__)}
        sx = cls.create(root, in_dim, shards=shards, replicas=replicas, metric=metric, preset=preset,
                        address=address, timeout=timeout, **index_options)
        try:
            sx.add_files(inputs, vector_column=vector_column, id_column=id_column,
                         metadata_columns=metadata_columns, train_size=train_size)
        except BaseException:
            sx.close()
            raise
        return sx

    def add_files(self, inputs: Any, *, vector_column: str = "vector", id_column: str | None = "id",
                  metadata_columns: list[str] | None = None, train_size: int | None = None) -> int:
        """Bulk-add Parquet / Arrow IPC / ``.npy`` files (see :meth:`build`); returns the number of rows added.
        An untrained collection is trained first on a sample drawn from the whole input."""
        self._check_open()
        t0 = time.perf_counter()
        plan = bulk.plan_input(inputs, self.dim, vector_column=vector_column, id_column=id_column,
                               metadata_columns=metadata_columns)
        with self._write_lock:
            if not self._template.is_trained:
                self._train(bulk.read_training_sample(plan, bulk.TRAIN_SAMPLE if train_size is None else train_size))
            id_base = None if plan.id_column else int(self._reserve_ids(plan.rows)[0])
            state = require_ray().put(self._template.trained_state())
            parts, ids_by_shard = bulk.encode_input(plan, state, self._index_options(), self.shards, id_base,
                                                    self._replicas.timeout)
            every = np.concatenate(ids_by_shard)
            if plan.id_column:  # ids from the files: check them before anything is written
                if np.unique(every).shape[0] != every.shape[0]:
                    raise InvalidInput(f"column {plan.id_column!r} of the input holds duplicate ids")
                self._refuse_existing(every)
                self._raise_next_id(int(every.max()) + 1)
            calls = {s: ("write", ("add", parts[s], np.zeros(0, np.uint64), None), {}) for s in range(self.shards)}
            _, failed = self._replicas.write(calls)
            if failed:  # take the add back from the shards that committed it, then raise
                bounds = np.cumsum([0] + [part.size for part in ids_by_shard])
                groups = [np.arange(bounds[s], bounds[s + 1]) for s in range(self.shards)]
                self._undo("add", calls, groups, every, failed)
        LOG.info("bulk add of %d rows in %d pieces: %.1f s", plan.rows, len(plan.pieces), time.perf_counter() - t0)
        return plan.rows

    @classmethod
    def open(cls, root: str | Path, *, address: str | None = None, timeout: float = DEFAULT_TIMEOUT,
             recover_timeout: float = RECOVER_TIMEOUT) -> ShardedIndex:
        """Open an existing sharded collection: start its replica actors, which reopen their committed segments."""
        layout = lay.read_layout(Path(root))
        ensure_connected(address)
        return cls(Path(root), layout, create=False, timeout=timeout, recover_timeout=recover_timeout)

    def close(self) -> None:
        """Close every replica's index and stop its actor; the data stays on disk for :meth:`open`."""
        if self._closed:
            return
        with self._write_lock:
            try:
                self._replicas.write({s: ("close", (), {}) for s in range(self.shards)}, timeout=60)
            finally:
                self._shutdown()

    def _shutdown(self) -> None:
        from ray.util.placement_group import remove_placement_group

        self._closed = True
        if self._replicas is not None:
            self._replicas.close()
        for group in self._groups:
            remove_placement_group(group)
        self._template.close()

    def __enter__(self) -> ShardedIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ properties
    @property
    def root(self) -> Path:
        return self._root

    @property
    def dim(self) -> int:
        return self._layout.dim

    @property
    def metric(self) -> str:
        return self._layout.metric

    @property
    def shards(self) -> int:
        return self._layout.shards

    @property
    def replicas(self) -> int:
        return self._layout.replicas

    @property
    def is_trained(self) -> bool:
        return self._template.is_trained

    @property
    def config(self) -> Any:
        """The :class:`vqsearch.IndexConfig` every shard uses (resolved by training)."""
        return self._template.config

    @property
    def actors(self) -> list:
        """Replica actor handles: one list per shard (``actors[shard][replica]``), or a flat list of replicas
        with one shard.  Handles change when a dead replica is replaced."""
        handles = [[slot.handle for slot in shard] for shard in self._replicas.slots]
        return handles[0] if self.shards == 1 else handles

    def __len__(self) -> int:
        pings, _ = self._replicas.read({s: ("ping", (), {}) for s in range(self.shards)})
        return int(sum(p["count"] for p in pings.values()))

    @property
    def next_id(self) -> int:
        """One above every id written so far (where automatic ids start)."""
        return self._next_id

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def version(self) -> None:
        """Sharded collections have no single version (each shard's store has its own)."""
        return None

    def versions(self) -> list:
        """No collection-wide versions (see :attr:`version`): an empty list."""
        return []

    def scroll(self, *args: Any, **kwargs: Any) -> Any:
        raise Conflict("scrolling a sharded collection is not supported yet; use search or get_metadata")

    def update_metadata(self, *args: Any, **kwargs: Any) -> None:
        raise Conflict("metadata-only updates of a sharded collection are not supported yet; upsert the points")

    def count(self, filter: dict | None = None) -> int:
        """Live rows matching ``filter`` (all live rows without one), summed over the shards."""
        counts, _ = self._replicas.read({s: ("count", (filter,), {}) for s in range(self.shards)})
        return int(sum(counts.values()))

    def __repr__(self) -> str:
        return (f"<vqsearch.cluster.ShardedIndex {self._root} shards={self.shards} replicas={self.replicas} "
                f"dim={self.dim} metric={self.metric}>")

    def _state(self) -> bytes | None:
        return self._template.trained_state() if self._template.is_trained else None

    def _check_open(self) -> None:
        if self._closed:
            raise Conflict(f"sharded collection {self._root} is closed")

    # ------------------------------------------------------------ training
    def train(self, x: np.ndarray) -> ShardedIndex:
        """Train the quantisers (and IVF centroids) on a sample, here on the driver, and ship the state to every
        replica; the first ``add`` does it with its own vectors otherwise."""
        self._check_open()
        with self._write_lock:
            self._train(x)
        return self

    def _train(self, x: np.ndarray) -> None:
        if self._template.is_trained:
            raise InvalidInput("collection is already trained; quantisers are frozen once codes exist")
        self._template.train(x)
        self._publish_state()

    def _publish_state(self) -> None:
        state = self._template.trained_state()
        lay.write_state(self._root, state)  # durable first: replicas that miss it get it when they reopen
        ray = require_ray()
        ref = ray.put(state)
        _, failed = self._replicas.write({s: ("load_trained_state", (ref,), {}) for s in range(self.shards)})
        if failed:
            raise next(iter(failed.values()))

    def trained_state(self) -> bytes:
        """The collection's trained state (see :meth:`vqsearch.Index.trained_state`)."""
        return self._template.trained_state()

    # ------------------------------------------------------------ writes
    def add(self, vectors: np.ndarray, ids: object = None, metadata: Any = None, *,
            progress: bool | None = False) -> np.ndarray:
        """Add vectors; returns their uint64 ids (assigned by the cluster, unique across shards, when ``ids`` is
        None).  An id that exists raises ``Conflict`` and nothing is written.  The first add trains.
        ``progress`` is accepted for :class:`vqsearch.Index` compatibility; the encoding tasks show no bar."""
        return self._write("add", vectors, ids, metadata)

    def upsert(self, vectors: np.ndarray, ids: object, metadata: Any = None, *,
               progress: bool | None = False) -> np.ndarray:
        """Insert or replace vectors by id (idempotent: repeat it after a failure); ``progress`` as in :meth:`add`."""
        return self._write("upsert", vectors, ids, metadata)

    def _write(self, mode: str, vectors: Any, ids: object, metadata: Any) -> np.ndarray:
        self._check_open()
        x = as_vectors(vectors, self.dim)
        n = x.shape[0]
        if ids is None and mode == "upsert":
            raise InvalidInput("upsert needs explicit ids")
        table = as_metadata(metadata, n)
        with self._write_lock:
            ids_arr = self._reserve_ids(n) if ids is None else as_ids(ids, n)
            if ids is not None:
                if np.unique(ids_arr).shape[0] != n:
                    raise InvalidInput("duplicate ids in one batch")
                if mode == "add":
                    self._refuse_existing(ids_arr)
                self._raise_next_id(int(ids_arr.max()) + 1)
            if not self._template.is_trained:
                self._train(x)
            groups = group_by_shard(ids_arr, self.shards)
            calls, tasks, state = {}, [], []
            for shard, rows in enumerate(groups):
                if rows.size:
                    part = take_meta(table, rows)
                    encoded = bulk.encode_rows(self._template, self._index_options(), x[rows], ids_arr[rows], part,
                                          state)
                    if isinstance(encoded, list):  # (part, row count) refs of encoding tasks
                        tasks += encoded
                        encoded = [ref for ref, _ in encoded]
                    calls[shard] = ("write", (mode, encoded, ids_arr[rows], part), {})
            if tasks:
                bulk.wait_encoded([n for _, n in tasks], self._replicas.timeout, cancel=[p for p, _ in tasks])
            _, failed = self._replicas.write(calls)
            if failed:
                self._undo(mode, calls, groups, ids_arr, failed)
        return ids_arr

    def _index_options(self) -> dict[str, Any]:
        """``Index.create`` options of the replicas' indexes (encoding tasks build their encoder with them)."""
        return {"dim": self.dim, "metric": self.metric, **self._layout.index_options}

    def _undo(self, mode: str, calls: dict, groups: list[np.ndarray], ids: np.ndarray,
              failed: dict[int, Exception]) -> None:
        """After a shard refused a write: take an add back from the shards that took it, then raise."""
        error = next(iter(failed.values()))
        committed = tuple(s for s in calls if s not in failed)
        if mode == "add":
            undo = {s: ("delete", (ids[groups[s]],), {"retry": True}) for s in calls}
            _, undo_failed = self._replicas.write(undo)
            if not undo_failed or set(undo_failed) <= set(failed):
                raise error
            committed = tuple(sorted(undo_failed))
        if not committed:
            raise error
        remedy = ("repeat the upsert once the cause is fixed (it is idempotent)" if mode == "upsert" else
                  "delete the ids that contains() still finds once the cause is fixed")
        raise PartialWrite(f"shard(s) {list(committed)} committed this {mode} and shard(s) {sorted(failed)} did "
                           f"not ({error}); {remedy}", committed) from error

    def delete(self, ids: object) -> None:
        """Delete ids; raises ``UnknownIds`` (changing nothing) if any id is not in the collection."""
        self._check_open()
        arr = as_ids(ids)
        if arr.size == 0:
            raise EmptyInput("no ids to delete")
        with self._write_lock:
            present = self._contains(arr)
            if not present.all():
                missing = arr[~present]
                raise UnknownIds(f"cannot delete {missing.size} id(s) that are not present: {preview(missing)}")
            groups = group_by_shard(arr, self.shards)
            calls = {s: ("delete", (arr[rows],), {}) for s, rows in enumerate(groups) if rows.size}
            _, failed = self._replicas.write(calls)
            if failed:
                self._undo("delete", calls, groups, arr, failed)

    def _reserve_ids(self, n: int) -> np.ndarray:
        """``n`` fresh ids, recorded as used on disk before any shard sees them (never handed out twice)."""
        start = self._next_id
        self._raise_next_id(start + n)
        return np.arange(start, start + n, dtype=np.uint64)

    def _raise_next_id(self, value: int) -> None:
        if value > self._next_id:
            lay.write_next_id(self._root, value)
            self._next_id = value

    def _refuse_existing(self, ids: np.ndarray) -> None:
        dup = ids[self._contains(ids)]
        if dup.size:
            raise Conflict(f"{dup.size} id(s) already exist (use upsert to replace them): {preview(dup)}")

    def contains(self, ids: object) -> np.ndarray:
        """Bool mask: which of ``ids`` are in the collection."""
        self._check_open()
        return self._contains(as_ids(ids))

    def _contains(self, ids: np.ndarray) -> np.ndarray:
        out = np.zeros(ids.shape[0], dtype=bool)
        groups = group_by_shard(ids, self.shards)
        calls = {s: ("contains", (ids[rows],), {}) for s, rows in enumerate(groups) if rows.size}
        results, _ = self._replicas.read(calls)
        for shard, mask in results.items():
            out[groups[shard]] = mask
        return out

    def compact(self) -> None:
        """Compact every replica (merge small segments, drop deleted rows)."""
        self._check_open()
        with self._write_lock:
            _, failed = self._replicas.write({s: ("compact", (), {}) for s in range(self.shards)})
        if failed:
            raise next(iter(failed.values()))

    # ------------------------------------------------------------ search
    def search(self, queries: np.ndarray, k: int = 10, filter: dict | None = None, oversample: int | None = None,
               nprobe: int | None = None, *, include: list[str] | None = None, allow_partial: bool = False,
               timeout: float | None = None) -> SearchResult:
        """k nearest neighbours over all shards → ``(distances, ids)``, each ``(nq, k)``, best first.

        Arguments as for :meth:`vqsearch.Index.search`; missing hits (k larger than the collection, or a
        selective filter) have id −1.  ``include``: metadata columns to return with the hits
        (``result.metadata``).  ``allow_partial``: when a shard has no live replica, return the other shards'
        results with ``result.partial`` set instead of raising :class:`ShardUnavailable`.
        """
        self._check_open()
        xq = as_vectors(queries, self.dim, name="queries")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InvalidInput(f"k must be a positive integer, got {k!r}")
        if not self._template.is_trained:
            raise EmptyInput("the index is empty")
        oversample, nprobe = self._search_parameters(oversample, nprobe)
        ray = require_ray()
        qref = ray.put(xq)
        args = (qref, int(k), filter, oversample, nprobe)
        results, missing = self._replicas.read({s: ("search", args, {}) for s in range(self.shards)},
                                               allow_missing=allow_partial, timeout=timeout)
        if results:
            dist, ids = merge_topk([results[s] for s in sorted(results)], int(k), self.metric)
        else:
            dist, ids = empty_result(xq.shape[0], int(k), self.metric)
        meta = None
        if include is not None:
            meta = self._hit_metadata(ids, list(include), skip=missing)
        return SearchResult(dist, ids, missing_shards=tuple(missing), metadata=meta)

    def _search_parameters(self, oversample: int | None, nprobe: int | None) -> tuple[int, int | None]:
        """The collection-wide ``oversample``/``nprobe`` of a search: the caller's, else the trained defaults.
        Decided here once, so that every shard searches with the same settings."""
        cfg = self._template.config
        if oversample is None:
            oversample = cfg.oversample
        if isinstance(oversample, bool) or not isinstance(oversample, (int, np.integer)) or oversample < 1:
            raise InvalidInput(f"oversample must be a positive integer, got {oversample!r}")
        if nprobe is None and cfg.ivf is not None:
            nprobe = cfg.ivf.nprobe
        if nprobe is not None and (isinstance(nprobe, bool) or not isinstance(nprobe, (int, np.integer))
                                   or nprobe < 1):
            raise InvalidInput(f"nprobe must be a positive integer, got {nprobe!r}")
        return int(oversample), None if nprobe is None else int(nprobe)

    def _hit_metadata(self, ids: np.ndarray, columns: list[str], skip: list[int] = ()) -> Any:
        """Metadata of every hit, ``nq × k`` rows (null rows for −1)."""
        import pyarrow as pa

        flat = ids.ravel()
        valid = np.flatnonzero(flat >= 0)
        table = self._metadata(flat[valid].astype(np.uint64), columns, skip=skip)
        if table.num_columns == 0:
            return null_table(flat.shape[0])
        pos = np.full(flat.shape[0], 0, dtype=np.int64)
        pos[valid] = np.arange(valid.size)
        return table.take(pa.array(pos, mask=flat < 0))

    def get_metadata(self, ids: object, columns: list[str] | None = None, *, missing: str = "raise") -> Any:
        """Metadata rows of ``ids`` (a ``pyarrow.Table``, request order); see :meth:`vqsearch.Index.get_metadata`."""
        self._check_open()
        if missing not in ("raise", "null"):
            raise InvalidInput(f"missing must be 'raise' or 'null', got {missing!r}")
        arr = as_ids(ids)
        if missing == "raise":
            present = self._contains(arr)
            if not present.all():
                bad = arr[~present]
                raise UnknownIds(f"{bad.size} id(s) not found: {preview(bad)}")
        return self._metadata(arr, columns)

    def reconstruct(self, ids: object) -> np.ndarray:
        """Approximate vectors of ``ids`` decoded from the stored codes → float32 (n, dim), request order; see
        :meth:`vqsearch.Index.reconstruct` (``UnknownIds`` for ids not in the collection)."""
        self._check_open()
        arr = as_ids(ids)
        groups = group_by_shard(arr, self.shards)
        results, _ = self._replicas.read({s: ("reconstruct", (arr[rows],), {}) for s, rows in enumerate(groups)
                                          if rows.size})
        out = np.zeros((arr.shape[0], self.dim), dtype=np.float32)
        for shard, rows in enumerate(groups):
            if rows.size:
                out[rows] = results[shard]
        return out

    def _metadata(self, ids: np.ndarray, columns: list[str] | None, skip: list[int] = ()) -> Any:
        import pyarrow as pa

        groups = group_by_shard(ids, self.shards)
        calls = {s: ("get_metadata", (ids[rows], columns), {}) for s, rows in enumerate(groups)
                 if rows.size and s not in skip}
        results, _ = self._replicas.read(calls)
        parts, order = [], []
        for shard in sorted(results):
            parts.append(results[shard])
            order.append(groups[shard])
        if not any(p.num_columns for p in parts):  # (Arrow keeps no row count through take() without columns)
            return pa.table({c: pa.nulls(ids.shape[0]) for c in columns}) if columns else null_table(ids.shape[0])
        # shards that never stored metadata answer without columns: their rows become nulls
        table = pa.concat_tables(parts, promote_options="default")
        where = np.concatenate(order)
        inverse = np.full(ids.shape[0], -1, dtype=np.int64)
        inverse[where] = np.arange(where.size)
        return table.take(pa.array(np.maximum(inverse, 0), mask=inverse < 0))

    # ------------------------------------------------------------ stats
    def stats(self) -> dict[str, Any]:
        """Collection stats (counts summed over shards, settings from the trained state) and, under
        ``"per_shard"``, each shard's stats and replicas (node, alive)."""
        self._check_open()
        results, _ = self._replicas.read({s: ("stats", (), {}) for s in range(self.shards)})
        per_shard = [dict(results[s]) for s in range(self.shards)]
        out = {k: v for k, v in per_shard[0].items() if k not in ("version", "retained_versions", "skipped")}
        for key in _SUMMED_STATS:
            if key in out:
                out[key] = sum(int(s.get(key, 0)) for s in per_shard)
        health = self.health()
        for s, st in enumerate(per_shard):
            st["replicas"] = health[s]
        out.update({"shards": self.shards, "replicas": self.replicas, "root": str(self._root),
                    "state_id": self._template.state_id, "per_shard": per_shard})
        return out

    def health(self, timeout: float = 10.0) -> list[list[dict[str, Any]]]:
        """Per shard, per replica: ``{"replica", "alive", "node_id", "pid", "count"}`` (pinged now)."""
        ray = require_ray()
        refs = [[slot.call("ping") for slot in shard] for shard in self._replicas.slots]
        out = []
        for s, shard in enumerate(refs):
            row = []
            for r, ref in enumerate(shard):
                try:
                    info = ray.get(ref, timeout=timeout)
                    row.append({"replica": r, "alive": True, "node_id": info["node_id"], "pid": info["pid"],
                                "count": info["count"]})
                except Exception:  # dead, restarting or slow: reported (and recovered), not raised
                    row.append({"replica": r, "alive": False, "node_id": None, "pid": None, "count": None})
                    self._replicas.recover_later(self._replicas.slots[s][r])
            out.append(row)
        return out


__all__ = ["SearchResult", "ShardUnavailable", "ShardedIndex"]
