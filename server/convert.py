"""Conversions between wire formats (JSON lists, Arrow IPC streams) and the Index's numpy/Arrow inputs.

Blocking functions; the routers run them in worker threads.  Every problem with the
input becomes a typed 4xx error naming the collection and the offending column.
"""

from __future__ import annotations

import base64
import datetime as _dt
import decimal
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import DimensionMismatch, EmptyInput, NonFiniteInput
from .arrow_body import read_stream
from .errors import InvalidArrow
from .registry import Collection

ID_COLUMN = "id"
VECTOR_COLUMN = "vector"
TEXT_COLUMN = "text"


#: Largest accepted vector component: keeps squared norms finite in float32 for any dimension ≤ 65,536
#: (embeddings are O(1); beyond this the index's float32 norms would overflow).
MAX_ABS_VALUE = 1e15


def check_magnitude(x: np.ndarray, what: str) -> np.ndarray:
    """Reject components beyond ±MAX_ABS_VALUE (inf included); NaN is left to the caller's check."""
    big = np.abs(x) > MAX_ABS_VALUE
    if big.any():
        row = int(np.flatnonzero(big.any(axis=1))[0])
        raise NonFiniteInput(f"{what} contain values beyond ±{MAX_ABS_VALUE:g} or infinite (first bad row: {row})")
    return x


def vectors_from_json(c: Collection, rows: Sequence[Sequence[float]], what: str = "vectors") -> np.ndarray:
    """JSON rows → float32 (n, dim), with the contract's dimension message."""
    dim = c.dim
    for row in rows:
        if len(row) != dim:
            raise DimensionMismatch(f"collection '{c.name}' has dim {dim}, got {len(row)}")
    if not rows:
        raise EmptyInput(f"no {what} given")
    with np.errstate(over="ignore", invalid="ignore"):  # overflow → inf → rejected below
        x = np.asarray(rows, dtype=np.float32).reshape(len(rows), dim)
    return check_magnitude(x, what)


def embed_texts(c: Collection, texts: list[str]) -> np.ndarray:
    return c.embedder().encode(list(texts))


def read_arrow_stream(c: Collection, path: Path, max_bytes: int) -> tuple[np.ndarray, np.ndarray | list[str],
                                                                          pa.Table | None]:
    """Decode a spooled Arrow IPC stream into (ids uint64, vectors float32 (n, dim) or texts, metadata).

    The stream has an ``id`` integer column, a ``vector`` ``FixedSizeList<float>[dim]`` column (or, for
    a collection with an embedder, a ``text`` string column), and any other columns as metadata.  The
    schema is checked before any batch is read, and at most ``max_bytes`` are decompressed.
    """
    with pa.memory_map(str(path)) as source:
        table = read_stream(source, max_bytes, lambda schema: _check_schema(c, schema))
    try:
        return _decode(c, table)
    except pa.ArrowException as exc:  # validated already; this is a last line of defence
        raise InvalidArrow(f"body is not a valid Arrow IPC stream: {exc}") from None


def _check_schema(c: Collection, schema: pa.Schema) -> None:
    names = schema.names
    if len(set(names)) != len(names):
        raise InvalidArrow(f"duplicate column names in the stream: {names}")
    if ID_COLUMN not in names:
        raise InvalidArrow(f"the stream needs an '{ID_COLUMN}' column (uint64); columns: {names}")
    t = schema.field(ID_COLUMN).type
    if not pa.types.is_integer(t):
        raise InvalidArrow(f"column '{ID_COLUMN}' must be an integer type (uint64), got {t}")
    if VECTOR_COLUMN in names:
        t = schema.field(VECTOR_COLUMN).type
        if not pa.types.is_fixed_size_list(t) or not pa.types.is_floating(t.value_type):
            raise InvalidArrow(f"column '{VECTOR_COLUMN}' must be FixedSizeList<float32>[{c.dim}], got {t}")
        if t.list_size != c.dim:
            raise DimensionMismatch(f"collection '{c.name}' has dim {c.dim}, got {t.list_size}")
    elif TEXT_COLUMN in names and c.embedder_name is not None:
        t = schema.field(TEXT_COLUMN).type
        if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
            raise InvalidArrow(f"column '{TEXT_COLUMN}' must be non-null strings, got {t}")
    else:
        want = f"'{VECTOR_COLUMN}'" + (f" or '{TEXT_COLUMN}'" if c.embedder_name else "")
        raise InvalidArrow(f"the stream needs a {want} column; columns: {names}")


def _decode(c: Collection, table: pa.Table) -> tuple[np.ndarray, np.ndarray | list[str], pa.Table | None]:
    names = table.column_names
    if table.num_rows == 0:
        raise EmptyInput("the Arrow stream has no rows")
    ids = _ids(table.column(ID_COLUMN))
    data: np.ndarray | list[str]
    if VECTOR_COLUMN in names:
        data = _vectors(c, table.column(VECTOR_COLUMN))
        used = [ID_COLUMN, VECTOR_COLUMN]
    else:
        col = table.column(TEXT_COLUMN)
        if col.null_count:
            raise InvalidArrow(f"column '{TEXT_COLUMN}' must be non-null strings, got {col.null_count} null(s)")
        data = col.to_pylist()
        used = [ID_COLUMN, TEXT_COLUMN]
    meta = table.drop_columns(used)
    return ids, data, (meta if meta.num_columns else None)


def _ids(col: pa.ChunkedArray) -> np.ndarray:
    if not pa.types.is_integer(col.type):
        raise InvalidArrow(f"column '{ID_COLUMN}' must be an integer type (uint64), got {col.type}")
    if col.null_count:
        raise InvalidArrow(f"column '{ID_COLUMN}' has {col.null_count} null(s)")
    if len(col) and pa.types.is_signed_integer(col.type) and pc.min(col).as_py() < 0:
        raise InvalidArrow(f"column '{ID_COLUMN}' has negative ids")
    ids = np.asarray(col.to_numpy(), dtype=np.uint64)
    if ids.size and int(ids.max()) >= 1 << 63:
        raise InvalidArrow(f"column '{ID_COLUMN}': ids must be below 2^63")
    return ids


def _vectors(c: Collection, col: pa.ChunkedArray) -> np.ndarray:
    t = col.type
    if not pa.types.is_fixed_size_list(t) or not pa.types.is_floating(t.value_type):
        raise InvalidArrow(f"column '{VECTOR_COLUMN}' must be FixedSizeList<float32>[{c.dim}], got {t}")
    if t.list_size != c.dim:
        raise DimensionMismatch(f"collection '{c.name}' has dim {c.dim}, got {t.list_size}")
    if col.null_count:
        raise InvalidArrow(f"column '{VECTOR_COLUMN}' has {col.null_count} null vector(s)")
    arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    flat = arr.flatten()  # honours slicing offsets
    if flat.null_count:
        raise InvalidArrow(f"column '{VECTOR_COLUMN}' has null values inside vectors")
    with np.errstate(over="ignore", invalid="ignore"):
        x = np.asarray(flat.to_numpy(zero_copy_only=False), dtype=np.float32)
    return check_magnitude(x.reshape(len(arr), c.dim), "vectors")


def jsonable(value: Any) -> Any:
    """A metadata value as strict JSON: NaN/inf → null, bytes → base64, dates → ISO 8601."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return str(value)


def metadata_rows(table: pa.Table) -> list[dict[str, Any]]:
    """Rows of an Arrow table as JSON-safe dicts."""
    return [{k: jsonable(v) for k, v in row.items()} for row in table.to_pylist()]

