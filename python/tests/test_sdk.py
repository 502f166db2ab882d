"""Payload shape tests for the pure-Python SDK: decorators, types, the
operator graph of every pipeline operator, shipped source text, expressions,
connectors, featuresets, and the JSON round trip."""

import datetime as dt
import json
from decimal import Decimal as PyDecimal
from typing import Dict, List, Optional

import pytest

import thyme
from thyme import _registry
from thyme.connectors import Files, Iceberg, Kafka, Postgres, S3, Webhook, ref, source
from thyme.datasets import (
    Average,
    Count,
    Dataset,
    Distinct,
    ExpDecaySum,
    FirstK,
    LastK,
    Max,
    Min,
    Quantile,
    Stddev,
    Sum,
    dataset,
    field,
    pipeline,
)
from thyme.dtypes import (
    Continuous,
    Decimal,
    Embedding,
    Hopping,
    Session,
    Tumbling,
    between,
    oneof,
    regex,
    struct,
)
from thyme.expr import col, lit, when
from thyme.featuresets import extractor, feature, featureset
from thyme.lib import (
    expect_column_values_to_be_between,
    expect_column_values_to_be_in_set,
    expectations,
    inputs,
    meta,
    outputs,
)

from examples import features as ex


def by_name(items, name):
    for i in items:
        if i["name"] == name:
            return i
    raise KeyError(name)


def payload(*objs):
    p = thyme.commit_payload(*objs, message="test")
    assert json.loads(json.dumps(p, allow_nan=False)) == p
    return p


# ---------------------------------------------------------------------------
# The example
# ---------------------------------------------------------------------------


def test_example_document_shape():
    p = payload(ex.UserFeatures, ex.CountryStats)
    assert p["schema_version"] == 1
    assert p["message"] == "test"
    assert p["incremental"] is False
    # Dependencies are included, before what reads them.
    names = [d["name"] for d in p["datasets"]]
    assert set(names) == {"Transaction", "UserInfo", "UserStats", "CountryStats"}
    assert names.index("Transaction") < names.index("UserStats")
    assert names.index("UserInfo") < names.index("CountryStats")
    assert [f["name"] for f in p["featuresets"]] == ["UserFeatures"]


def test_example_transaction():
    d = ex.Transaction.to_json()
    assert d["name"] == "Transaction"
    assert d["version"] == 1 and d["index"] is False
    assert d["fields"] == [
        {"name": "uid", "type": "int"},
        {"name": "amount", "type": "float"},
        {"name": "merchant", "type": "str"},
        {"name": "ts", "type": "datetime", "timestamp": True},
    ]
    assert d["sources"] == [
        {
            "connector": {"kind": "webhook", "name": "main", "endpoint": "Transaction"},
            "disorder": "14d",
            "cdc": "append",
            "every": None,
            "since": None,
            "until": None,
            "cursor": None,
            "preproc": {},
        }
    ]
    assert d["pipelines"] == []
    assert d["owner"] == "payments@example.com"
    assert d["description"] == "Card transactions, one event per payment."
    assert d["meta"] == {"tags": ["payments"]}
    assert d["expectations"] is None


def test_example_user_info_marked_timestamp():
    d = ex.UserInfo.to_json()
    assert d["index"] is True
    assert d["fields"][0] == {"name": "uid", "type": "int", "key": True}
    assert by_name(d["fields"], "signup_time") == {"name": "signup_time", "type": "datetime"}
    assert by_name(d["fields"], "ts") == {"name": "ts", "type": "datetime", "timestamp": True}
    assert d["sources"][0]["cdc"] == "upsert"


def test_example_user_stats_pipeline():
    d = ex.UserStats.to_json()
    assert d["index"] is True
    assert by_name(d["fields"], "uid") == {"name": "uid", "type": "int", "key": True}
    (p,) = d["pipelines"]
    assert p["name"] == "compute" and p["version"] == 1
    assert p["inputs"] == ["Transaction"]
    assert p["nodes"][0] == {"id": 0, "op": "input", "dataset": "Transaction"}
    agg = p["nodes"][1]
    assert agg["op"] == "aggregate" and agg["input"] == 0 and p["output"] == 1
    assert agg["keys"] == ["uid"] and agg["window"] is None and agg["emit"] == "eager"
    assert agg["aggregates"] == [
        {"kind": "count", "into": "txn_count_7d", "of": None,
         "window": {"kind": "continuous", "duration": "7d"}, "unique": False, "approx": False},
        {"kind": "sum", "into": "total_7d", "of": "amount",
         "window": {"kind": "continuous", "duration": "7d"}},
        {"kind": "average", "into": "avg_7d", "of": "amount",
         "window": {"kind": "continuous", "duration": "7d"}, "default": 0.0},
        {"kind": "count", "into": "txn_count_30d", "of": None,
         "window": {"kind": "continuous", "duration": "30d"}, "unique": False, "approx": False},
        {"kind": "sum", "into": "total_30d", "of": "amount",
         "window": {"kind": "continuous", "duration": "30d"}},
    ]
    assert p["source"].startswith("def compute(cls, txn: Dataset):\n    return txn.groupby(\"uid\")")
    assert "@pipeline" not in p["source"] and "@inputs" not in p["source"]
    assert "import pandas as pd" in p["env"]["imports"]
    assert "from thyme.datasets import" in p["env"]["imports"]


def test_example_join_pipeline_and_list_form_aggregate():
    (p,) = ex.CountryStats.to_json()["pipelines"]
    ops = [n["op"] for n in p["nodes"]]
    assert ops == ["input", "input", "filter", "join", "aggregate"]
    assert [n["id"] for n in p["nodes"]] == list(range(5))
    assert p["nodes"][2]["predicate"] == {
        "func": {"name": "<lambda>", "source": 'lambda df: df["amount"] > 0', "kind": "lambda"}
    }
    join = p["nodes"][3]
    assert join == {
        "id": 3, "op": "join", "input": 2, "dataset": "UserInfo", "how": "inner",
        "on": ["uid"], "within": ["forever", "0s"], "fields": ["country"],
    }
    agg = p["nodes"][4]
    assert agg["input"] == 3 and agg["keys"] == ["country"]
    assert agg["aggregates"][0]["into"] == "total_1d"
    assert p["output"] == 4


def test_example_featureset():
    f = ex.UserFeatures.to_json()
    assert f["name"] == "UserFeatures"
    assert f["features"] == [
        {"name": "uid", "type": "int"},
        {"name": "txn_count_7d", "type": "int"},
        {"name": "total_7d", "type": "float"},
        {"name": "avg_7d", "type": "float"},
        {"name": "country", "type": {"optional": "str"}},
        {"name": "spend_per_txn", "type": "float"},
        {"name": "is_big_spender", "type": "bool"},
    ]
    ext = {e["name"]: e for e in f["extractors"]}
    assert ext["_lookup_txn_count_7d"] == {
        "name": "_lookup_txn_count_7d", "kind": "lookup", "inputs": ["UserFeatures.uid"],
        "outputs": ["txn_count_7d"], "dataset": "UserStats", "field": "txn_count_7d", "default": 0,
    }
    assert "default" not in ext["_lookup_country"]  # no default: the feature is Optional
    assert ext["_expr_spend_per_txn"]["kind"] == "expr"
    assert ext["_expr_spend_per_txn"]["inputs"] == ["UserFeatures.total_7d", "UserFeatures.txn_count_7d"]
    assert ext["_expr_spend_per_txn"]["expr"] == {
        "fillnull": {"binary": "/", "left": {"col": "total_7d"}, "right": {"col": "txn_count_7d"}},
        "value": {"lit": 0.0},
    }
    py = ext["big_spender"]
    assert py["kind"] == "python"
    assert py["inputs"] == ["UserFeatures.total_7d", "UserFeatures.txn_count_7d"]
    assert py["outputs"] == ["is_big_spender"]
    assert py["deps"] == ["UserStats"] and py["version"] == 1
    assert py["source"].startswith("def big_spender(cls, ts: pd.Series, total_7d: pd.Series")
    assert "@extractor" not in py["source"]
    assert "import pandas as pd" in py["env"]["imports"]


def test_field_and_feature_references():
    assert isinstance(ex.UserStats, Dataset)
    ref_ = ex.UserStats.txn_count_7d
    assert ref_.name == "txn_count_7d" and ref_.dataset is ex.UserStats
    assert ref_.fqn() == "UserStats.txn_count_7d"
    assert ex.UserStats.uid.key is True
    assert ex.UserStats.key_fields == ["uid"] and ex.UserStats.timestamp_field == "ts"
    assert str(ex.UserFeatures.uid) == "UserFeatures.uid"
    assert ex.UserFeatures.uid.fqn() == "UserFeatures.uid"
    assert [f.name for f in ex.UserFeatures.features][:2] == ["uid", "txn_count_7d"]


def test_lookup_outside_the_server_raises():
    with pytest.raises(RuntimeError, match=r"UserStats.lookup\(\.\.\.\) reads the dataset inside the Thyme server"):
        ex.UserStats.lookup(None, uid=[1])


def test_registry_collects_example():
    names = {getattr(o, "_name", None) for o in _registry.registered()}
    assert {"Transaction", "UserInfo", "UserStats", "CountryStats", "UserFeatures"} <= names
    assert [d._name for d in thyme.definitions(ex)] == [
        "Transaction", "UserInfo", "UserStats", "CountryStats", "UserFeatures"]
    assert thyme.definitions("examples.features") == thyme.definitions(ex)


# ---------------------------------------------------------------------------
# Decorator forms
# ---------------------------------------------------------------------------


def test_dataset_decorator_forms():
    @dataset
    class Plain:
        a: int
        t: dt.datetime

    @dataset(index=True, version=3, history="1y")
    class Called:
        a: int = field(key=True)
        t: dt.datetime

    assert Plain.to_json()["version"] == 1 and Plain.to_json()["index"] is False
    c = Called.to_json()
    assert c["version"] == 3 and c["index"] is True
    assert c["meta"] == {"history": "1y"}


def test_pipeline_decorator_forms():
    @dataset
    class Ev:
        uid: int
        t: dt.datetime

    @dataset
    class A:
        uid: int
        t: dt.datetime

        @pipeline
        @inputs(Ev)
        def copy(cls, ev):
            return ev

    @dataset
    class B:
        uid: int
        t: dt.datetime

        @pipeline(version=4)
        @inputs(Ev)
        def copy_again(cls, ev: Dataset):
            return ev.filter(col("uid") > 0)

    pa = A.to_json()["pipelines"][0]
    assert pa["version"] == 1
    assert pa["nodes"] == [{"id": 0, "op": "input", "dataset": "Ev"}] and pa["output"] == 0
    pb = B.to_json()["pipelines"][0]
    assert pb["version"] == 4 and pb["name"] == "copy_again"
    assert pb["nodes"][1]["predicate"] == {
        "expr": {"binary": ">", "left": {"col": "uid"}, "right": {"lit": 0}}
    }


def test_extractor_decorator_forms_and_other_featureset_inputs():
    @featureset
    class Request:
        uid: int
        amount: float

    @featureset
    class Derived:
        uid: int = feature(Request.uid)
        doubled: float
        flag: bool

        @extractor
        @inputs(Request.amount)
        @outputs("doubled")
        def double(cls, ts, amount):
            return amount * 2

        @extractor(deps=[], version=2)
        @inputs("doubled")
        @outputs("flag")
        def check(cls, ts, doubled):
            return doubled > 10

    j = Derived.to_json()
    ext = {e["name"]: e for e in j["extractors"]}
    assert ext["_alias_uid"] == {"name": "_alias_uid", "kind": "alias", "inputs": ["Request.uid"], "outputs": ["uid"]}
    assert ext["double"]["inputs"] == ["Request.amount"] and ext["double"]["version"] == 1
    assert ext["check"]["inputs"] == ["Derived.doubled"] and ext["check"]["version"] == 2
    # the aliased featureset comes along, first
    p = payload(Derived)
    assert [f["name"] for f in p["featuresets"]] == ["Request", "Derived"]


def test_meta_above_and_below_and_field_meta():
    @dataset
    @meta(owner="a@b.c", description="below", tags="x")
    class Below:
        a: int = field().meta(description="the a")
        t: dt.datetime

    @meta(owner="o@b.c", tags=["y", "z"])
    @featureset
    class Above:
        """Docstring description."""

        a: int = feature().meta(description="feature a")

    b = Below.to_json()
    assert b["owner"] == "a@b.c" and b["description"] == "below" and b["meta"] == {"tags": ["x"]}
    assert b["fields"][0] == {"name": "a", "type": "int", "description": "the a"}
    a = Above.to_json()
    assert a["owner"] == "o@b.c" and a["description"] == "Docstring description."
    assert a["meta"] == {"tags": ["y", "z"]}
    assert a["features"] == [{"name": "a", "type": "int", "description": "feature a"}]


# ---------------------------------------------------------------------------
# Types
# ---------------------------------------------------------------------------


@struct
class Address:
    city: str
    zip: Optional[str]


@struct
class Person:
    name: str
    home: Address
    tags: List[str]


def test_type_table():
    @dataset
    class AllTypes:
        i: int = field(key=True)
        f: float
        b: bool
        s: str
        by: bytes
        d: dt.date
        o: Optional[int]
        li: List[str]
        lo: List[Optional[float]]
        m: Dict[str, float]
        dec: Decimal[2]
        emb: Embedding[4]
        addr: Address
        opt_addr: Optional[Address]
        people: List[Person]
        age: between(int, 0, 150)
        score: between(float, 0.0, 1.0, strict_min=True)
        color: oneof(str, ["red", "green"])
        level: oneof(int, [1, 2, 3])
        code: regex("[A-Z]{3}")
        opt_between: Optional[between(int, 1, 5)]
        ts: dt.datetime

    types = {f["name"]: f["type"] for f in AllTypes.to_json()["fields"]}
    address = {"struct": {"name": "Address", "fields": [
        {"name": "city", "type": "str"}, {"name": "zip", "type": {"optional": "str"}}]}}
    assert types == {
        "i": "int",
        "f": "float",
        "b": "bool",
        "s": "str",
        "by": "bytes",
        "d": "date",
        "o": {"optional": "int"},
        "li": {"list": "str"},
        "lo": {"list": {"optional": "float"}},
        "m": {"map": "float"},
        "dec": {"decimal": 2},
        "emb": {"embedding": 4},
        "addr": address,
        "opt_addr": {"optional": address},
        "people": {"list": {"struct": {"name": "Person", "fields": [
            {"name": "name", "type": "str"},
            {"name": "home", "type": address},
            {"name": "tags", "type": {"list": "str"}},
        ]}}},
        "age": {"between": {"type": "int", "min": 0, "max": 150, "strict_min": False, "strict_max": False}},
        "score": {"between": {"type": "float", "min": 0.0, "max": 1.0, "strict_min": True, "strict_max": False}},
        "color": {"oneof": {"type": "str", "options": ["red", "green"]}},
        "level": {"oneof": {"type": "int", "options": [1, 2, 3]}},
        "code": {"regex": "[A-Z]{3}"},
        "opt_between": {"optional": {"between": {"type": "int", "min": 1, "max": 5,
                                                  "strict_min": False, "strict_max": False}}},
        "ts": "datetime",
    }
    by = {f["name"]: f for f in AllTypes.to_json()["fields"]}
    assert by["ts"].get("timestamp") is True
    assert "timestamp" not in by["d"]


def test_builtin_generics_and_pep604():
    @dataset
    class Modern:
        a: list[int]
        b: dict[str, list[str]]
        c: "Optional[int]"
        t: dt.datetime

    types = {f["name"]: f["type"] for f in Modern.to_json()["fields"]}
    assert types["a"] == {"list": "int"}
    assert types["b"] == {"map": {"list": "str"}}
    assert types["c"] == {"optional": "int"}


def test_struct_values_are_dataclasses():
    a = Address(city="Paris", zip=None)
    assert a.city == "Paris"
    from thyme.client import to_json_value

    assert to_json_value(Person(name="x", home=a, tags=["t"])) == {
        "name": "x", "home": {"city": "Paris", "zip": None}, "tags": ["t"]}


def test_field_defaults():
    @dataset
    class WithDefaults:
        a: int
        country: str = field(default="US")
        when: Optional[dt.datetime] = field(default=dt.datetime(2024, 1, 1, 12))
        price: Decimal[2] = field(default=PyDecimal("1.50"))
        t: dt.datetime

    fields = {f["name"]: f for f in WithDefaults.to_json()["fields"]}
    assert fields["country"]["default"] == "US"
    assert fields["when"]["default"] == "2024-01-01T12:00:00Z"
    assert fields["price"]["default"] == "1.50"
    assert "default" not in fields["a"]
    # Optional[datetime] is not the timestamp: t is the only (non-optional) datetime
    assert fields["t"]["timestamp"] is True and "timestamp" not in fields["when"]


# ---------------------------------------------------------------------------
# Every operator
# ---------------------------------------------------------------------------


@dataset
class Click:
    uid: int
    page: str
    ref: Optional[str]
    skus: List[int]
    amount: float
    ts: dt.datetime


@dataset(index=True)
class Profile:
    uid: int = field(key=True)
    country: str
    age: Optional[int]
    ts: dt.datetime


def double_amount(df):
    df["amount"] = df["amount"] * 2
    return df


def test_row_and_column_operators():
    @dataset
    class Ops:
        uid: int
        page_name: str
        cents: int
        big: bool
        ts: dt.datetime

        @pipeline
        @inputs(Click)
        def ops(cls, click: Dataset):
            x = click.filter(lambda df: df["amount"] > 0)
            x = x.filter((col("page") != "") & ~col("ref").isnull())
            x = x.assign("big", bool, lambda df: df["amount"] > 100)
            x = x.assign(cents=(col("amount") * 100).astype(int))
            x = x.transform(double_amount)
            x = x.transform(lambda df: df, schema={"uid": int, "page": str, "ref": Optional[str], "skus": List[int],
                                                   "amount": float, "big": bool, "cents": int, "ts": dt.datetime})
            x = x.dropnull("ref")
            x = x.dropnull()
            x = x.drop("ref", "skus")
            x = x.rename({"page": "page_name"})
            return x.select("uid", "page_name", "cents", "big")

    (p,) = Ops.to_json()["pipelines"]
    nodes = p["nodes"]
    assert [n["op"] for n in nodes] == [
        "input", "filter", "filter", "assign", "assign", "transform", "transform",
        "dropnull", "dropnull", "drop", "rename", "select",
    ]
    for i, n in enumerate(nodes[1:], start=1):
        assert n["id"] == i and n["input"] == i - 1
    assert p["output"] == len(nodes) - 1
    assert nodes[1]["predicate"]["func"]["source"] == 'lambda df: df["amount"] > 0'
    assert nodes[2]["predicate"]["expr"] == {
        "binary": "and",
        "left": {"binary": "!=", "left": {"col": "page"}, "right": {"lit": ""}},
        "right": {"unary": "not", "expr": {"isnull": {"col": "ref"}}},
    }
    assert nodes[3]["columns"] == {"big": {"type": "bool", "func": {
        "name": "<lambda>", "source": 'lambda df: df["amount"] > 100', "kind": "lambda"}}}
    assert nodes[4]["columns"] == {"cents": {"type": "int", "expr": {
        "cast": {"binary": "*", "left": {"col": "amount"}, "right": {"lit": 100}}, "type": "int"}}}
    assert nodes[5]["func"]["name"] == "double_amount" and nodes[5]["func"]["kind"] == "def"
    assert nodes[5]["func"]["source"].startswith("def double_amount(df):\n    df[\"amount\"]")
    assert nodes[5]["schema"] is None
    assert nodes[6]["schema"]["ref"] == {"optional": "str"} and nodes[6]["schema"]["skus"] == {"list": "int"}
    assert nodes[7]["columns"] == ["ref"]
    assert nodes[8]["columns"] is None
    assert nodes[9]["columns"] == ["ref", "skus"]
    assert nodes[10]["columns"] == {"page": "page_name"}
    # select keeps the timestamp
    assert nodes[11]["columns"] == ["uid", "page_name", "cents", "big", "ts"]


def test_join_groupby_and_windows():
    @dataset(index=True)
    class PerCountry:
        country: str = field(key=True)
        clicks: int
        pages: List[str]
        last_pages: List[str]
        first_pages: List[str]
        p90: Optional[float]
        decayed: float
        low: float
        high: float
        spread: float
        mean: Optional[float]
        uniq: int
        ts: dt.datetime

        @pipeline
        @inputs(Click, Profile)
        def per_country(cls, click, profile):
            j = click.join(profile, how="left", on=["uid"], within=("30d", "0s"))
            j = j.dropnull("country")
            return j.groupby("country").aggregate(
                clicks=Count(window=Continuous("forever")),
                pages=Distinct(of="page", window=Continuous("1d")),
                last_pages=LastK(of="page", window=Continuous("1d"), limit=3, dedup=True),
                first_pages=FirstK(of="page", window=Continuous("1d"), limit=2, dropnull=True),
                p90=Quantile(of="amount", window=Continuous("1d"), p=0.9),
                decayed=ExpDecaySum(of="amount", window=Continuous("forever"), half_life="1d"),
                low=Min(of="amount", window=Continuous("1d"), default=0.0),
                high=Max(of="amount", window=Continuous("1d"), default=0.0),
                spread=Stddev(of="amount", window=Continuous("1d"), default=0.0),
                mean=Average(of="amount", window=Continuous("1d")),
                uniq=Count(of="uid", unique=True, approx=True, window=Continuous("1d")),
            )

    (p,) = PerCountry.to_json()["pipelines"]
    join = p["nodes"][2]
    assert join == {"id": 2, "op": "join", "input": 0, "dataset": "Profile", "how": "left",
                    "on": ["uid"], "within": ["30d", "0s"], "fields": None}
    aggs = {a["into"]: a for a in p["nodes"][4]["aggregates"]}
    assert aggs["clicks"]["window"] == {"kind": "continuous", "duration": "forever"}
    assert aggs["pages"] == {"kind": "distinct", "into": "pages", "of": "page",
                             "window": {"kind": "continuous", "duration": "1d"}, "unordered": True}
    assert aggs["last_pages"]["kind"] == "lastk" and aggs["last_pages"]["limit"] == 3
    assert aggs["last_pages"]["dedup"] is True and aggs["last_pages"]["dropnull"] is False
    assert aggs["first_pages"]["kind"] == "firstk" and aggs["first_pages"]["dropnull"] is True
    assert aggs["p90"] == {"kind": "quantile", "into": "p90", "of": "amount",
                           "window": {"kind": "continuous", "duration": "1d"}, "p": 0.9, "approx": True}
    assert aggs["decayed"]["kind"] == "expdecaysum" and aggs["decayed"]["half_life"] == "1d"
    assert aggs["low"]["kind"] == "min" and aggs["low"]["default"] == 0.0
    assert aggs["high"]["kind"] == "max"
    assert aggs["spread"]["kind"] == "stddev"
    assert aggs["mean"]["kind"] == "average" and "default" not in aggs["mean"]
    assert aggs["uniq"]["unique"] is True and aggs["uniq"]["approx"] is True and aggs["uniq"]["of"] == "uid"


def test_groupby_window_first_latest_and_emit():
    @dataset(index=True)
    class Hourly:
        uid: int = field(key=True)
        n: int
        ts: dt.datetime

        @pipeline
        @inputs(Click)
        def hourly(cls, click):
            return click.groupby("uid", window=Tumbling("1h")).aggregate(n=Count(), emit="final")

    @dataset(index=True)
    class Hopped:
        uid: int = field(key=True)
        total: float
        ts: dt.datetime

        @pipeline
        @inputs(Click)
        def hopped(cls, click):
            return click.groupby("uid").aggregate(
                total=Sum(of="amount", window=Hopping("1h", "10m")), along="ts")

    @dataset(index=True)
    class FirstClick:
        uid: int = field(key=True)
        page: str
        ref: Optional[str]
        skus: List[int]
        amount: float
        ts: dt.datetime

        @pipeline
        @inputs(Click)
        def first(cls, click):
            return click.groupby("uid").first()

    @dataset(index=True)
    class LatestClick:
        uid: int = field(key=True)
        page: str
        ref: Optional[str]
        skus: List[int]
        amount: float
        ts: dt.datetime

        @pipeline
        @inputs(Click)
        def latest(cls, click):
            return click.groupby(["uid"]).latest()

    agg = Hourly.to_json()["pipelines"][0]["nodes"][1]
    assert agg["window"] == {"kind": "tumbling", "duration": "1h", "lookback": "0s"}
    assert agg["aggregates"] == [{"kind": "count", "into": "n", "of": None, "window": None,
                                  "unique": False, "approx": False}]
    assert agg["emit"] == "final"
    hop = Hopped.to_json()["pipelines"][0]["nodes"][1]
    assert hop["aggregates"][0]["window"] == {"kind": "hopping", "duration": "1h", "stride": "10m", "lookback": "0s"}
    assert hop["along"] == "ts"
    assert FirstClick.to_json()["pipelines"][0]["nodes"][1] == {"id": 1, "op": "first", "input": 0, "keys": ["uid"]}
    assert LatestClick.to_json()["pipelines"][0]["nodes"][1] == {"id": 1, "op": "latest", "input": 0, "keys": ["uid"]}


def test_dedup_explode_union_changelog():
    @dataset
    class OtherClick:
        uid: int
        page: str
        ref: Optional[str]
        skus: List[int]
        amount: float
        ts: dt.datetime

    @dataset
    class Exploded:
        uid: int
        page: str
        ref: Optional[str]
        skus: Optional[int]
        amount: float
        ts: dt.datetime

        @pipeline
        @inputs(Click, OtherClick)
        def merged(cls, a, b):
            u = (a + b).union(a)
            u = u.dedup(by=["uid", "page"], window=Session("10m"))
            u = u.dedup()
            return u.explode("skus")

    @dataset
    class ProfileChanges:
        uid: int
        country: str
        age: Optional[int]
        deleted: bool
        ts: dt.datetime

        @pipeline
        @inputs(Profile)
        def changes(cls, profile):
            return profile.changelog(delete="deleted")

    (p,) = Exploded.to_json()["pipelines"]
    nodes = p["nodes"]
    assert [n["op"] for n in nodes] == ["input", "input", "union", "union", "dedup", "dedup", "explode"]
    assert nodes[2]["inputs"] == [0, 1] and "input" not in nodes[2]
    assert nodes[3]["inputs"] == [2, 0]
    assert nodes[4] == {"id": 4, "op": "dedup", "input": 3, "by": ["uid", "page"],
                        "window": {"kind": "session", "gap": "10m"}}
    assert nodes[5]["by"] is None and nodes[5]["window"] is None
    assert nodes[6]["columns"] == ["skus"]
    ch = ProfileChanges.to_json()["pipelines"][0]["nodes"][1]
    assert ch == {"id": 1, "op": "changelog", "input": 0, "delete_column": "deleted"}


def test_nodes_in_creation_order_with_branches():
    @dataset
    class Branches:
        uid: int
        page: str
        ref: Optional[str]
        skus: List[int]
        amount: float
        ts: dt.datetime

        @pipeline
        @inputs(Click)
        def branches(cls, click):
            big = click.filter(col("amount") > 100)
            small = click.filter(col("amount") <= 100)
            unused = click.filter(col("amount") == 0)  # noqa: F841 - not reachable, not sent
            return big + small

    nodes = Branches.to_json()["pipelines"][0]["nodes"]
    assert [n["op"] for n in nodes] == ["input", "filter", "filter", "union"]
    assert nodes[3]["inputs"] == [1, 2]


def test_pipeline_without_cls_argument():
    @dataset
    class NoCls:
        uid: int
        page: str
        ref: Optional[str]
        skus: List[int]
        amount: float
        ts: dt.datetime

        @pipeline
        @inputs(Click)
        def plain(click):
            return click

    assert NoCls.to_json()["pipelines"][0]["output"] == 0


# ---------------------------------------------------------------------------
# Shipped source text
# ---------------------------------------------------------------------------


def test_lambdas_on_one_line_and_multiline_lambdas():
    @dataset
    class Lambdas:
        uid: int
        page: str
        ref: Optional[str]
        skus: List[int]
        amount: float
        ts: dt.datetime
        a: int
        b: int

        @pipeline
        @inputs(Click)
        def lambdas(cls, click):
            x = click.assign("a", int, lambda df: df.uid + 1).assign("b", int, lambda d: d.uid * 2)
            return x.filter(
                lambda df: (df["amount"]
                            > 0)
            ).filter(lambda df: df["page"].map(lambda p: len(p) > 0))

    nodes = Lambdas.to_json()["pipelines"][0]["nodes"]
    assert nodes[1]["columns"]["a"]["func"]["source"] == "lambda df: df.uid + 1"
    assert nodes[2]["columns"]["b"]["func"]["source"] == "lambda d: d.uid * 2"
    multi = nodes[3]["predicate"]["func"]["source"]
    assert multi.startswith("lambda df: (df[\"amount\"]") and "> 0)" in multi
    compile(multi, "<test>", "eval")
    nested = nodes[4]["predicate"]["func"]["source"]
    assert nested == 'lambda df: df["page"].map(lambda p: len(p) > 0)'


def test_same_line_lambdas_with_same_arguments():
    @dataset
    class Twins:
        uid: int
        page: str
        ref: Optional[str]
        skus: List[int]
        amount: float
        ts: dt.datetime
        a: int
        b: int

        @pipeline
        @inputs(Click)
        def twins(cls, click):
            return click.assign("a", int, lambda df: df.uid + 1).assign("b", int, lambda df: df.uid - 1)

    nodes = Twins.to_json()["pipelines"][0]["nodes"]
    assert nodes[1]["columns"]["a"]["func"]["source"] == "lambda df: df.uid + 1"
    assert nodes[2]["columns"]["b"]["func"]["source"] == "lambda df: df.uid - 1"


# ---------------------------------------------------------------------------
# Expressions
# ---------------------------------------------------------------------------


def test_expressions():
    assert col("a").to_json() == {"col": "a"}
    assert lit(3).to_json() == {"lit": 3}
    assert lit(1.5, type=float).to_json() == {"lit": 1.5, "type": "float"}
    assert lit(dt.datetime(2024, 1, 15, 12)).to_json() == {"lit": "2024-01-15T12:00:00Z", "type": "datetime"}
    assert lit(dt.date(2024, 1, 15)).to_json() == {"lit": "2024-01-15", "type": "date"}
    assert (1 - col("a")).to_json() == {"binary": "-", "left": {"lit": 1}, "right": {"col": "a"}}
    assert (col("a") // 2 % 3).to_json()["binary"] == "%"
    assert (-col("a")).to_json() == {"unary": "neg", "expr": {"col": "a"}}
    assert (col("a") | col("b")).to_json()["binary"] == "or"
    assert col("a").fillnull(0).to_json() == {"fillnull": {"col": "a"}, "value": {"lit": 0}}
    assert col("a").astype(Optional[float]).to_json() == {"cast": {"col": "a"}, "type": {"optional": "float"}}
    assert col("s").str.len().to_json() == {"fn": "str.len", "args": [{"col": "s"}]}
    assert col("s").str.lower().str.contains("x").to_json() == {
        "fn": "str.contains", "args": [{"fn": "str.lower", "args": [{"col": "s"}]}, {"lit": "x"}]}
    assert col("s").str.upper().to_json()["fn"] == "str.upper"
    assert col("t").dt.hour.to_json() == {"fn": "dt.hour", "args": [{"col": "t"}]}
    assert col("t").dt.strftime("%Y").to_json() == {"fn": "dt.strftime", "args": [{"col": "t"}, {"lit": "%Y"}]}
    assert abs(col("a")).to_json() == {"fn": "abs", "args": [{"col": "a"}]}
    assert col("a").round(2).to_json() == {"fn": "round", "args": [{"col": "a"}, {"lit": 2}]}
    assert col("l").list.len().to_json() == {"fn": "list.len", "args": [{"col": "l"}]}
    w = when(col("a") > 1).then("big").when(col("a") > 0).then("small").otherwise("none")
    assert w.to_json() == {
        "when": [
            [{"binary": ">", "left": {"col": "a"}, "right": {"lit": 1}}, {"lit": "big"}],
            [{"binary": ">", "left": {"col": "a"}, "right": {"lit": 0}}, {"lit": "small"}],
        ],
        "otherwise": {"lit": "none"},
    }
    assert when(col("a")).then(1).to_json()["otherwise"] == {"lit": None}
    with pytest.raises(TypeError, match="& | ~"):
        bool(col("a") > 1)


# ---------------------------------------------------------------------------
# Connectors
# ---------------------------------------------------------------------------


def test_connectors():
    kafka = Kafka(name="k", bootstrap_servers="localhost:9092", security_protocol="SASL_SSL",
                  sasl_mechanism="PLAIN", sasl_plain_username="u", sasl_plain_password="p")
    pg = Postgres(name="pg", host="db", db_name="app", username="u", password="secret")
    s3 = S3(name="s3", aws_access_key_id="AK", aws_secret_access_key="SK")
    local = Files(name="local")
    ice = Iceberg(name="ice", catalog_uri="http://catalog:8181", warehouse="wh")

    @source(kafka.topic("clicks"), disorder="1h", since=dt.datetime(2024, 1, 1), until="2025-01-01T00:00:00Z")
    @dataset
    class FromKafka:
        uid: int
        ts: dt.datetime

    @source(pg.table("users", cursor="updated_at"), every="1m", preproc={"country": "US", "uid": ref("user_id")})
    @dataset(index=True)
    class FromPg:
        uid: int = field(key=True)
        country: str
        updated_at: dt.datetime

    @source(s3.bucket("data", prefix="clicks/", format="parquet"), every="1h")
    @dataset
    class FromS3:
        uid: int
        ts: dt.datetime

    @source(local.directory("/tmp/events", format="json"), env="prod")
    @dataset
    class FromFiles:
        uid: int
        ts: dt.datetime

    @source(ice.table("analytics.users"), cdc="upsert", every=dt.timedelta(minutes=5))
    @dataset(index=True)
    class FromIceberg:
        uid: int = field(key=True)
        ts: dt.datetime

    k = FromKafka.to_json()["sources"][0]
    assert k["connector"] == {"kind": "kafka", "name": "k", "bootstrap_servers": "localhost:9092",
                              "topic": "clicks", "format": "json", "security_protocol": "SASL_SSL",
                              "sasl_mechanism": "PLAIN", "sasl_plain_username": "u", "sasl_plain_password": "p"}
    assert k["disorder"] == "1h" and k["cdc"] == "append"
    assert k["since"] == "2024-01-01T00:00:00Z" and k["until"] == "2025-01-01T00:00:00Z"
    p = FromPg.to_json()["sources"][0]
    assert p["connector"] == {"kind": "postgres", "name": "pg", "host": "db", "port": 5432, "db_name": "app",
                              "username": "u", "password": "secret", "table": "users"}
    assert p["cursor"] == "updated_at" and p["every"] == "1m" and p["cdc"] == "upsert"
    assert p["preproc"] == {"country": {"const": "US"}, "uid": {"ref": "user_id"}}
    s = FromS3.to_json()["sources"][0]["connector"]
    assert s == {"kind": "files", "name": "s3", "path": "s3://data", "format": "parquet", "prefix": "clicks/",
                 "aws_access_key_id": "AK", "aws_secret_access_key": "SK"}
    f = FromFiles.to_json()["sources"][0]
    assert f["connector"] == {"kind": "files", "name": "local", "path": "/tmp/events", "format": "json"}
    assert f["env"] == "prod"
    i = FromIceberg.to_json()["sources"][0]
    assert i["connector"] == {"kind": "iceberg", "name": "ice", "catalog_uri": "http://catalog:8181",
                              "table": "analytics.users", "warehouse": "wh"}
    assert i["every"] == "5m"
    assert "secret" not in repr(pg.table("users", cursor="c"))


def test_webhook_retention_and_source_below_dataset_decorator():
    hook = Webhook(name="w", retention="7d")

    @dataset
    @source(hook.endpoint("A"))
    @source(hook.endpoint("B"), disorder="1d")
    class TwoSources:
        uid: int
        ts: dt.datetime

    srcs = TwoSources.to_json()["sources"]
    assert [s["connector"]["endpoint"] for s in srcs] == ["A", "B"]
    assert srcs[0]["connector"]["retention"] == "7d"
    assert srcs[1]["disorder"] == "1d"


# ---------------------------------------------------------------------------
# Expectations, durations, misc
# ---------------------------------------------------------------------------


def test_expectations():
    @dataset
    class Checked:
        age: int
        color: str
        ts: dt.datetime

        @expectations(version=2)
        def suite(cls):
            return [
                expect_column_values_to_be_between("age", min_value=0, max_value=150, mostly=0.99),
                expect_column_values_to_be_in_set("color", ["red", "blue"]),
            ]

    e = Checked.to_json()["expectations"]
    assert e == {"version": 2, "suite": [
        {"expectation": "expect_column_values_to_be_between",
         "kwargs": {"column": "age", "min_value": 0, "max_value": 150, "strict_min": False,
                    "strict_max": False, "mostly": 0.99}},
        {"expectation": "expect_column_values_to_be_in_set",
         "kwargs": {"column": "color", "value_set": ["red", "blue"], "mostly": 1.0}},
    ]}


def test_durations_are_canonical():
    assert Continuous("1d 12h").duration == "1d12h"
    assert Continuous(dt.timedelta(days=1, hours=2)).duration == "1d2h"
    assert Continuous("forever").duration == "forever"
    assert Tumbling("1h", lookback="5m").to_json() == {"kind": "tumbling", "duration": "1h", "lookback": "5m"}


def test_payload_dedupes_and_includes_dependencies_once():
    p = payload(ex.UserStats, ex.UserStats, [ex.Transaction, ex.UserStats])
    assert [d["name"] for d in p["datasets"]] == ["Transaction", "UserStats"]
    p2 = thyme.build_payload([ex.UserStats], include_dependencies=False, incremental=True)
    assert [d["name"] for d in p2["datasets"]] == ["UserStats"] and p2["incremental"] is True
