"""Checks of user input on the driver, before anything is sent to a shard (so that bad input fails whole)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import DimensionMismatch, EmptyInput, InvalidInput, NonFiniteInput


def as_vectors(vectors: object, dim: int, name: str = "vectors") -> np.ndarray:
    x = np.asarray(vectors)
    if x.ndim == 1 and name == "queries":
        x = x.reshape(1, -1)
    if x.ndim != 2 or x.dtype.kind not in "fiu":
        raise InvalidInput(f"{name} must be a numeric 2-D array (n, {dim}), got shape {x.shape} dtype {x.dtype}")
    if x.shape[0] == 0:
        raise EmptyInput(f"no {name}")
    if x.shape[1] != dim:
        raise DimensionMismatch(f"{name} have dimension {x.shape[1]}, expected {dim}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise NonFiniteInput(f"{name} contain NaN or inf (or values beyond the float32 range)")
    return x


def as_metadata(metadata: object, n: int) -> Any:
    """User metadata as a ``pyarrow.Table`` of ``n`` rows (the shards validate its columns)."""
    if metadata is None:
        return None
    import pyarrow as pa

    try:
        if isinstance(metadata, pa.Table):
            table = metadata
        elif isinstance(metadata, pa.RecordBatch):
            table = pa.Table.from_batches([metadata])
        elif isinstance(metadata, dict):
            table = pa.table({k: (np.asarray(v) if isinstance(v, np.ndarray) else v) for k, v in metadata.items()})
        elif type(metadata).__module__.startswith("pandas") and hasattr(metadata, "columns"):
            table = pa.Table.from_pandas(metadata, preserve_index=False)
        else:
            raise InvalidInput("metadata must be a pyarrow Table/RecordBatch, a dict of columns or a pandas "
                               f"DataFrame, got {type(metadata).__name__}")
    except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
        if isinstance(exc, InvalidInput):
            raise
        raise InvalidInput(f"metadata could not be converted to Arrow: {exc}") from None
    if table.num_rows != n:
        raise InvalidInput(f"metadata has {table.num_rows} rows, expected {n} (one per id)")
    return table


def take_meta(table: Any, rows: np.ndarray) -> Any:
    return None if table is None else table.take(rows)


def null_table(n: int) -> Any:
    import pyarrow as pa

    return pa.table({"_": pa.nulls(n)}).select([])


def preview(ids: np.ndarray, limit: int = 10) -> str:
    shown = ", ".join(str(int(i)) for i in ids[:limit])
    return f"[{shown}{', ...' if ids.size > limit else ''}]"
