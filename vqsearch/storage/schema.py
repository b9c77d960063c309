"""Validation and normalisation of per-row user metadata and extra columns.

User metadata arrives as a pyarrow Table/RecordBatch, a dict of columns or a
pandas DataFrame.  Each column's type is normalised so that equivalent inputs map
to one storage type: dictionary columns are decoded, ``string``/``binary`` become
``large_string``/``large_binary`` (no 2 GiB offset limit), schema metadata (e.g.
pandas') is dropped.

The schema evolves by addition only: a write may carry any subset of the declared
columns (the others are null for its rows) plus new columns, which are appended to
the schema as nullable fields (rows written earlier read them as null).  A declared
column keeps its type: values are cast to it only within a type family (integers to
integers or floats, strings to strings ...) and only when no value changes,
otherwise :class:`~vqsearch.errors.InvalidInput` names the column.

Column names are free-form strings, except ``and``/``or``/``not`` (filter keywords)
and ``id`` (the row id, a filter field of its own).  :data:`TEXT_COLUMN` is the
conventional column in which text collections keep their documents.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pyarrow as pa

from ..errors import InvalidInput
from .config import EXTRA_DTYPES, check_name

#: Filter-language keywords and the row id's filter field: never metadata column names.
RESERVED_FIELDS = frozenset({"and", "or", "not", "id"})
#: The metadata column in which a text collection keeps its documents (an ordinary ``large_string``
#: column: filterable, returned by ``include``, updatable with ``update_metadata``).
TEXT_COLUMN = "text"


def _storage_type(t: pa.DataType, name: str) -> pa.DataType:
    if pa.types.is_dictionary(t):
        return _storage_type(t.value_type, name)
    if pa.types.is_null(t):
        raise InvalidInput(f"metadata column {name!r} has no type (all values are null); pass a pyarrow "
                           "Table with an explicit type for it")
    if pa.types.is_string(t):
        return pa.large_string()
    if pa.types.is_binary(t):
        return pa.large_binary()
    return t


def _check_field_name(name: object) -> str:
    if not isinstance(name, str) or not name or len(name) > 256:
        raise InvalidInput(f"metadata column name {name!r} must be a non-empty string of at most 256 characters")
    if name in RESERVED_FIELDS:
        what = "the row id (pass ids separately)" if name == "id" else "the filter language"
        raise InvalidInput(f"metadata column name {name!r} is reserved for {what}")
    return name


def normalize_schema(schema: pa.Schema) -> pa.Schema:
    """The storage form of a user metadata schema (see module docstring)."""
    names = [_check_field_name(f.name) for f in schema]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise InvalidInput(f"metadata has duplicate column names: {dup}")
    return pa.schema([pa.field(f.name, _storage_type(f.type, f.name), nullable=True) for f in schema])


def as_metadata_table(metadata: object, n: int) -> pa.Table | None:
    """Convert user metadata to a pyarrow Table with ``n`` rows (or ``None``)."""
    if metadata is None:
        return None
    try:
        if isinstance(metadata, pa.Table):
            table = metadata
        elif isinstance(metadata, pa.RecordBatch):
            table = pa.Table.from_batches([metadata])
        elif isinstance(metadata, Mapping):
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
    return table.replace_schema_metadata(None)


def type_family(t: pa.DataType) -> str:
    """Coarse type family of an Arrow type (int, float, str, bytes, bool, null, timestamp, date, ...)."""
    if pa.types.is_dictionary(t):
        return type_family(t.value_type)
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "str"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "bytes"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_null(t):
        return "null"
    if pa.types.is_timestamp(t):
        return "timestamp"
    if pa.types.is_date(t):
        return "date"
    return str(t)


def conform_metadata(table: pa.Table, declared: pa.Schema | None) -> tuple[pa.Table, pa.Schema]:
    """Cast ``table``'s columns to their declared types, declaring the columns the schema lacks.

    Returns ``(table, schema)``: the table holds the given columns only, cast and in schema
    order; ``schema`` is ``declared`` with any new columns appended (nullable).  Columns of
    ``declared`` that ``table`` omits are not added: readers see them as null for these rows.
    """
    got = table.column_names
    if len(set(got)) != len(got):
        dup = sorted({n for n in got if got.count(n) > 1})
        raise InvalidInput(f"metadata has duplicate column names: {dup}")
    known = set() if declared is None else set(declared.names)
    new_fields = [f for f in table.schema if f.name not in known]
    schema = declared
    if new_fields:
        added = normalize_schema(pa.schema(new_fields))
        schema = added if declared is None else pa.schema(list(declared) + list(added))
    columns, fields = [], []
    for field in schema:
        if field.name not in got:
            continue
        col = table.column(field.name)
        src, dst = col.type, field.type
        if src != dst:
            fs, fd = type_family(src), type_family(dst)
            if not (fs == fd or fs == "null" or (fs == "int" and fd == "float")):
                raise InvalidInput(f"metadata column {field.name!r} has type {src}, expected {dst}")
            try:
                col = col.cast(dst, safe=True)
            except (pa.ArrowException, TypeError, ValueError) as exc:
                raise InvalidInput(f"metadata column {field.name!r}: cannot convert {src} to {dst}: {exc}") from None
        columns.append(col)
        fields.append(field)
    if not columns:
        return table.select([]), schema
    out = pa.Table.from_arrays(columns, schema=pa.schema(fields)).combine_chunks()
    return out, schema


def without_null_columns(table: pa.Table | None) -> pa.Table | None:
    """``table`` without its all-null columns (``None`` if none is left): readers see absent columns as null."""
    if table is None:
        return None
    keep = [c for c in table.column_names if table.column(c).null_count < table.num_rows]
    return table.select(keep) if keep else None


def as_extra_columns(extra: object, n: int,
                     declared: dict[str, str] | None) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Validate per-row extra columns; declare their dtypes from this batch when ``declared`` is None."""
    if extra is None:
        extra = {}
    if not isinstance(extra, Mapping):
        raise InvalidInput(f"extra must be a dict name -> 1-D array, got {type(extra).__name__}")
    if declared is not None and set(extra) != set(declared):
        raise InvalidInput(f"extra columns {sorted(extra)} do not match the declared {sorted(declared)}")
    out: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}
    for name in (declared if declared is not None else extra):
        check_name(name, "extra column")
        arr = np.asarray(extra[name])
        if arr.ndim != 1 or arr.shape[0] != n:
            raise InvalidInput(f"extra column {name!r} must have shape ({n},), got {arr.shape}")
        if declared is None:
            if arr.dtype.name not in EXTRA_DTYPES:
                raise InvalidInput(f"extra column {name!r}: dtype {arr.dtype} is not one of {sorted(EXTRA_DTYPES)}")
            dst = arr.dtype
        else:
            dst = np.dtype(declared[name])
            if arr.dtype != dst:
                ok = (arr.dtype.kind in "iu" and dst.kind in "iuf") or (arr.dtype.kind == "f" == dst.kind)
                if not ok:
                    raise InvalidInput(f"extra column {name!r} has dtype {arr.dtype}, expected {dst}")
                if dst.kind in "iu" and arr.size:
                    info = np.iinfo(dst)
                    if arr.min() < info.min or arr.max() > info.max:
                        raise InvalidInput(f"extra column {name!r}: values out of range for {dst}")
        out[name] = np.ascontiguousarray(arr, dtype=dst)
        dtypes[name] = dst.name
    return out, dtypes
