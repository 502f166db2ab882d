"""Invalid definitions caught by the native validator
(``thyme._native.validate_commit``, the control plane's rules): types,
timestamps, keys, pipeline output schemas, aggregation field types, joins,
lookups and the extractor graph. Also raw payloads the SDK would never
produce, to show the server side checks them on its own.

Skipped when the package was built without its native module. The
matches are loose on purpose: the definition and field names plus a
keyword."""

import copy
import datetime as dt
import json
from typing import List, Optional

import pytest

pytest.importorskip("thyme._native")

import thyme  # noqa: E402
from thyme import _native  # noqa: E402
from thyme.datasets import Average, Count, Sum, dataset, field, pipeline  # noqa: E402
from thyme.dtypes import Continuous  # noqa: E402
from thyme.featuresets import extractor, feature, featureset  # noqa: E402
from thyme.lib import inputs, outputs  # noqa: E402

from examples import features as ex  # noqa: E402


def invalid(pattern, *objs):
    with pytest.raises(ValueError, match=f"(?s){pattern}"):
        thyme.validate(*objs)


def invalid_raw(pattern, payload):
    with pytest.raises(ValueError, match=f"(?s){pattern}"):
        _native.validate_commit(json.dumps(payload))


@dataset
class Txn:
    uid: int
    amount: float
    merchant: str
    tags: List[str]
    ts: dt.datetime


@dataset(index=True)
class Plan:
    uid: int = field(key=True)
    plan: str
    ts: dt.datetime


# ---------------------------------------------------------------------------
# The example is valid
# ---------------------------------------------------------------------------


def test_example_is_valid():
    p = thyme.validate(ex.UserFeatures, ex.CountryStats)
    assert {d["name"] for d in p["datasets"]} == {"Transaction", "UserInfo", "UserStats", "CountryStats"}


def test_sdk_test_definitions_are_valid():
    thyme.validate(Txn, Plan)


# ---------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------


def test_no_timestamp():
    @dataset
    class NoTs:
        uid: int

    invalid(r"NoTs.*timestamp", NoTs)


def test_two_timestamps():
    @dataset
    class TwoTs:
        a: dt.datetime = field(timestamp=True)
        b: dt.datetime = field(timestamp=True)

    invalid(r"TwoTs.*timestamp", TwoTs)


def test_two_datetimes_none_marked():
    @dataset
    class TwoDt:
        created: dt.datetime
        updated: dt.datetime

    invalid(r"TwoDt.*(created|updated).*timestamp", TwoDt)


def test_optional_key():
    @dataset(index=True)
    class OptKey:
        uid: Optional[int] = field(key=True)
        ts: dt.datetime

    invalid(r"OptKey.*uid.*optional", OptKey)


def test_key_of_unsupported_type():
    @dataset(index=True)
    class FloatKey:
        score: float = field(key=True)
        ts: dt.datetime

    invalid(r"FloatKey.*score.*key", FloatKey)


def test_index_on_keyless_dataset():
    @dataset(index=True)
    class KeylessIndex:
        uid: int
        ts: dt.datetime

    invalid(r"KeylessIndex.*index.*key", KeylessIndex)


def test_bad_field_default():
    @dataset
    class BadDefault:
        n: int = field(default="many")
        ts: dt.datetime

    invalid(r"BadDefault.*default.*n", BadDefault)


# ---------------------------------------------------------------------------
# Pipeline output schema
# ---------------------------------------------------------------------------


def test_output_missing_a_field():
    @dataset(index=True)
    class MissingOut:
        uid: int = field(key=True)
        n: int
        total: float
        ts: dt.datetime

        @pipeline
        @inputs(Txn)
        def p(cls, t):
            return t.groupby("uid").aggregate(n=Count(window=Continuous("1d")))

    invalid(r"MissingOut.*total", MissingOut)


def test_output_extra_field():
    @dataset(index=True)
    class ExtraOut:
        uid: int = field(key=True)
        n: int
        ts: dt.datetime

        @pipeline
        @inputs(Txn)
        def p(cls, t):
            return t.groupby("uid").aggregate(
                n=Count(window=Continuous("1d")), extra=Sum(of="amount", window=Continuous("1d")))

    invalid(r"ExtraOut.*extra", ExtraOut)


def test_output_wrong_type():
    @dataset(index=True)
    class WrongType:
        uid: int = field(key=True)
        total: int
        ts: dt.datetime

        @pipeline
        @inputs(Txn)
        def p(cls, t):
            return t.groupby("uid").aggregate(total=Sum(of="amount", window=Continuous("1d")))

    invalid(r"WrongType.*total.*(float|int)", WrongType)


def test_output_wrong_key():
    @dataset(index=True)
    class WrongKey:
        uid: int = field(key=True)
        merchant: str
        n: int
        ts: dt.datetime

        @pipeline
        @inputs(Txn)
        def p(cls, t):
            return t.groupby("uid", "merchant").aggregate(n=Count(window=Continuous("1d")))

    invalid(r"WrongKey.*key", WrongKey)


def test_output_keyless_for_keyed_dataset():
    @dataset(index=True)
    class NotKeyed:
        uid: int = field(key=True)
        amount: float
        merchant: str
        tags: List[str]
        ts: dt.datetime

        @pipeline
        @inputs(Txn)
        def p(cls, t):
            return t

    invalid(r"NotKeyed.*key", NotKeyed)


# ---------------------------------------------------------------------------
# Aggregations
# ---------------------------------------------------------------------------


def test_sum_of_a_string():
    @dataset(index=True)
    class SumStr:
        uid: int = field(key=True)
        total: float
        ts: dt.datetime

        @pipeline
        @inputs(Txn)
        def p(cls, t):
            return t.groupby("uid").aggregate(total=Sum(of="merchant", window=Continuous("1d")))

    invalid(r"SumStr.*merchant.*(type|str)", SumStr)


def test_average_of_a_list():
    @dataset(index=True)
    class AvgList:
        uid: int = field(key=True)
        mean: float
        ts: dt.datetime

        @pipeline
        @inputs(Txn)
        def p(cls, t):
            return t.groupby("uid").aggregate(mean=Average(of="tags", window=Continuous("1d"), default=0.0))

    invalid(r"AvgList.*tags", AvgList)


def test_emit_final_with_continuous_window():
    @dataset(index=True)
    class FinalCont:
        uid: int = field(key=True)
        n: int
        ts: dt.datetime

        @pipeline
        @inputs(Txn)
        def p(cls, t):
            return t.groupby("uid").aggregate(n=Count(window=Continuous("1d")), emit="final")

    invalid(r"FinalCont.*final", FinalCont)


# ---------------------------------------------------------------------------
# Operators
# ---------------------------------------------------------------------------


def test_join_on_not_the_right_keys():
    @dataset
    class JoinWrongOn:
        uid: int
        amount: float
        merchant: str
        tags: List[str]
        plan: str
        ts: dt.datetime

        @pipeline
        @inputs(Txn, Plan)
        def p(cls, t, pl):
            return t.join(pl, how="inner", left_on=["merchant"], right_on=["plan"])

    invalid(r"JoinWrongOn.*keys.*uid", JoinWrongOn)


def test_union_of_different_schemas():
    @dataset
    class Narrow:
        uid: int
        ts: dt.datetime

    @dataset
    class UnionBad:
        uid: int
        amount: float
        merchant: str
        tags: List[str]
        ts: dt.datetime

        @pipeline
        @inputs(Txn, Narrow)
        def p(cls, t, n):
            return t + n

    invalid(r"UnionBad.*union.*schema", UnionBad)


def test_explode_a_non_list():
    @dataset
    class ExplodeBad:
        uid: int
        amount: float
        merchant: str
        tags: List[str]
        ts: dt.datetime

        @pipeline
        @inputs(Txn)
        def p(cls, t):
            return t.explode("merchant")

    invalid(r"ExplodeBad.*merchant.*List", ExplodeBad)


def test_changelog_of_keyless_input():
    @dataset
    class ChangelogBad:
        uid: int
        amount: float
        merchant: str
        tags: List[str]
        deleted: bool
        ts: dt.datetime

        @pipeline
        @inputs(Txn)
        def p(cls, t):
            return t.changelog(delete="deleted")

    invalid(r"ChangelogBad.*changelog.*key", ChangelogBad)


def test_dedup_of_keyed_input():
    @dataset(index=True)
    class DedupBad:
        uid: int = field(key=True)
        plan: str
        ts: dt.datetime

        @pipeline
        @inputs(Plan)
        def p(cls, pl):
            return pl.dedup(by=["plan"])

    invalid(r"DedupBad.*dedup.*keyless", DedupBad)


# ---------------------------------------------------------------------------
# Featuresets
# ---------------------------------------------------------------------------


def test_featureset_cycle():
    @featureset
    class Cyclic:
        a: int
        b: int

        @extractor
        @inputs("a")
        @outputs("b")
        def a_to_b(cls, ts, a):
            return a

        @extractor
        @inputs("b")
        @outputs("a")
        def b_to_a(cls, ts, b):
            return b

    invalid(r"cycle.*Cyclic\.(a|b)", Cyclic)


def test_two_extractors_for_one_feature():
    @featureset
    class Twice:
        uid: int
        plan: str = feature(Plan.plan, default="free")

        @extractor
        @inputs("uid")
        @outputs("plan")
        def guess(cls, ts, uid):
            return uid.map(str)

    invalid(r"Twice.*plan.*two extractors", Twice)


def test_lookup_of_non_indexed_dataset():
    @dataset
    class NotIndexed:
        uid: int = field(key=True)
        plan: str
        ts: dt.datetime

    @featureset
    class LooksUp:
        uid: int
        plan: str = feature(NotIndexed.plan, default="free")

    invalid(r"LooksUp.*NotIndexed.*index", LooksUp)


def test_lookup_of_keyless_dataset():
    @featureset
    class LooksUpKeyless:
        uid: int
        merchant: str = feature(Txn.merchant, default="")

    invalid(r"LooksUpKeyless.*Txn.*keyless", LooksUpKeyless)


def test_lookup_without_default_needs_optional_feature():
    @featureset
    class NoDefault:
        uid: int
        plan: str = feature(Plan.plan)

    invalid(r"NoDefault.*plan.*Optional", NoDefault)


def test_lookup_default_of_wrong_type():
    @featureset
    class BadDefaultType:
        uid: int
        plan: str = feature(Plan.plan, default=3)

    invalid(r"BadDefaultType.*default.*plan", BadDefaultType)


def test_lookup_of_a_key_field():
    @featureset
    class LooksUpKey:
        uid: int
        same: int = feature(Plan.uid, default=0)

    invalid(r"LooksUpKey.*uid.*key", LooksUpKey)


def test_lookup_key_feature_of_wrong_type():
    @featureset
    class WrongKeyType:
        uid: str
        plan: str = feature(Plan.plan, default="free")

    invalid(r"WrongKeyType.*uid.*(fit|key)", WrongKeyType)


def test_alias_of_another_type():
    @featureset
    class Source_:
        x: int

    @featureset
    class AliasBad:
        y: str = feature(Source_.x)

    invalid(r"AliasBad.*alias.*y", AliasBad)


# ---------------------------------------------------------------------------
# Raw payloads (what a hand-written or tampered payload gets)
# ---------------------------------------------------------------------------


def _raw():
    return copy.deepcopy(thyme.commit_payload(ex.UserFeatures, ex.CountryStats))


def _dataset(p, name):
    return next(d for d in p["datasets"] if d["name"] == name)


def test_raw_valid():
    _native.validate_commit(json.dumps(_raw()))


def test_raw_duplicate_field_names():
    p = _raw()
    _dataset(p, "Transaction")["fields"].append({"name": "amount", "type": "int"})
    invalid_raw(r"Transaction.*amount.*twice", p)


def test_raw_source_and_pipeline():
    p = _raw()
    _dataset(p, "UserStats")["sources"] = copy.deepcopy(_dataset(p, "Transaction")["sources"])
    invalid_raw(r"UserStats.*source.*pipeline", p)


def test_raw_upsert_on_keyless():
    p = _raw()
    _dataset(p, "Transaction")["sources"][0]["cdc"] = "upsert"
    invalid_raw(r"Transaction.*upsert.*key", p)


def test_raw_unknown_cdc():
    p = _raw()
    _dataset(p, "Transaction")["sources"][0]["cdc"] = "merge"
    invalid_raw(r"merge", p)


def test_raw_bad_duration():
    p = _raw()
    _dataset(p, "Transaction")["sources"][0]["disorder"] = "2 weeks"
    invalid_raw(r"Transaction.*2 weeks.*duration", p)


def test_raw_unknown_key():
    p = _raw()
    _dataset(p, "Transaction")["idx"] = True
    invalid_raw(r"idx", p)


def test_raw_pipeline_input_not_defined():
    p = _raw()
    p["datasets"] = [d for d in p["datasets"] if d["name"] != "Transaction"]
    invalid_raw(r"Transaction.*not defined", p)


def test_raw_schema_version():
    p = _raw()
    p["schema_version"] = 2
    invalid_raw(r"schema_version 2", p)


def test_raw_extractor_output_not_a_feature():
    p = _raw()
    p["featuresets"][0]["extractors"][0]["outputs"] = ["nope"]
    invalid_raw(r"UserFeatures.*nope.*not a feature", p)


def test_raw_join_with_keyless_right_side():
    p = _raw()
    join = _dataset(p, "CountryStats")["pipelines"][0]["nodes"][3]
    join["dataset"], join["fields"] = "Transaction", None
    invalid_raw(r"CountryStats.*Transaction.*keyless", p)


def test_raw_select_dropping_a_key():
    p = _raw()
    stats = _dataset(p, "UserStats")["pipelines"][0]
    stats["nodes"].append({"id": 2, "op": "select", "input": 1, "columns": ["txn_count_7d"]})
    stats["output"] = 2
    invalid_raw(r"UserStats.*select.*key.*uid", p)


def test_raw_count_without_window():
    p = _raw()
    agg = _dataset(p, "UserStats")["pipelines"][0]["nodes"][1]
    agg["aggregates"][0]["window"] = None
    invalid_raw(r"UserStats.*txn_count_7d.*window", p)


def test_raw_aggregation_of_unknown_field():
    p = _raw()
    agg = _dataset(p, "UserStats")["pipelines"][0]["nodes"][1]
    agg["aggregates"][1]["of"] = "amt"
    invalid_raw(r"UserStats.*amt", p)


def test_check_columns_names_row_field_value():
    thyme.check_columns(ex.Transaction, {"uid": [1], "amount": [2.5], "merchant": ["m"],
                                         "ts": ["2024-01-01T00:00:00Z"]})
    with pytest.raises(ValueError, match=r"(?s)(row 1|1).*amount.*oops"):
        thyme.check_columns(ex.Transaction, {"uid": [1, 2], "amount": [2.5, "oops"], "merchant": ["m", "n"],
                                             "ts": ["2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z"]})
