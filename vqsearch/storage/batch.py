"""Write batches: everything a commit writes, validated completely before the disk is touched.

A :class:`WriteBatch` holds the rows of one ``write`` (ids, codes, vectors, extras,
metadata) already converted to their storage types, plus the layout the commit will
publish (a write may declare the extra columns or add metadata columns).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa

from .._validation import as_code_matrix
from ..errors import DimensionMismatch, InvalidInput, NonFiniteInput, UnknownIds
from .config import Layout, check_name
from .ids import as_id_array, preview, unique_ids
from .schema import as_extra_columns, as_metadata_table, conform_metadata, without_null_columns
from .segment import take_rows
from .snapshot import Snapshot


@dataclass(frozen=True)
class WriteBatch:
    """Validated rows of one write, in the order they will be stored."""

    layout: Layout
    ids: np.ndarray
    columns: dict[str, np.ndarray]
    vectors: np.ndarray | None
    extra: dict[str, np.ndarray]
    metadata: pa.Table | None

    @property
    def num_rows(self) -> int:
        return int(self.ids.shape[0])

    def clustered(self) -> WriteBatch:
        """The rows sorted (stably) by the layout's ``cluster_by`` column, if it has one."""
        if self.layout.cluster_by is None or self.num_rows < 2:
            return self
        order = np.argsort(self.extra[self.layout.cluster_by], kind="stable")
        ids, columns, vectors, extra, metadata = take_rows(order, self.ids, self.columns, self.vectors,
                                                           self.extra, self.metadata)
        return WriteBatch(self.layout, ids, columns, vectors, extra, metadata)


def validate_batch(layout: Layout, ids: object, columns: object, vectors: object, metadata: object,
                   extra: object) -> WriteBatch:
    """Validate a write batch against ``layout`` (see :meth:`Store.write` for the arguments)."""
    q = unique_ids(as_id_array(ids))
    n = q.shape[0]
    if not isinstance(columns, Mapping):
        raise InvalidInput(f"columns must be a dict name -> uint8 codes, got {type(columns).__name__}")
    if set(columns) != set(layout.code_columns):
        raise InvalidInput(f"code columns {sorted(columns)} do not match the index's {sorted(layout.code_columns)}")
    codes = {}
    for name, size in layout.code_columns.items():
        arr = as_code_matrix(columns[name], code_size=size, name=f"codes of column {name!r}")
        if arr.shape[0] != n:
            raise InvalidInput(f"codes of column {name!r} have {arr.shape[0]} rows, expected {n} (one per id)")
        codes[name] = arr
    vecs = _vectors(layout, vectors, n)
    extras, extra_dtypes = as_extra_columns(extra, n, layout.extra_columns)
    table = as_metadata_table(metadata, n)
    schema = layout.metadata_schema
    if table is not None:
        table, schema = conform_metadata(table, schema)
        if table.num_columns == 0:
            table = None
    if n:  # a non-empty write declares the extras and (if given) the metadata schema
        layout = replace(layout, extra_columns=extra_dtypes if layout.extra_columns is None else layout.extra_columns,
                         metadata_schema=schema)
    return WriteBatch(layout=layout, ids=q, columns=codes, vectors=vecs, extra=extras, metadata=table).clustered()


def _vectors(layout: Layout, vectors: object, n: int) -> np.ndarray | None:
    if layout.vector_dtype is None:
        if vectors is not None:
            raise InvalidInput("this index does not store vectors (vector_dtype=None); pass vectors=None")
        return None
    if vectors is None:
        raise InvalidInput("this index stores vectors: pass vectors (n, dim)")
    arr = np.asarray(vectors)
    if arr.ndim != 2 or arr.dtype.kind != "f":
        raise InvalidInput(f"vectors must be a 2-D float array, got shape {arr.shape} dtype {arr.dtype}")
    if arr.shape[1] != layout.dim:
        raise DimensionMismatch(f"vectors have dimension {arr.shape[1]}, expected {layout.dim}")
    if arr.shape[0] != n:
        raise InvalidInput(f"vectors have {arr.shape[0]} rows, expected {n} (one per id)")
    with np.errstate(over="ignore"):
        vecs = np.ascontiguousarray(arr, dtype=layout.vector_dtype)
    if vecs.size and not np.isfinite(vecs).all():
        raise NonFiniteInput(f"vectors contain NaN or inf (or values beyond the {layout.vector_dtype} range)")
    return vecs


def check_config(config: object) -> dict[str, Any]:
    """The opaque index config as plain JSON (a dict); ``InvalidInput`` if it does not serialise."""
    if not isinstance(config, Mapping):
        raise InvalidInput(f"config must be a JSON object (dict), got {type(config).__name__}")
    try:
        return json.loads(json.dumps(dict(config), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"config is not JSON-serialisable: {exc}") from None


def check_codecs(codecs: object) -> dict[str, str]:
    """Validate the free-form codec label of each code column."""
    if not isinstance(codecs, Mapping) or not all(isinstance(v, str) for v in codecs.values()):
        raise InvalidInput("codecs must be a dict name -> label string")
    return {check_name(k, "codec"): v for k, v in codecs.items()}


def metadata_update_batch(snap: Snapshot, ids: object, values: object) -> tuple[WriteBatch, np.ndarray, np.ndarray]:
    """The rows that :meth:`Store.update_metadata` rewrites, and where their current versions live.

    Each row keeps its codes, vectors and extra columns byte for byte and gets its current
    metadata with the columns of ``values`` replaced (new columns are declared).  Returns
    ``(batch, seg_idx, rows)``: the rewritten rows and the (segment, row) of the rows they
    supersede.  Raises ``UnknownIds`` (listing them) if an id is not live.
    """
    q = unique_ids(as_id_array(ids))
    n = q.shape[0]
    patch = None if isinstance(values, Mapping) and not values else as_metadata_table(values, n)
    if patch is None or patch.num_columns == 0:
        raise InvalidInput("update_metadata needs at least one column: {column: values}")
    patch, schema = conform_metadata(patch, snap.metadata_schema)
    seg_idx, rows = snap.locate(q)
    missing = q[seg_idx < 0]
    if missing.size:
        raise UnknownIds(f"cannot update {missing.size} id(s) that are not present: {preview(missing)}")
    current = snap.get(q)
    old = current.metadata if current.metadata is not None else patch.select([])
    columns = [patch.column(f.name) if f.name in patch.column_names else old.column(f.name) for f in schema]
    metadata = without_null_columns(pa.Table.from_arrays(columns, schema=schema).combine_chunks())
    layout = replace(snap.layout, metadata_schema=schema)
    batch = WriteBatch(layout=layout, ids=current.ids, columns=current.columns, vectors=current.vectors,
                       extra=current.extra, metadata=metadata)
    return batch.clustered(), seg_idx, rows
