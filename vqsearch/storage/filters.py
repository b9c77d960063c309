"""A small metadata filter language compiled onto ``pyarrow.compute``.

Grammar (JSON-shaped, so it travels unchanged through HTTP)::

    expr  := {}                                  # matches every row
           | {"and": [expr, ...]} | {"or": [expr, ...]} | {"not": expr}
           | {field: value}                      # equality
           | {field: {op: value, ...}}           # several ops on one field are and-ed
           | {key1: ..., key2: ...}              # several keys are and-ed
    op    := eq | ne | gt | gte | lt | lte | in | nin   (in / nin take a list)

Semantics are two-valued: a comparison (eq, gt, gte, lt, lte, in) is false on a
null value, and ``ne`` / ``nin`` / ``not`` are exact negations, so they match
nulls (as in MongoDB or Qdrant's ``must_not``).  Comparisons on integer columns are
exact for any numeric literal (``x < 2.5`` means ``x <= 2``; literals outside the
column's range give constant results), never via a lossy float cast.

Errors are :class:`~vqsearch.errors.InvalidInput` raised at compile time, naming
the unknown field or operator or the mismatched type; evaluation never fails.
"""

from __future__ import annotations

import datetime as _dt
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import InvalidInput
from .config import numpy_dtype
from .schema import type_family

OPERATORS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "nin")
_ORDER_OPS = ("gt", "gte", "lt", "lte")
_MAX_DEPTH = 64
_MAX_IN = 100_000

# A node evaluates to a BooleanArray with no nulls, aligned with the table's rows.
_Node = Callable[[pa.Table], pa.Array]


@dataclass(frozen=True)
class CompiledFilter:
    """A validated filter; ``evaluate(table)`` returns a bool numpy mask."""

    expr: Mapping[str, Any] | None
    fields: frozenset[str]
    _node: _Node | None

    @property
    def is_trivial(self) -> bool:
        """True when the filter matches every row."""
        return self._node is None

    def evaluate(self, table: pa.Table) -> np.ndarray:
        """Bool (num_rows,) mask of rows of ``table`` matching the filter."""
        if self._node is None:
            return np.ones(table.num_rows, dtype=bool)
        out = self._node(table)
        if isinstance(out, pa.ChunkedArray):
            out = out.combine_chunks()
        return np.asarray(out.to_numpy(zero_copy_only=False), dtype=bool)


def compile_filter(expr: Mapping[str, Any] | None, schema: pa.Schema | None) -> CompiledFilter:
    """Validate ``expr`` against the metadata ``schema`` and compile it."""
    if expr is None:
        return CompiledFilter(None, frozenset(), None)
    fields: set[str] = set()
    node = _compile(expr, schema, fields, depth=0)
    return CompiledFilter(expr, frozenset(fields), node)


def _compile(expr: object, schema: pa.Schema | None, fields: set[str], depth: int) -> _Node | None:
    if depth > _MAX_DEPTH:
        raise InvalidInput(f"filter is nested deeper than {_MAX_DEPTH} levels")
    if not isinstance(expr, Mapping):
        raise InvalidInput(f"a filter expression must be an object, got {type(expr).__name__}: {expr!r}")
    nodes: list[_Node | None] = []
    for key, value in expr.items():
        if key in ("and", "or"):
            if not isinstance(value, (list, tuple)):
                raise InvalidInput(f"'{key}' takes a list of filter expressions, got {type(value).__name__}")
            subs = [_compile(v, schema, fields, depth + 1) for v in value]
            nodes.append(_all(subs) if key == "and" else _any(subs))
        elif key == "not":
            nodes.append(_negate(_compile(value, schema, fields, depth + 1)))
        else:
            nodes.append(_field(key, value, schema, fields))
    return _all(nodes)


def _all(nodes: list[_Node | None]) -> _Node | None:
    real = [n for n in nodes if n is not None]  # None = "true"
    if not real:
        return None
    if len(real) == 1:
        return real[0]

    def run(t: pa.Table) -> pa.Array:
        acc = real[0](t)
        for n in real[1:]:
            acc = pc.and_(acc, n(t))
        return acc
    return run


def _any(nodes: list[_Node | None]) -> _Node | None:
    if any(n is None for n in nodes):
        return None
    if not nodes:
        return lambda t: _const(t, False)
    if len(nodes) == 1:
        return nodes[0]

    def run(t: pa.Table) -> pa.Array:
        acc = nodes[0](t)
        for n in nodes[1:]:
            acc = pc.or_(acc, n(t))
        return acc
    return run


def _negate(node: _Node | None) -> _Node:
    if node is None:
        return lambda t: _const(t, False)
    return lambda t: pc.invert(node(t))


def _const(t: pa.Table, value: bool) -> pa.Array:
    return pa.array(np.full(t.num_rows, value))


# --------------------------------------------------------------------- leaves
def _field(name: object, cond: object, schema: pa.Schema | None, fields: set[str]) -> _Node | None:
    if not isinstance(name, str) or schema is None or schema.get_field_index(name) < 0:
        known = ", ".join(schema.names) if schema is not None and len(schema) else "none"
        raise InvalidInput(f"unknown filter field {name!r} (metadata columns: {known})")
    fields.add(name)
    ftype = schema.field(name).type
    kind = _kind(ftype)
    if kind is None:
        raise InvalidInput(f"filter field {name!r} has type {ftype}, which filters do not support")
    if isinstance(cond, Mapping):
        if not cond:
            raise InvalidInput(f"filter on field {name!r} has no operator (use one of {', '.join(OPERATORS)})")
        ops = []
        for op, value in cond.items():
            if op not in OPERATORS:
                raise InvalidInput(f"unknown filter operator {op!r} on field {name!r} "
                                   f"(operators: {', '.join(OPERATORS)})")
            ops.append(_leaf(name, ftype, kind, op, value))
        return _all(ops)
    if isinstance(cond, (list, tuple, set)):
        raise InvalidInput(f"filter on field {name!r}: a list is not a value; use {{'in': [...]}}")
    return _leaf(name, ftype, kind, "eq", cond)


def _kind(t: pa.DataType) -> str | None:
    """Comparable kind of a column type, or None for types filters do not support."""
    family = type_family(t) if not pa.types.is_dictionary(t) else None
    if family in ("timestamp", "date"):
        return "time"
    return family if family in ("int", "float", "str", "bytes", "bool") else None


def _leaf(name: str, ftype: pa.DataType, kind: str, op: str, value: object) -> _Node:
    if op in ("in", "nin"):
        if not isinstance(value, (list, tuple)):
            raise InvalidInput(f"operator {op!r} on field {name!r} takes a list, got {type(value).__name__}")
        if len(value) > _MAX_IN:
            raise InvalidInput(f"operator {op!r} on field {name!r}: at most {_MAX_IN} values")
        node = _is_in(name, ftype, kind, list(value))
        return node if op == "in" else _negate(node)
    if op in _ORDER_OPS and kind == "bool":
        raise InvalidInput(f"operator {op!r} is not defined for boolean field {name!r}")
    if op == "ne":
        return _negate(_leaf(name, ftype, kind, "eq", value))
    if kind == "int":
        return _int_compare(name, ftype, op, _number(name, value))
    scalar = _scalar(name, ftype, kind, value)
    fn = {"eq": pc.equal, "gt": pc.greater, "gte": pc.greater_equal, "lt": pc.less, "lte": pc.less_equal}[op]
    return lambda t: pc.fill_null(fn(t.column(name), scalar), False)


def _number(name: str, value: object) -> int | float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise InvalidInput(f"filter field {name!r} is numeric; got {type(value).__name__} {value!r}")
    if isinstance(value, numbers.Integral):
        return int(value)
    v = float(value)
    if math.isnan(v):
        raise InvalidInput(f"filter field {name!r}: NaN is not a valid comparison value")
    return v


def _scalar(name: str, ftype: pa.DataType, kind: str, value: object) -> pa.Scalar:
    if value is None:
        raise InvalidInput(f"filter field {name!r}: null is not a comparison value")
    if kind == "float":
        return pa.scalar(float(_number(name, value)), type=pa.float64())
    if kind == "str" and isinstance(value, str):
        return pa.scalar(value, type=ftype)
    if kind == "bytes" and isinstance(value, (bytes, bytearray)):
        return pa.scalar(bytes(value), type=ftype)
    if kind == "bool" and isinstance(value, (bool, np.bool_)):
        return pa.scalar(bool(value), type=pa.bool_())
    if kind == "time" and isinstance(value, (str, _dt.date, _dt.datetime)):
        try:
            if isinstance(value, str):
                return pa.array([value]).cast(ftype)[0]
            return pa.scalar(value, type=ftype)
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise InvalidInput(f"filter field {name!r} ({ftype}): cannot use {value!r}: {exc}") from None
    raise InvalidInput(f"filter field {name!r} has type {ftype}; got {type(value).__name__} {value!r}")


def _int_compare(name: str, ftype: pa.DataType, op: str, v: int | float) -> _Node:
    """Exact integer-column comparison against any real literal (see module docstring)."""
    info = np.iinfo(numpy_dtype(ftype))
    if isinstance(v, float) and not float(v).is_integer():
        if op == "eq":
            return lambda t: _const(t, False)
        # x > 2.5 <=> x >= 3 ; x < 2.5 <=> x <= 2
        if op in ("gt", "gte"):
            op, v = "gte", math.ceil(v) if math.isfinite(v) else v
        else:
            op, v = "lte", math.floor(v) if math.isfinite(v) else v
    if isinstance(v, float) and math.isinf(v):
        v = info.max + 1 if v > 0 else info.min - 1
    w = int(v)
    if w > info.max or w < info.min:
        above = w > info.max
        if op == "eq":
            return lambda t: _const(t, False)
        result = (op in ("lt", "lte")) == above  # every non-null value is below (above) the literal
        if result:
            return lambda t: pc.is_valid(t.column(name))
        return lambda t: _const(t, False)
    scalar = pa.scalar(w, type=ftype)
    fn = {"eq": pc.equal, "gt": pc.greater, "gte": pc.greater_equal, "lt": pc.less, "lte": pc.less_equal}[op]
    return lambda t: pc.fill_null(fn(t.column(name), scalar), False)


def _is_in(name: str, ftype: pa.DataType, kind: str, values: list[object]) -> _Node:
    if kind == "int":
        info = np.iinfo(numpy_dtype(ftype))
        keep = []
        for v in values:
            x = _number(name, v)
            if (isinstance(x, int) or x.is_integer()) and info.min <= int(x) <= info.max:
                keep.append(int(x))
        value_set = pa.array(keep, type=ftype)
    elif kind == "float":
        # Compare in float64, like the scalar comparisons, so `in [v]` agrees with `eq v`.
        value_set = pa.array([float(_number(name, v)) for v in values], type=pa.float64())
        if len(value_set) == 0:
            return lambda t: _const(t, False)
        return lambda t: pc.fill_null(pc.is_in(pc.cast(t.column(name), pa.float64()), value_set=value_set), False)
    else:
        value_set = pa.array([_scalar(name, ftype, kind, v) for v in values], type=ftype)
    if len(value_set) == 0:
        return lambda t: _const(t, False)
    return lambda t: pc.fill_null(pc.is_in(t.column(name), value_set=value_set), False)
