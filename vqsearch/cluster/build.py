"""Distributed bulk build: read inputs in parallel tasks, encode in tasks, commit once per shard.

The driver plans pieces from file footers, trains on a sample (once, see :meth:`ShardedIndex.train`) and
submits one task per piece.  A task reads its rows, encodes them with the shipped trained state (encoding,
the trellis Viterbi search above all, is the expensive part of a build, so it scales with the cluster's
cores), routes them by id and returns one part per shard.  Each replica then fetches its shard's parts
straight from the object store and commits them as one atomic write.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DimensionMismatch, EmptyInput, InvalidInput
from ..index import Index
from . import inputs as inp
from .checks import take_meta
from .routing import group_by_shard
from .runtime import prepare_worker, require_ray, worker_runtime_env

#: Vectors the driver trains on in a bulk build (at most).
TRAIN_SAMPLE = 262_144
#: CPUs one encoding task holds (its numba kernels run on as many threads).
ENCODE_CPUS = 1
#: An add of at most this many rows per shard is encoded on the driver; larger ones in Ray tasks.
LOCAL_ENCODE_MAX = 8192
#: Rows per encoding task of a large add.
ENCODE_CHUNK = 32_768

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


@dataclass(frozen=True)
class BulkInput:
    """The planned pieces of a bulk add and the columns read from them (see :func:`plan_input`)."""

    pieces: list
    rows: int
    vector_column: str
    id_column: str | None
    metadata_columns: list[str]


def plan_input(files: Any, dim: int, *, vector_column: str = "vector", id_column: str | None = "id",
               metadata_columns: list[str] | None = None) -> BulkInput:
    """Plan the pieces of ``files`` from their footers and check their columns and dimension; no rows are read.
    A missing ``id_column`` means ids are assigned; ``metadata_columns=None`` takes every other column."""
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
    found = inp.input_dim(pieces[0], vector_column)
    if found != dim:
        raise DimensionMismatch(f"input vectors have dimension {found}, the collection {dim}")
    return BulkInput(pieces, total, vector_column, id_column, list(metadata_columns))


def read_training_sample(plan: BulkInput, size: int) -> np.ndarray:
    """Up to ``size`` vectors drawn from the whole input, for training on the driver."""
    return inp.read_sample(plan.pieces, size, plan.vector_column)


def encode_input(plan: BulkInput, state: Any, options: dict[str, Any], shards: int, id_base: int | None,
                 timeout: float) -> tuple[list[list], list[np.ndarray]]:
    """Read and encode every piece in Ray tasks with the trained ``state`` (an object ref); returns, per shard,
    the refs of its encoded parts and its ids (waited for, so that ids can be checked before any write)."""
    ray = require_ray()
    task = ray.remote(num_cpus=ENCODE_CPUS, runtime_env=worker_runtime_env(), max_retries=2,
                      num_returns=2 * shards)(read_and_encode)
    outputs = [task.remote(p, state, options, shards, id_base, plan.vector_column, plan.id_column,
                           plan.metadata_columns) for p in plan.pieces]
    parts = [[out[2 * s] for out in outputs] for s in range(shards)]
    id_refs = [[out[2 * s + 1] for out in outputs] for s in range(shards)]
    flat = wait_encoded([ref for refs in id_refs for ref in refs], timeout,
                        cancel=[ref for out in outputs for ref in out])
    ids_by_shard = [np.concatenate(flat[s * len(outputs):(s + 1) * len(outputs)]) for s in range(shards)]
    return parts, ids_by_shard


def encode_rows(template: Index, options: dict[str, Any], x: np.ndarray, ids: np.ndarray, metadata: Any,
                state: list) -> Any:
    """Codes of one shard's rows of an ``add``: encoded here with ``template`` when few, else a list of
    (part, row count) refs of Ray tasks (encoded in parallel on the cluster; the replicas fetch them
    directly).  ``state`` caches the trained state's object ref across the shards of one write."""
    if x.shape[0] <= LOCAL_ENCODE_MAX:
        return template.encode(x)
    ray = require_ray()
    if not state:
        state.append(ray.put(template.trained_state()))
    return [encode_remote(state[0], options, ray.put(x[s:s + ENCODE_CHUNK]), ids[s:s + ENCODE_CHUNK],
                          take_meta(metadata, np.arange(s, min(s + ENCODE_CHUNK, x.shape[0]))))
            for s in range(0, x.shape[0], ENCODE_CHUNK)]
