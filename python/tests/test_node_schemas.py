"""One table of cases for the two implementations the SDK carries: each
pipeline node's schema and duration parsing, computed by the model's rules
in Rust (``thyme._native``) and by the pure-Python fallback an installation
without the native module uses. Both must give the table's answer, so the
fallback cannot drift from the rules the control plane and the stream
engine apply."""

import datetime as dt
from typing import List, Optional

import pytest

from thyme import _util
from thyme.datasets import (
    Average,
    Count,
    Distinct,
    ExpDecaySum,
    LastK,
    Max,
    Min,
    Quantile,
    Stddev,
    Sum,
    dataset,
    field,
)
from thyme.dtypes import Continuous, Tumbling
from thyme.expr import col

try:
    from thyme import _native  # noqa: F401

    HAVE_NATIVE = True
except ImportError:  # pragma: no cover - the CI build has it
    HAVE_NATIVE = False


@dataset
class Txn:
    uid: int
    amount: float
    merchant: str
    note: Optional[str]
    tags: List[str]
    ts: dt.datetime


@dataset(index=True)
class Plan:
    uid: int = field(key=True)
    plan: str
    limit: Optional[int]
    ts: dt.datetime


@dataset
class Refund:
    uid: int
    amount: float
    merchant: str
    note: Optional[str]
    tags: List[str]
    ts: dt.datetime


# (name, build(txn) -> node, expected fields {name: type}, keys, timestamp)
CASES = [
    ("filter", lambda t: t.filter(col("amount") > 1), None, [], "ts"),
    ("filter_func", lambda t: t.filter(lambda df: df.amount > 1), None, [], "ts"),
    ("assign_expr", lambda t: t.assign(cents=(col("amount") * 100).astype(int)),
     {"cents": "int"}, [], "ts"),
    ("assign_func_replaces", lambda t: t.assign("amount", int, lambda df: df.amount.astype(int)),
     {"amount": "int"}, [], "ts"),
    ("select", lambda t: t.select("uid", "amount"),
     {"__only__": ["uid", "amount", "ts"]}, [], "ts"),
    ("drop", lambda t: t.drop("tags", "note"),
     {"__only__": ["uid", "amount", "merchant", "ts"]}, [], "ts"),
    ("rename", lambda t: t.rename({"amount": "amt", "ts": "at"}),
     {"amt": "float", "at": "datetime", "__absent__": ["amount", "ts"]}, [], "at"),
    ("dropnull_all", lambda t: t.dropnull(), {"note": "str"}, [], "ts"),
    ("dropnull_some", lambda t: t.dropnull("note"), {"note": "str"}, [], "ts"),
    ("explode", lambda t: t.explode("tags"), {"tags": {"optional": "str"}}, [], "ts"),
    ("transform_same", lambda t: t.transform(lambda df: df), None, [], "ts"),
    ("transform_schema", lambda t: t.transform(lambda df: df, schema={"uid": int, "ts": dt.datetime, "x": float}),
     {"__only__": ["uid", "ts", "x"], "x": "float"}, [], "ts"),
    ("inner_join", lambda t: t.join(Plan, how="inner", on=["uid"]),
     {"plan": "str", "limit": {"optional": "int"}}, [], "ts"),
    ("left_join", lambda t: t.join(Plan, how="left", on=["uid"]),
     {"plan": {"optional": "str"}, "limit": {"optional": "int"}}, [], "ts"),
    ("left_join_fields", lambda t: t.join(Plan, how="left", on=["uid"], fields=["plan"]),
     {"plan": {"optional": "str"}, "__absent__": ["limit"]}, [], "ts"),
    ("union", lambda t: t.union(Refund), None, [], "ts"),
    ("dedup", lambda t: t.dedup(by=["uid", "amount"]), None, [], "ts"),
    ("first", lambda t: t.groupby("uid").first(), None, ["uid"], "ts"),
    ("latest", lambda t: t.groupby("uid", "merchant").latest(), None, ["uid", "merchant"], "ts"),
    ("changelog", lambda t: t.groupby("uid").latest().changelog(delete="deleted"),
     {"deleted": "bool"}, [], "ts"),
    ("aggregate", lambda t: t.groupby("uid").aggregate(
        n=Count(window=Continuous("7d")),
        total=Sum(of="amount", window=Continuous("7d")),
        avg=Average(of="amount", window=Continuous("7d")),
        avg0=Average(of="amount", window=Continuous("7d"), default=0.0),
        lo=Min(of="amount", window=Continuous("1d")),
        hi=Max(of="amount", window=Continuous("1d"), default=0.0),
        sd=Stddev(of="amount", window=Continuous("1d")),
        p90=Quantile(of="amount", window=Continuous("1d"), p=0.9),
        decay=ExpDecaySum(of="amount", window=Continuous("forever"), half_life="1d"),
        merchants=Distinct(of="merchant", window=Continuous("7d")),
        recent=LastK(of="amount", window=Continuous("7d"), limit=3),
        distinct_n=Count(of="merchant", unique=True, window=Continuous("7d")),
     ),
     {"__only__": ["uid", "ts", "n", "total", "avg", "avg0", "lo", "hi", "sd", "p90", "decay",
                   "merchants", "recent", "distinct_n"],
      "n": "int", "total": "float", "avg": {"optional": "float"}, "avg0": "float",
      "lo": {"optional": "float"}, "hi": "float", "sd": {"optional": "float"},
      "p90": {"optional": "float"}, "decay": "float", "merchants": {"list": "str"},
      "recent": {"list": "float"}, "distinct_n": "int"},
     ["uid"], "ts"),
    ("aggregate_tumbling_int", lambda t: t.assign(cents=(col("amount") * 100).astype(int))
     .groupby("uid", window=Tumbling("1h")).aggregate(total=Sum(of="cents"), hi=Max(of="cents")),
     {"__only__": ["uid", "ts", "total", "hi"], "total": "int", "hi": {"optional": "int"}}, ["uid"], "ts"),
    ("chain", lambda t: t.filter(col("amount") > 0).dropnull("note").rename({"note": "memo"})
     .join(Plan, how="left", on=["uid"]).drop("tags"),
     {"memo": "str", "plan": {"optional": "str"}, "limit": {"optional": "int"},
      "__absent__": ["note", "tags"]}, [], "ts"),
]


def expected_fields(expect):
    """The case's expected {name: type}: Txn's fields changed by the case."""
    base = dict(Txn.schema())
    if expect is None:
        return base
    only = expect.get("__only__")
    absent = expect.get("__absent__", [])
    out = {n: t for n, t in base.items() if n not in absent}
    for n, t in expect.items():
        if not n.startswith("__"):
            out[n] = t
    if only is not None:
        for n in list(out):
            if n not in only:
                del out[n]
        assert sorted(out) == sorted(only), f"the case lists types for fields outside __only__: {sorted(out)}"
    return out


MODES = ["fallback"] + (["native"] if HAVE_NATIVE else [])


@pytest.fixture(params=MODES)
def mode(request, monkeypatch):
    if request.param == "fallback":
        monkeypatch.setattr(_util, "_NATIVE", None)
    else:
        monkeypatch.setattr(_util, "_NATIVE", ...)
    return request.param


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_node_schema(case, mode):
    _, build, expect, keys, ts = case
    node = build(Txn)
    assert node.schema() == expected_fields(expect)
    assert sorted(node._schema.keys) == sorted(keys)
    assert node._schema.timestamp == ts


def test_native_and_fallback_agree_on_field_order(monkeypatch):
    if not HAVE_NATIVE:
        pytest.skip("no native module")
    for name, build, *_ in CASES:
        monkeypatch.setattr(_util, "_NATIVE", None)
        py = build(Txn)._schema
        monkeypatch.setattr(_util, "_NATIVE", ...)
        rs = build(Txn)._schema
        # Transform schemas are a dict; the model keeps them by name.
        if name != "transform_schema":
            assert py.fields == rs.fields, name
        assert (py.keys, py.timestamp) == (rs.keys, rs.timestamp), name


# (text, microseconds or None when it is not a duration)
DURATIONS = [
    ("0s", 0),
    ("30s", 30_000_000),
    ("15m", 900_000_000),
    ("250ms", 250_000),
    ("1h", 3_600_000_000),
    ("7d", 7 * 86_400_000_000),
    ("2w", 14 * 86_400_000_000),
    ("1y", 365 * 86_400_000_000),
    ("1d12h", 36 * 3_600_000_000),
    ("1h30m15s500ms", 5_415_500_000),
    ("", None),
    ("7", None),
    ("d", None),
    ("7days", None),
    ("-1d", None),
    ("1.5h", None),
    ("1hh", None),
    ("9223372036854775807s", None),
    ("300000y", None),
    ("290000y", 290000 * 365 * 86_400_000_000),
]


@pytest.mark.parametrize("text,micros", DURATIONS, ids=[d[0] or "empty" for d in DURATIONS])
def test_duration(text, micros, mode):
    assert _util.duration_micros(text) == micros
    if micros is None:
        with pytest.raises(ValueError, match="is not a duration"):
            _util.parse_duration(text, "window")
    else:
        assert _util.parse_duration(text, "window") == text
        assert _util.duration_seconds(text) == micros / 1_000_000


def test_duration_forever_and_spaces(mode):
    assert _util.parse_duration("forever", "w") == "forever"
    assert _util.parse_duration("1d 12h", "w") == "1d12h"
    assert _util.duration_seconds("forever") == float("inf")
    assert _util.parse_duration(dt.timedelta(days=1, milliseconds=5), "w") == "1d5ms"
