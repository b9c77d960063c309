"""Filter language: random predicates against a pure-Python reference, and typed errors."""

from __future__ import annotations

import datetime as dt
import math
import random

import numpy as np
import pyarrow as pa
import pytest

from vqsearch.errors import InvalidInput
from vqsearch.storage import compile_filter

N = 400


def make_table(seed: int = 7) -> pa.Table:
    r = random.Random(seed)

    def maybe(v):
        return None if r.random() < 0.1 else v

    return pa.table({
        "i": pa.array([maybe(r.randint(-20, 20)) for _ in range(N)], pa.int64()),
        "u": pa.array([maybe(r.choice([0, 1, 2, 127, 128, 254, 255])) for _ in range(N)], pa.uint8()),
        "big": pa.array([maybe(r.choice([0, 2**53 + 1, 2**63, 2**64 - 1])) for _ in range(N)], pa.uint64()),
        "f": pa.array([maybe(r.choice([-1.5, 0.0, 0.1, 2.5, 3.0, math.nan, math.inf])) for _ in range(N)],
                      pa.float64()),
        "h": pa.array([maybe(r.choice([0.1, 0.5, -2.0])) for _ in range(N)], pa.float32()),
        "s": pa.array([maybe(r.choice(["a", "b", "ab", "", "é", "z"])) for _ in range(N)], pa.large_string()),
        "b": pa.array([maybe(r.random() < 0.5) for _ in range(N)], pa.bool_()),
        "tags": pa.array([maybe([maybe(r.choice(["py", "python", "x", "é"])) for _ in range(r.randint(0, 3))])
                          for _ in range(N)], pa.list_(pa.large_string())),
        "nums": pa.array([maybe([r.choice([0, 7, 2**40]) for _ in range(r.randint(0, 2))]) for _ in range(N)],
                         pa.large_list(pa.int64())),
    })


#: Row ids of the test table: unsorted, spread over the whole uint64 range.
IDS = np.random.default_rng(5).choice(np.array([0, 1, 2, 5, 2**53 + 1, 2**63, 2**64 - 1], np.uint64), N)


LITERALS = {
    "i": [-21, -3, 0, 5, 20, 21, 2.5, -0.5, 1e30, -math.inf, math.inf],
    "u": [-1, 0, 1, 127, 128, 255, 256, 127.5, 2**70],
    "big": [0, 2**53, 2**53 + 1, 2**63, 2**64 - 1, 2**64, 1.5],
    "f": [-1.5, 0.0, 0.1, 2, 2.5, 3, math.inf, -math.inf],
    "h": [0.1, 0.5, -2, 1e-9],
    "s": ["a", "ab", "", "b", "é", "zz"],
    "b": [True, False],
    "id": [0, 1, 2, 3, 5, 2**53 + 1, 2**63, 2**64 - 1, 2**64, -1, 2.5],
}
LIST_LITERALS = {"tags": ["py", "python", "x", "é", "none"], "nums": [0, 7, 2**40, -1]}
STRING_PARTS = ["", "a", "b", "é", "ab", "z"]


def reference(expr, row: dict) -> bool:
    """Pure-Python semantics: comparisons are false on null; ne / nin / not are negations."""
    result = True
    for key, value in expr.items():
        if key == "and":
            ok = all(reference(e, row) for e in value)
        elif key == "or":
            ok = any(reference(e, row) for e in value)
        elif key == "not":
            ok = not reference(value, row)
        else:
            cond = value if isinstance(value, dict) else {"eq": value}
            ok = all(_ref_op(row[key], op, v, key) for op, v in cond.items())
        result = result and ok
    return result


def _ref_op(x, op, v, field) -> bool:
    if op == "ne":
        return not _ref_op(x, "eq", v, field)
    if op == "nin":
        return not _ref_op(x, "in", v, field)
    if op == "is_null":
        return (x is None) == v
    if x is None:
        return False
    if op == "contains":
        return v in x if isinstance(x, str) else any(e is not None and e == v for e in x)
    if op == "prefix":
        return x.startswith(v)
    if field == "h":  # float32 column: compare its exact stored value, like pyarrow does in float64
        x = float(np.float32(x))
    if op == "in":
        return any(x == w for w in v)
    return {"eq": x == v, "gt": x > v, "gte": x >= v, "lt": x < v, "lte": x <= v}[op]


def random_expr(r: random.Random, depth: int = 0) -> dict:
    roll = r.random()
    if depth < 3 and roll < 0.25:
        return {r.choice(["and", "or"]): [random_expr(r, depth + 1) for _ in range(r.randint(0, 3))]}
    if depth < 3 and roll < 0.35:
        return {"not": random_expr(r, depth + 1)}
    if roll < 0.45:  # list membership, substrings, prefixes and null tests
        field = r.choice([*LIST_LITERALS, *LIST_LITERALS, "s", "s", *LITERALS])
        if field in LIST_LITERALS:
            return {field: {"contains": r.choice(LIST_LITERALS[field])}}
        if field == "s" and r.random() < 0.7:
            return {"s": {r.choice(["contains", "prefix"]): r.choice(STRING_PARTS)}}
        return {field: {"is_null": r.random() < 0.5}}
    field = r.choice(list(LITERALS))
    if r.random() < 0.2:
        return {field: r.choice(LITERALS[field])}
    ops = ["eq", "ne", "in", "nin"] + ([] if field == "b" else ["gt", "gte", "lt", "lte"])
    cond = {}
    for op in r.sample(ops, r.randint(1, 2)):
        cond[op] = (r.sample(LITERALS[field], r.randint(0, min(3, len(LITERALS[field])))) if op in ("in", "nin")
                    else r.choice(LITERALS[field]))
    expr = {field: cond}
    if r.random() < 0.3:  # several keys in one object are and-ed
        other = r.choice(list(LITERALS))
        if other != field:
            expr[other] = r.choice(LITERALS[other])
    return expr


def test_random_predicates_match_python_reference():
    table = make_table()
    rows = [{**row, "id": int(i)} for row, i in zip(table.to_pylist(), IDS)]
    r = random.Random(2024)
    selectivities = []
    for _ in range(1000):
        expr = random_expr(r)
        got = compile_filter(expr, table.schema).evaluate(table, IDS)
        want = np.array([reference(expr, row) for row in rows])
        assert got.dtype == bool and got.shape == (N,)
        np.testing.assert_array_equal(got, want, err_msg=str(expr))
        selectivities.append(want.mean())
    # The generator exercises both rare and common predicates (the test cannot pass vacuously).
    assert min(selectivities) == 0.0 and max(selectivities) == 1.0
    assert 0.1 < float(np.mean(selectivities)) < 0.9


def test_exact_integer_comparisons_at_the_edges():
    t = pa.table({"big": pa.array([2**53, 2**53 + 1, 2**64 - 1, None], pa.uint64())})
    f = lambda e: compile_filter(e, t.schema).evaluate(t).tolist()  # noqa: E731
    assert f({"big": 2**53 + 1}) == [False, True, False, False]  # no float rounding
    assert f({"big": {"gt": 2**53 + 0.5}}) == [False, True, True, False]
    assert f({"big": {"lt": 2**64}}) == [True, True, True, False]  # beyond the type: all non-null
    assert f({"big": {"gte": -1}}) == [True, True, True, False]
    assert f({"big": {"ne": -1}}) == [True, True, True, True]  # negation matches nulls
    assert f({"big": {"in": [2**64 - 1, -5, 0.5]}}) == [False, False, True, False]


def test_trivial_and_empty_filters():
    t = make_table()
    assert compile_filter(None, t.schema).is_trivial
    assert compile_filter({}, t.schema).evaluate(t).all()
    assert compile_filter({"and": []}, t.schema).evaluate(t).all()
    assert not compile_filter({"or": []}, t.schema).evaluate(t).any()
    assert not compile_filter({"not": {}}, t.schema).evaluate(t).any()
    assert not compile_filter({"s": {"in": []}}, t.schema).evaluate(t).any()


def test_temporal_columns():
    days = [dt.date(2020, 1, 1), dt.date(2021, 6, 1), None]
    t = pa.table({"d": pa.array(days, pa.date32()),
                  "ts": pa.array([dt.datetime(2020, 1, 1), dt.datetime(2023, 1, 1), None], pa.timestamp("s"))})
    f = lambda e: compile_filter(e, t.schema).evaluate(t).tolist()  # noqa: E731
    assert f({"d": {"gte": dt.date(2021, 1, 1)}}) == [False, True, False]
    assert f({"d": {"lt": "2021-01-01"}}) == [True, False, False]
    assert f({"ts": {"gt": dt.datetime(2021, 1, 1)}}) == [False, True, False]
    with pytest.raises(InvalidInput, match="filter field 'd' .*cannot use 'yesterday'"):
        compile_filter({"d": "yesterday"}, t.schema)


HUGE = 10**400  # beyond float64: rejected on every numeric column (issue 20, row 6)

ERRORS = [
    ({"nope": 1}, "unknown filter field 'nope' \\(metadata columns: i, u, big, f, h, s, b, tags, nums, nested; "
                  "and 'id'\\)"),
    ({"i": {"like": 3}}, "unknown filter operator 'like' on field 'i'"),
    ({"i": "3"}, "filter field 'i' is numeric; got str '3'"),
    ({"i": True}, "filter field 'i' is numeric; got bool"),
    ({"id": "5"}, "filter field 'id' is numeric; got str '5'"),
    ({"f": {"gt": math.nan}}, "NaN is not a valid comparison value"),
    ({"s": 3}, "filter field 's' has type large_string; got int 3"),
    ({"s": None}, "null is not a comparison value \\(use \\{'is_null': true\\}\\)"),
    ({"b": {"gt": False}}, "operator 'gt' is not defined for boolean field 'b'"),
    ({"b": 1}, "filter field 'b' has type bool; got int 1"),
    ({"s": ["a", "b"]}, "a list is not a value; use \\{'in': \\[...\\]\\}"),
    ({"s": {"in": "a"}}, "operator 'in' on field 's' takes a list, got str"),
    ({"s": {"in": ["a", 1]}}, "filter field 's' has type large_string; got int 1"),
    ({"i": {}}, "filter on field 'i' has no operator"),
    ({"and": {"i": 1}}, "'and' takes a list of filter expressions, got dict"),
    ({"not": [{"i": 1}]}, "a filter expression must be an object, got list"),
    ({"tags": {"eq": "x"}}, "filter field 'tags' is a list \\(list<item: large_string>\\): use 'contains' or "
                            "'is_null', not 'eq'"),
    ({"tags": {"contains": 1}}, "filter field 'tags\\[\\]' has type large_string; got int 1"),
    ({"tags": {"contains": None}}, "filter field 'tags\\[\\]': null is not a comparison value"),
    ({"nums": {"contains": "7"}}, "filter field 'nums\\[\\]' is numeric; got str '7'"),
    ({"nested": {"contains": 1}}, "filter field 'nested' has type list<item: list<item: int64>>, which filters "
                                  "support only with 'is_null'"),
    ({"i": {"contains": 1}}, "operator 'contains' on field 'i' \\(int64\\) needs a list column, or a string"),
    ({"s": {"contains": 1}}, "operator 'contains' on field 's' \\(large_string\\) needs a list column"),
    ({"s": {"prefix": 1}}, "operator 'prefix' on field 's' \\(large_string\\) needs a string column and a string"),
    ({"i": {"prefix": "1"}}, "operator 'prefix' on field 'i' \\(int64\\) needs a string column"),
    ({"i": {"is_null": 1}}, "operator 'is_null' on field 'i' takes true or false, got 1"),
    ({"f": HUGE}, "filter field 'f': the number 10000000000000000000\\.\\.\\.0000000000 \\(401 digits\\) is "
                  "out of range"),
    ({"f": {"gt": HUGE}}, "filter field 'f': the number .* is out of range"),
    ({"h": {"lte": -HUGE}}, "filter field 'h': the number .* is out of range"),
    ({"f": {"in": [1.0, HUGE]}}, "filter field 'f': the number .* is out of range"),
    ({"i": HUGE}, "filter field 'i': the number .* is out of range"),
    ({"big": {"gt": HUGE}}, "filter field 'big': the number .* is out of range"),
    ({"u": {"nin": [HUGE]}}, "filter field 'u': the number .* is out of range"),
    ({"id": {"gte": HUGE}}, "filter field 'id': the number .* is out of range"),
    ({"nums": {"contains": HUGE}}, "filter field 'nums\\[\\]': the number .* is out of range"),
]


@pytest.mark.parametrize("expr,match", ERRORS, ids=[str(e[0])[:60] for e in ERRORS])
def test_invalid_filters_raise_invalid_input(expr, match):
    schema = make_table().schema.append(pa.field("nested", pa.list_(pa.list_(pa.int64()))))
    with pytest.raises(InvalidInput, match=match):
        compile_filter(expr, schema)


def test_filter_without_metadata_schema():
    assert compile_filter({}, None).is_trivial
    with pytest.raises(InvalidInput, match=r"unknown filter field 'x' \(metadata columns: none; and 'id'\)"):
        compile_filter({"x": 1}, None)
    ids = np.array([3, 9, 2**64 - 1], np.uint64)
    only_ids = compile_filter({"id": {"in": [9, 2**64 - 1, 2**64]}}, None)
    assert only_ids.needs_ids and only_ids.fields == frozenset()
    empty = pa.table({"_": pa.nulls(3)}).select([])
    assert only_ids.evaluate(empty, ids).tolist() == [False, True, True]
    with pytest.raises(InvalidInput, match="this filter tests 'id': pass the rows' ids"):
        only_ids.evaluate(empty)


def test_is_null_works_on_every_column_type():
    t = pa.table({"nested": pa.array([[[1]], None, []], pa.list_(pa.list_(pa.int64()))),
                  "st": pa.array([{"a": 1}, None, {"a": None}], pa.struct([("a", pa.int64())])),
                  "f": pa.array([math.nan, None, 1.0])})
    f = lambda e: compile_filter(e, t.schema).evaluate(t).tolist()  # noqa: E731
    assert f({"nested": {"is_null": True}}) == [False, True, False]
    assert f({"st": {"is_null": False}}) == [True, False, True]
    assert f({"f": {"is_null": True}}) == [False, True, False]  # NaN is a value, not a null
    assert f({"f": {"is_null": False, "gte": 0}}) == [False, False, True]
