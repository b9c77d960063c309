"""Distributed bulk build: read inputs in parallel tasks, encode in tasks, commit once per shard.

The driver plans pieces from file footers, trains on a sample (once, see :meth:`ShardedIndex.train`) and
submits one task per piece.  A task reads its rows, encodes them with the shipped trained state (encoding,
the trellis Viterbi search above all, is the expensive part of a build, so it scales with the cluster's
cores), routes them by id and returns one part per shard.  Each replica then fetches its shard's parts
straight from the object store and commits them as one atomic write.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from ..errors import DimensionMismatch, EmptyInput, InvalidInput
from ..index import Index
from . import inputs as inp
from .routing import group_by_shard
from .runtime import prepare_worker, require_ray, worker_runtime_env

LOG = logging.getLogger(__name__)

#: Vectors the driver trains on in a bulk build (at most).
TRAIN_SAMPLE = 262_144
#: CPUs one encoding task holds (its numba kernels run on as many threads).
ENCODE_CPUS = 1

# Per worker process: indexes holding a trained state, by state id, so that a worker encoding many pieces
# loads the state once.
_ENCODERS: dict[str, Index] = {}


def _encoder(state: bytes, options: dict[str, Any]) -> Index:
    from ..index.trained_state import state_id

    key = state_id(state)
    idx = _ENCODERS.get(key)
    if idx is None:
        for old in _ENCODERS.values():
            old.close()
        _ENCODERS.clear()
        idx = _ENCODERS[key] = Index.create(None, **options).load_trained_state(state)
    return idx


def _task_threads() -> None:
    import numba

    numba.set_num_threads(max(1, min(ENCODE_CPUS, numba.config.NUMBA_NUM_THREADS)))


def encode_part(state: bytes, options: dict[str, Any], x: np.ndarray, ids: np.ndarray, metadata: Any) -> tuple:
    """Task body: the part ``(EncodedVectors, ids, metadata)`` of rows bound for one shard, and its row count
    (a small second output to wait on)."""
    prepare_worker()
    _task_threads()
    return (_encoder(state, options).encode(x), ids, metadata), len(ids)


def read_and_encode(piece: inp.Piece, state: bytes, options: dict[str, Any], shards: int, id_base: int | None,
                    vector_column: str, id_column: str | None, metadata_columns: list[str] | None) -> tuple:
    """Task body: read one piece, encode it, and split it by shard → ``(part, ids) × shards`` (flattened;
    ``part`` is ``None`` for a shard that gets no rows)."""
    prepare_worker()
    _task_threads()
    columns = list(metadata_columns or []) + ([id_column] if id_column else [])
    x, table = inp.read_piece(piece, vector_column, columns)
    if id_column:
        raw = table.column(id_column).to_numpy(zero_copy_only=False)
        if raw.dtype.kind not in "iu" or (raw.dtype.kind == "i" and raw.size and raw.min() < 0):
            raise InvalidInput(f"{piece.path}: id column {id_column!r} must hold non-negative integers")
        ids = raw.astype(np.uint64)
        table = table.drop_columns([id_column])
    else:
        ids = np.arange(id_base + piece.offset, id_base + piece.offset + piece.rows, dtype=np.uint64)
    metadata = table if table is not None and table.num_columns else None
    encoded = _encoder(state, options).encode(x)
    out: list[Any] = []
    for rows in group_by_shard(ids, shards):
        if rows.size:
            out += [(encoded.take(rows), ids[rows], None if metadata is None else metadata.take(rows)), ids[rows]]
        else:
            out += [None, ids[:0]]
    return tuple(out)


def wait_encoded(small_refs: list, timeout: float | None, cancel: list = ()) -> list:
    """Wait for encoding tasks through their small outputs (ids, counts) and return those, so that replicas
    only ever receive finished work: a slow encode fails the write before any shard has seen it (the tasks
    in ``cancel`` are cancelled).  A task's own error (bad input in a file) is raised as that error."""
    ray = require_ray()
    from .errors import ClusterTimeout
    from .replicaset import unwrap

    try:
        return ray.get(list(small_refs), timeout=timeout)
    except ray.exceptions.GetTimeoutError:
        for ref in cancel:
            ray.cancel(ref)
        raise ClusterTimeout(f"encoding did not finish within {timeout:.0f} s; nothing was written") from None
    except ray.exceptions.RayTaskError as exc:
        raise unwrap(exc) from None


def encode_remote(state: Any, options: dict[str, Any], x: Any, ids: np.ndarray, metadata: Any) -> tuple:
    """Submit :func:`encode_part` as a Ray task → ``(part ref, row count ref)``."""
    ray = require_ray()
    task = ray.remote(num_cpus=ENCODE_CPUS, runtime_env=worker_runtime_env(), max_retries=2,
                      num_returns=2)(encode_part)
    return task.remote(state, options, x, ids, metadata)


def add_files(sx: Any, files: Any, *, vector_column: str = "vector", id_column: str | None = "id",
              metadata_columns: list[str] | None = None, train_size: int = TRAIN_SAMPLE,
              timeout: float | None = None) -> int:
    """Bulk-add the rows of ``files`` to the sharded collection ``sx`` (see :meth:`ShardedIndex.add_files`)."""
    ray = require_ray()
    timeout = sx._replicas.timeout if timeout is None else timeout
    t0 = time.perf_counter()
    pieces = inp.plan_pieces(inp.expand_inputs(files))
    total = sum(p.rows for p in pieces)
    if total == 0:
        raise EmptyInput(f"no rows in {files}")
    schema = inp.input_schema(pieces[0])
    if schema is not None:
        if vector_column not in schema.names:
            raise InvalidInput(f"{pieces[0].path} has no vector column {vector_column!r} (columns: {schema.names})")
        if id_column not in schema.names:
            id_column = None
        if metadata_columns is None:
            metadata_columns = [c for c in schema.names if c not in (vector_column, id_column)]
    else:
        id_column, metadata_columns = None, []
    dim = inp.input_dim(pieces[0], vector_column)
    if dim != sx.dim:
        raise DimensionMismatch(f"input vectors have dimension {dim}, the collection {sx.dim}")
    with sx._write_lock:
        if not sx.is_trained:
            sx._train(inp.read_sample(pieces, train_size, vector_column))
        id_base = None if id_column else int(sx._reserve_ids(total)[0])
        state = ray.put(sx.trained_state())
        options = {"dim": sx.dim, "metric": sx.metric, **sx._layout.index_options}
        task = ray.remote(num_cpus=ENCODE_CPUS, runtime_env=worker_runtime_env(), max_retries=2,
                          num_returns=2 * sx.shards)(read_and_encode)
        outputs = [task.remote(p, state, options, sx.shards, id_base, vector_column, id_column, metadata_columns)
                   for p in pieces]
        parts = [[out[2 * s] for out in outputs] for s in range(sx.shards)]
        id_refs = [[out[2 * s + 1] for out in outputs] for s in range(sx.shards)]
        flat = wait_encoded([ref for refs in id_refs for ref in refs], timeout,
                            cancel=[ref for out in outputs for ref in out])
        ids_by_shard = [np.concatenate(flat[s * len(outputs):(s + 1) * len(outputs)]) for s in range(sx.shards)]
        if id_column:  # ids from the files: check them before anything is written
            every = np.concatenate(ids_by_shard)
            if np.unique(every).shape[0] != every.shape[0]:
                raise InvalidInput(f"column {id_column!r} of the input holds duplicate ids")
            sx._refuse_existing(every)
            sx._raise_next_id(int(every.max()) + 1)
        calls = {s: ("write", ("add", parts[s], np.zeros(0, np.uint64), None), {}) for s in range(sx.shards)}
        _, failed = sx._replicas.write(calls, timeout=timeout)
        if failed:  # take the add back from the shards that committed it, then raise
            bounds = np.cumsum([0] + [part.size for part in ids_by_shard])
            groups = [np.arange(bounds[s], bounds[s + 1]) for s in range(sx.shards)]
            sx._undo("add", calls, groups, np.concatenate(ids_by_shard), failed)
    LOG.info("bulk add of %d rows in %d pieces: %.1f s", total, len(pieces), time.perf_counter() - t0)
    return total
