"""A small metadata filter language compiled onto ``pyarrow.compute``.

Grammar (JSON-shaped, so it travels unchanged through HTTP)::

    expr  := {}                                  # matches every row
           | {"and": [expr, ...]} | {"or": [expr, ...]} | {"not": expr}
           | {field: value}                      # equality
           | {field: {op: value, ...}}           # several ops on one field are and-ed
           | {key1: ..., key2: ...}              # several keys are and-ed
    field := a metadata column | "id"            # "id" is the row id (uint64), always filterable
    op    := eq | ne | gt | gte | lt | lte       # comparisons with one value
           | in | nin                            # a list of values
           | contains                            # list column: some element equals the value;
                                                 # string column: the value is a substring
           | prefix                              # string column: starts with the value
           | is_null                             # true: the value is null; false: it is not

Semantics are two-valued: a comparison (eq, gt, gte, lt, lte, in, contains, prefix) is
false on a null value, and ``ne`` / ``nin`` / ``not`` are exact negations, so they match
nulls (as in MongoDB or Qdrant's ``must_not``).  ``is_null`` tests Arrow nulls (a float
NaN is a value, not a null) and works on every column type.  Comparisons on integer
columns (and on ``id``) are exact for any numeric literal (``x < 2.5`` means ``x <= 2``;
literals outside the column's range give constant results), never via a lossy float
cast.  A numeric literal must lie within the float64 range (about ±1.8e308, infinities
allowed); a larger one is rejected rather than silently clamped.

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

#: The filter field that names the row id (never a metadata column).
ID_FIELD = "id"
OPERATORS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "nin", "contains", "prefix", "is_null")
_ORDER_OPS = ("gt", "gte", "lt", "lte")
_COMPARE = {"eq": pc.equal, "gt": pc.greater, "gte": pc.greater_equal, "lt": pc.less, "lte": pc.less_equal}
_MAX_DEPTH = 64
_MAX_IN = 100_000
_MAX_CONDITIONS = 10_000

Column = pa.Array | pa.ChunkedArray
#: A predicate maps a column to a BooleanArray with no nulls.
_Pred = Callable[[Column], pa.Array]


class _Rows:
    """What a node reads: one segment's metadata table and (only if the filter uses ``id``) its ids."""

    __slots__ = ("table", "ids", "num_rows")

    def __init__(self, table: pa.Table, ids: np.ndarray | None) -> None:
        self.table = table
        self.ids = ids
        self.num_rows = table.num_rows


# A node evaluates to a BooleanArray with no nulls, aligned with the rows.
_Node = Callable[[_Rows], pa.Array]


@dataclass(frozen=True)
class CompiledFilter:
    """A validated filter; ``evaluate(table, ids)`` returns a bool numpy mask.

    ``fields`` are the metadata columns it reads (pass a table holding at least those);
    ``needs_ids`` says whether it reads the row ids.
    """

    expr: Mapping[str, Any] | None
    fields: frozenset[str]
    needs_ids: bool
    _node: _Node | None

    @property
    def is_trivial(self) -> bool:
        """True when the filter matches every row."""
        return self._node is None

    def evaluate(self, table: pa.Table, ids: np.ndarray | None = None) -> np.ndarray:
        """Bool (num_rows,) mask of rows of ``table`` (with row ids ``ids``) matching the filter."""
        if self._node is None:
            return np.ones(table.num_rows, dtype=bool)
        if self.needs_ids and (ids is None or len(ids) != table.num_rows):
            raise InvalidInput("this filter tests 'id': pass the rows' ids (one per table row)")
        out = self._node(_Rows(table, ids))
        if isinstance(out, pa.ChunkedArray):
            out = out.combine_chunks()
        return np.asarray(out.to_numpy(zero_copy_only=False), dtype=bool)


def compile_filter(expr: Mapping[str, Any] | None, schema: pa.Schema | None) -> CompiledFilter:
    """Validate ``expr`` against the metadata ``schema`` and compile it."""
    if expr is None:
        return CompiledFilter(None, frozenset(), False, None)
    fields: set[str] = set()
    budget = [_MAX_CONDITIONS]
    node = _compile(expr, schema, fields, depth=0, budget=budget)
    needs_ids = ID_FIELD in fields
    return CompiledFilter(expr, frozenset(fields - {ID_FIELD}), needs_ids, node)


def _compile(expr: object, schema: pa.Schema | None, fields: set[str], depth: int, budget: list[int]) -> _Node | None:
    if depth > _MAX_DEPTH:
        raise InvalidInput(f"filter is nested deeper than {_MAX_DEPTH} levels")
    if not isinstance(expr, Mapping):
        raise InvalidInput(f"a filter expression must be an object, got {type(expr).__name__}: {expr!r}")
    nodes: list[_Node | None] = []
    for key, value in expr.items():
        budget[0] -= 1
        if budget[0] < 0:
            raise InvalidInput(f"filter has more than {_MAX_CONDITIONS} conditions")
        if key in ("and", "or"):
            if not isinstance(value, (list, tuple)):
                raise InvalidInput(f"'{key}' takes a list of filter expressions, got {type(value).__name__}")
            subs = [_compile(v, schema, fields, depth + 1, budget) for v in value]
            nodes.append(_all(subs) if key == "and" else _any(subs))
        elif key == "not":
            nodes.append(_negate(_compile(value, schema, fields, depth + 1, budget)))
        else:
            nodes.append(_field(key, value, schema, fields))
    return _all(nodes)


def _all(nodes: list[_Node | None]) -> _Node | None:
    real = [n for n in nodes if n is not None]  # None = "true"
    if not real:
        return None
    if len(real) == 1:
        return real[0]

    def run(t: _Rows) -> pa.Array:
        acc = real[0](t)
        for n in real[1:]:
            acc = pc.and_(acc, n(t))
        return acc
    return run


def _any(nodes: list[_Node | None]) -> _Node | None:
    if any(n is None for n in nodes):
        return None
    if not nodes:
        return lambda t: _const(t.num_rows, False)
    if len(nodes) == 1:
        return nodes[0]

    def run(t: _Rows) -> pa.Array:
        acc = nodes[0](t)
        for n in nodes[1:]:
            acc = pc.or_(acc, n(t))
        return acc
    return run


def _negate(node: _Node | None) -> _Node:
    if node is None:
        return lambda t: _const(t.num_rows, False)
    return lambda t: pc.invert(node(t))


def _const(n: int, value: bool) -> pa.Array:
    return pa.array(np.full(n, value))


def _not(pred: _Pred) -> _Pred:
    return lambda col: pc.invert(pred(col))


def _false(col: Column) -> pa.Array:
    return _const(len(col), False)


def _strict(fn: Callable[[Column], Column]) -> _Pred:
    """A predicate from a compute call whose result is null on null input (null → false)."""
    return lambda col: pc.fill_null(fn(col), False)


# --------------------------------------------------------------------- fields
def _field(name: object, cond: object, schema: pa.Schema | None, fields: set[str]) -> _Node | None:
    if name == ID_FIELD:
        ftype: pa.DataType = pa.uint64()

        def get(t: _Rows) -> Column:
            return pa.array(t.ids)
    else:
        if not isinstance(name, str) or schema is None or schema.get_field_index(name) < 0:
            known = ", ".join(schema.names) if schema is not None and len(schema) else "none"
            raise InvalidInput(f"unknown filter field {name!r} (metadata columns: {known}; and '{ID_FIELD}')")
        ftype = schema.field(name).type

        def get(t: _Rows) -> Column:
            return t.table.column(name)
    fields.add(name)
    if isinstance(cond, Mapping):
        if not cond:
            raise InvalidInput(f"filter on field {name!r} has no operator (use one of {', '.join(OPERATORS)})")
        preds = []
        for op, value in cond.items():
            if op not in OPERATORS:
                raise InvalidInput(f"unknown filter operator {op!r} on field {name!r} "
                                   f"(operators: {', '.join(OPERATORS)})")
            preds.append(_predicate(name, ftype, op, value))
    elif isinstance(cond, (list, tuple, set)):
        raise InvalidInput(f"filter on field {name!r}: a list is not a value; use {{'in': [...]}} "
                           "(or {'contains': value} on a list column)")
    else:
        preds = [_predicate(name, ftype, "eq", cond)]

    def node(t: _Rows) -> pa.Array:
        col = get(t)
        acc = preds[0](col)
        for p in preds[1:]:
            acc = pc.and_(acc, p(col))
        return acc
    return node


def _kind(t: pa.DataType) -> str | None:
    """Comparable kind of a column type ("list" for lists of a comparable kind), or None."""
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return "list" if _kind(t.value_type) not in (None, "list") else None
    family = type_family(t) if not pa.types.is_dictionary(t) else None
    if family in ("timestamp", "date"):
        return "time"
    return family if family in ("int", "float", "str", "bytes", "bool") else None


def _predicate(name: str, ftype: pa.DataType, op: str, value: object) -> _Pred:
    """The predicate of one ``{op: value}`` condition on a column of type ``ftype``."""
    if op == "is_null":
        if not isinstance(value, (bool, np.bool_)):
            raise InvalidInput(f"operator 'is_null' on field {name!r} takes true or false, got {value!r}")
        return (lambda col: pc.is_null(col)) if value else (lambda col: pc.is_valid(col))
    kind = _kind(ftype)
    if kind is None:
        raise InvalidInput(f"filter field {name!r} has type {ftype}, which filters support only with 'is_null'")
    if kind == "list":
        if op != "contains":
            raise InvalidInput(f"filter field {name!r} is a list ({ftype}): use 'contains' or 'is_null', not {op!r}")
        return _list_contains(_predicate(f"{name}[]", ftype.value_type, "eq", value))
    if op == "contains":
        if kind != "str" or not isinstance(value, str):
            raise InvalidInput(f"operator 'contains' on field {name!r} ({ftype}) needs a list column, or a string "
                               f"column and a string value; got {type(value).__name__} {value!r}")
        return _strict(lambda col: pc.match_substring(col, value))
    if op == "prefix":
        if kind not in ("str", "bytes") or not isinstance(value, str if kind == "str" else (bytes, bytearray)):
            raise InvalidInput(f"operator 'prefix' on field {name!r} ({ftype}) needs a string column and a "
                               f"string value; got {type(value).__name__} {value!r}")
        return _strict(lambda col: pc.starts_with(col, value if isinstance(value, str) else bytes(value)))
    if op in ("in", "nin"):
        if not isinstance(value, (list, tuple)):
            raise InvalidInput(f"operator {op!r} on field {name!r} takes a list, got {type(value).__name__}")
        if len(value) > _MAX_IN:
            raise InvalidInput(f"operator {op!r} on field {name!r}: at most {_MAX_IN} values")
        pred = _is_in(name, ftype, kind, list(value))
        return pred if op == "in" else _not(pred)
    if op in _ORDER_OPS and kind == "bool":
        raise InvalidInput(f"operator {op!r} is not defined for boolean field {name!r}")
    if op == "ne":
        return _not(_predicate(name, ftype, "eq", value))
    if kind == "int":
        return _int_compare(ftype, op, _number(name, value))
    scalar = _scalar(name, ftype, kind, value)
    fn = _COMPARE[op]
    return _strict(lambda col: fn(col, scalar))


def _list_contains(element: _Pred) -> _Pred:
    """Some element of the row's list satisfies ``element`` (null and empty lists: false)."""
    def pred(col: Column) -> pa.Array:
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks()
        out = np.zeros(len(col), dtype=bool)
        values = pc.list_flatten(col)
        if len(values):
            hit = np.asarray(element(values).to_numpy(zero_copy_only=False), dtype=bool)
            parents = pc.list_parent_indices(col).to_numpy()
            out[parents[hit]] = True
        return pa.array(out)
    return pred


def _number(name: str, value: object) -> int | float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise InvalidInput(f"filter field {name!r} is numeric; got {type(value).__name__} {value!r}")
    try:
        as_float = float(value)
    except OverflowError:
        raise InvalidInput(f"filter field {name!r}: the number {_short(value)} is out of range "
                           "(beyond the float64 range, about ±1.8e308)") from None
    if math.isnan(as_float):
        raise InvalidInput(f"filter field {name!r}: NaN is not a valid comparison value")
    return int(value) if isinstance(value, numbers.Integral) else as_float


def _short(value: object) -> str:
    text = str(value)
    return text if len(text) <= 40 else f"{text[:20]}...{text[-10:]} ({len(text)} digits)"


def _scalar(name: str, ftype: pa.DataType, kind: str, value: object) -> pa.Scalar:
    if value is None:
        raise InvalidInput(f"filter field {name!r}: null is not a comparison value (use {{'is_null': true}})")
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
        except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
            raise InvalidInput(f"filter field {name!r} ({ftype}): cannot use {value!r}: {exc}") from None
    raise InvalidInput(f"filter field {name!r} has type {ftype}; got {type(value).__name__} {value!r}")


def _int_compare(ftype: pa.DataType, op: str, v: int | float) -> _Pred:
    """Exact integer-column comparison against any real literal (see module docstring)."""
    info = np.iinfo(numpy_dtype(ftype))
    if isinstance(v, float) and not float(v).is_integer():
        if op == "eq":
            return _false
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
            return _false
        if (op in ("lt", "lte")) == above:  # every non-null value is below (above) the literal
            return lambda col: pc.is_valid(col)
        return _false
    scalar = pa.scalar(w, type=ftype)
    fn = _COMPARE[op]
    return _strict(lambda col: fn(col, scalar))


def _is_in(name: str, ftype: pa.DataType, kind: str, values: list[object]) -> _Pred:
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
            return _false
        return _strict(lambda col: pc.is_in(pc.cast(col, pa.float64()), value_set=value_set))
    else:
        value_set = pa.array([_scalar(name, ftype, kind, v) for v in values], type=ftype)
    if len(value_set) == 0:
        return _false
    return _strict(lambda col: pc.is_in(col, value_set=value_set))
