"""Invalid definitions caught by the SDK itself, while the decorators run
(usage and structure errors). Each test asserts a message naming the
definition and the column or argument at fault.

Semantic rules across definitions (types, keys, the pipeline output
schema, the extractor graph) are checked by the native module; see
test_invalid_native.py."""

import datetime as dt
from typing import Dict, List, Optional, Set

import pytest

from thyme import DefinitionError
from thyme.connectors import Kafka, Postgres, Webhook, source
from thyme.datasets import Average, Count, LastK, Quantile, Sum, dataset, field, pipeline
from thyme.dtypes import Continuous, Decimal, Embedding, Hopping, Tumbling, between, oneof, regex
from thyme.expr import col, when
from thyme.featuresets import extractor, feature, featureset
from thyme.lib import expect_column_values_to_be_between, expectations, inputs, outputs

hook = Webhook(name="hook")


@dataset
class Event:
    uid: int
    amount: float
    tags: List[str]
    note: Optional[str]
    ts: dt.datetime


@dataset(index=True)
class Account:
    uid: int = field(key=True)
    plan: str
    ts: dt.datetime


@dataset(index=True)
class Balance:
    uid: int = field(key=True)
    balance: float
    ts: dt.datetime


# ---------------------------------------------------------------------------
# Types and fields
# ---------------------------------------------------------------------------


def test_unknown_type_annotation():
    with pytest.raises(DefinitionError, match=r"Bad\.ids: unsupported type .*Set\[int\]"):
        @dataset
        class Bad:
            ids: Set[int]
            ts: dt.datetime


def test_unsupported_scalar_type():
    with pytest.raises(DefinitionError, match=r"Bad\.z: unsupported type complex"):
        @dataset
        class Bad:
            z: complex
            ts: dt.datetime


def test_dict_with_non_string_keys():
    with pytest.raises(DefinitionError, match=r"Bad\.m: Dict keys must be str, not int"):
        @dataset
        class Bad:
            m: Dict[int, str]
            ts: dt.datetime


def test_union_other_than_optional():
    from typing import Union

    with pytest.raises(DefinitionError, match=r"Bad\.x: .*only union is Optional"):
        @dataset
        class Bad:
            x: Union[int, str]
            ts: dt.datetime


def test_bare_list_and_unresolvable_annotation():
    with pytest.raises(DefinitionError, match=r"Bad\.xs: List needs an element type"):
        @dataset
        class Bad:
            xs: List
            ts: dt.datetime
    with pytest.raises(DefinitionError, match=r"Bad\.x: cannot evaluate the annotation 'NoSuchType'"):
        @dataset
        class Bad:  # noqa: F811
            x: "NoSuchType"  # noqa: F821
            ts: dt.datetime


def test_decimal_without_scale_and_bad_sizes():
    import decimal

    with pytest.raises(DefinitionError, match=r"Bad\.price: give the decimal a scale"):
        @dataset
        class Bad:
            price: decimal.Decimal
            ts: dt.datetime
    with pytest.raises(DefinitionError, match=r"Decimal\[29\]: the scale must be an integer from 0 to 28"):
        Decimal[29]
    with pytest.raises(DefinitionError, match=r"Embedding\[0\]: the size must be a positive integer"):
        Embedding[0]


def test_bad_between_oneof_regex():
    with pytest.raises(DefinitionError, match=r"between\(\): min 10 is greater than max 1"):
        between(int, 10, 1)
    with pytest.raises(DefinitionError, match=r"between\(\): the type must be int or float, not str"):
        between(str, 0, 1)
    with pytest.raises(DefinitionError, match=r"oneof\(str, \.\.\.\): option 3 is not a str"):
        oneof(str, ["a", 3])
    with pytest.raises(DefinitionError, match=r"regex\(\): '\[a-' does not compile"):
        regex("[a-")


def test_field_without_type_annotation():
    with pytest.raises(DefinitionError, match=r"dataset Bad: field 'uid' has no type annotation"):
        @dataset
        class Bad:
            uid = field(key=True)
            ts: dt.datetime


def test_field_key_and_timestamp_at_once():
    with pytest.raises(DefinitionError, match="cannot be both a key and the timestamp"):
        field(key=True, timestamp=True)


def test_field_name_reserved():
    with pytest.raises(DefinitionError, match=r"dataset Bad: field name 'filter' is reserved"):
        @dataset
        class Bad:
            filter: str
            ts: dt.datetime


def test_plain_value_instead_of_field():
    with pytest.raises(DefinitionError, match=r"dataset Bad: field 'country' is assigned 'US'"):
        @dataset
        class Bad:
            country: str = "US"
            ts: dt.datetime


def test_bad_dataset_version():
    with pytest.raises(DefinitionError, match=r"dataset Bad: version must be a positive integer, not 0"):
        @dataset(version=0)
        class Bad:
            ts: dt.datetime


# ---------------------------------------------------------------------------
# Durations and windows
# ---------------------------------------------------------------------------


def test_bad_duration_in_window():
    with pytest.raises(DefinitionError, match=r"Continuous: '7 days' is not a duration"):
        Continuous("7 days")


def test_bad_duration_in_source():
    with pytest.raises(DefinitionError, match=r"disorder: '2 weeks' is not a duration"):
        source(hook.endpoint("E"), disorder="2 weeks")


def test_bad_windows():
    with pytest.raises(DefinitionError, match='Tumbling: the duration cannot be "forever"'):
        Tumbling("forever")
    with pytest.raises(DefinitionError, match="Hopping: the stride 2h is longer than the duration 1h"):
        Hopping("1h", "2h")
    with pytest.raises(DefinitionError, match="Continuous: the duration must be positive"):
        Continuous("0s")


# ---------------------------------------------------------------------------
# Pipelines
# ---------------------------------------------------------------------------


def test_pipeline_without_inputs():
    with pytest.raises(DefinitionError, match=r"pipeline Out\.compute: has no @inputs"):
        @dataset
        class Out:
            uid: int
            ts: dt.datetime

            @pipeline
            def compute(cls, e):
                return e


def test_pipeline_not_returning_a_dataset():
    with pytest.raises(DefinitionError, match=r"pipeline Out\.compute: must return a dataset .* not NoneType"):
        @dataset
        class Out:
            uid: int
            ts: dt.datetime

            @pipeline
            @inputs(Event)
            def compute(cls, e):
                e.filter(col("amount") > 0)


def test_pipeline_inputs_not_datasets():
    class NotADataset:
        pass

    with pytest.raises(DefinitionError, match=r"pipeline Out\.compute: @inputs takes datasets"):
        @dataset
        class Out:
            uid: int
            ts: dt.datetime

            @pipeline
            @inputs(NotADataset)
            def compute(cls, e):
                return e


def test_pipeline_arity_mismatch():
    with pytest.raises(DefinitionError, match=r"pipeline Out\.compute: takes 3 arguments but @inputs gives 1"):
        @dataset
        class Out:
            uid: int
            ts: dt.datetime

            @pipeline
            @inputs(Event)
            def compute(cls, e, extra):
                return e


def test_pipeline_function_raising():
    with pytest.raises(DefinitionError, match=r"pipeline Out\.compute: the pipeline function raised KeyError"):
        @dataset
        class Out:
            uid: int
            ts: dt.datetime

            @pipeline
            @inputs(Event)
            def compute(cls, e):
                return {}["missing"]


def test_select_unknown_column():
    with pytest.raises(DefinitionError, match=r"pipeline Out\.p: select: unknown column 'amout' \(columns: uid, amount"):
        @dataset
        class Out:
            uid: int
            amount: float
            ts: dt.datetime

            @pipeline
            @inputs(Event)
            def p(cls, e):
                return e.select("uid", "amout")


def test_drop_unknown_column():
    with pytest.raises(DefinitionError, match=r"pipeline Out\.p: drop: unknown column 'nope'"):
        @dataset
        class Out:
            uid: int
            ts: dt.datetime

            @pipeline
            @inputs(Event)
            def p(cls, e):
                return e.drop("nope")


def test_rename_unknown_column():
    with pytest.raises(DefinitionError, match=r"pipeline Out\.p: rename: unknown column 'amt'"):
        @dataset
        class Out:
            uid: int
            ts: dt.datetime

            @pipeline
            @inputs(Event)
            def p(cls, e):
                return e.rename({"amt": "value"})


def test_rename_to_an_existing_name():
    with pytest.raises(DefinitionError, match=r"pipeline Out\.p: rename: renaming makes two columns named 'uid'"):
        @dataset
        class Out:
            uid: int
            ts: dt.datetime

            @pipeline
            @inputs(Event)
            def p(cls, e):
                return e.rename({"amount": "uid"})


def test_select_dropping_a_key():
    with pytest.raises(DefinitionError, match=r"pipeline Out\.p: select must keep key field 'uid'"):
        @dataset(index=True)
        class Out:
            plan: str
            ts: dt.datetime

            @pipeline
            @inputs(Account)
            def p(cls, a):
                return a.select("plan")


def test_drop_the_timestamp():
    with pytest.raises(DefinitionError, match=r"pipeline Out\.p: drop: cannot drop key or timestamp field 'ts'"):
        @dataset
        class Out:
            uid: int
            ts: dt.datetime

            @pipeline
            @inputs(Event)
            def p(cls, e):
                return e.drop("ts")


def test_filter_expression_unknown_column():
    with pytest.raises(DefinitionError, match=r"pipeline Out\.p: filter: unknown column 'amt'"):
        @dataset
        class Out:
            uid: int
            ts: dt.datetime

            @pipeline
            @inputs(Event)
            def p(cls, e):
                return e.filter(col("amt") > 1)


def test_assign_expression_without_type():
    with pytest.raises(DefinitionError, match=r"pipeline Out\.p: assign\(double=\.\.\.\): give the expression a type with \.astype\(T\)"):
        @dataset
        class Out:
            uid: int
            ts: dt.datetime

            @pipeline
            @inputs(Event)
            def p(cls, e):
                return e.assign(double=col("amount") * 2)


def test_groupby_unknown_key():
    with pytest.raises(DefinitionError, match=r"pipeline Out\.p: groupby: unknown column 'user'"):
        @dataset
        class Out:
            uid: int
            ts: dt.datetime

            @pipeline
            @inputs(Event)
            def p(cls, e):
                return e.groupby("user").aggregate(n=Count(window=Continuous("1d")))


def test_aggregation_of_unknown_field():
    with pytest.raises(DefinitionError, match=r"pipeline Out\.p: aggregate Sum into 'total': of: unknown column 'amt'"):
        @dataset(index=True)
        class Out:
            uid: int = field(key=True)
            total: float
            ts: dt.datetime

            @pipeline
            @inputs(Event)
            def p(cls, e):
                return e.groupby("uid").aggregate(total=Sum(of="amt", window=Continuous("1d")))


def test_aggregation_of_missing():
    with pytest.raises(DefinitionError, match=r'Sum needs of="<field>"'):
        Sum(window=Continuous("1d"))
    with pytest.raises(DefinitionError, match=r'Average needs of="<field>"'):
        Average(window=Continuous("1d"))


def test_count_without_window():
    with pytest.raises(DefinitionError, match=r"pipeline Out\.p: aggregate Count into 'n': needs a window"):
        @dataset(index=True)
        class Out:
            uid: int = field(key=True)
            n: int
            ts: dt.datetime

            @pipeline
            @inputs(Event)
            def p(cls, e):
                return e.groupby("uid").aggregate(n=Count())


def test_window_on_both_groupby_and_aggregation():
    with pytest.raises(DefinitionError, match=r"aggregate Count into 'n': the groupby already has a window"):
        @dataset(index=True)
        class Out:
            uid: int = field(key=True)
            n: int
            ts: dt.datetime

            @pipeline
            @inputs(Event)
            def p(cls, e):
                return e.groupby("uid", window=Tumbling("1h")).aggregate(n=Count(window=Continuous("1d")))


def test_aggregate_list_form_without_into_field():
    with pytest.raises(DefinitionError, match=r"aggregate: Count\(of=None\) needs into_field"):
        @dataset(index=True)
        class Out:
            uid: int = field(key=True)
            n: int
            ts: dt.datetime

            @pipeline
            @inputs(Event)
            def p(cls, e):
                return e.groupby("uid").aggregate([Count(window=Continuous("1d"))])


def test_aggregation_bad_arguments():
    with pytest.raises(DefinitionError, match="Quantile: p must be between 0 and 1, not 1.5"):
        Quantile(of="amount", window=Continuous("1d"), p=1.5)
    with pytest.raises(DefinitionError, match="LastK: limit must be a positive integer, not 0"):
        LastK(of="amount", window=Continuous("1d"), limit=0)
    with pytest.raises(DefinitionError, match=r"Count\(unique=True\) needs of="):
        Count(unique=True, window=Continuous("1d"))


def test_join_with_intermediate_node():
    with pytest.raises(DefinitionError, match=r"pipeline Out\.p: join: the right side must be a dataset"):
        @dataset
        class Out:
            uid: int
            ts: dt.datetime

            @pipeline
            @inputs(Event, Account)
            def p(cls, e, a):
                return e.join(a.filter(col("plan") == "pro"), how="inner", on=["uid"])


def test_join_with_keyless_right_side():
    with pytest.raises(DefinitionError, match=r"pipeline Out\.p: join with Event: the right side of a join must be a keyed dataset; Event is keyless"):
        @dataset
        class Out:
            uid: int
            ts: dt.datetime

            @pipeline
            @inputs(Account, Event)
            def p(cls, a, e):
                return a.join(e, how="inner", on=["uid"])


def test_join_without_how():
    with pytest.raises(DefinitionError, match=r'join with Account: how must be "inner" or "left", not None'):
        @dataset
        class Out:
            uid: int
            ts: dt.datetime

            @pipeline
            @inputs(Event, Account)
            def p(cls, e, a):
                return e.join(a, on=["uid"])


def test_join_dataset_not_among_inputs():
    with pytest.raises(DefinitionError, match=r"pipeline Out\.p: joins with Account, which is not among its @inputs"):
        @dataset
        class Out:
            uid: int
            amount: float
            tags: List[str]
            note: Optional[str]
            plan: str
            ts: dt.datetime

            @pipeline
            @inputs(Event)
            def p(cls, e):
                return e.join(Account, how="inner", on=["uid"])


def test_join_column_on_both_sides():
    @dataset(index=True)
    class Other:
        uid: int = field(key=True)
        amount: float
        ts: dt.datetime

    with pytest.raises(DefinitionError, match=r"join with Other: field 'amount' exists on both sides of the join"):
        @dataset
        class Out:
            uid: int
            ts: dt.datetime

            @pipeline
            @inputs(Event, Other)
            def p(cls, e, o):
                return e.join(o, how="left", on=["uid"])


def test_changelog_without_delete_column():
    with pytest.raises(DefinitionError, match=r'changelog needs delete="<column>"'):
        @dataset
        class Out:
            uid: int
            ts: dt.datetime

            @pipeline
            @inputs(Account)
            def p(cls, a):
                return a.changelog()


# ---------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------


def test_source_with_unknown_cdc():
    with pytest.raises(DefinitionError, match=r"cdc must be one of append, upsert, delete, debezium, native, not 'merge'"):
        source(hook.endpoint("E"), cdc="merge")


def test_upsert_cdc_on_keyless_dataset():
    with pytest.raises(DefinitionError, match=r'dataset Clicks: @source\(webhook\): cdc="upsert" needs key fields; dataset Clicks is keyless'):
        @source(hook.endpoint("Clicks"), cdc="upsert")
        @dataset
        class Clicks:
            uid: int
            ts: dt.datetime


def test_append_cdc_on_keyed_dataset():
    with pytest.raises(DefinitionError, match=r'dataset Users: @source\(webhook\): cdc="append" is for keyless datasets'):
        @source(hook.endpoint("Users"), cdc="append")
        @dataset(index=True)
        class Users:
            uid: int = field(key=True)
            ts: dt.datetime


def test_dataset_with_source_and_pipeline():
    with pytest.raises(DefinitionError, match="dataset Both has both a source and a pipeline"):
        @source(hook.endpoint("Both"))
        @dataset
        class Both:
            uid: int
            amount: float
            tags: List[str]
            note: Optional[str]
            ts: dt.datetime

            @pipeline
            @inputs(Event)
            def p(cls, e):
                return e


def test_postgres_source_without_cursor():
    pg = Postgres(name="pg", host="h", db_name="d", username="u", password="p")
    with pytest.raises(DefinitionError, match="a Postgres table source needs a cursor column"):
        source(pg.table("users"))


def test_cursor_on_a_non_table_source():
    with pytest.raises(DefinitionError, match=r"cursor is only for table sources \(Postgres\), not webhook"):
        source(hook.endpoint("E"), cursor="updated_at")


def test_preproc_of_unknown_field():
    with pytest.raises(DefinitionError, match=r"dataset Pre: @source\(webhook\): preproc names 'contry', which is not a field of dataset Pre"):
        @source(hook.endpoint("Pre"), preproc={"contry": "US"})
        @dataset
        class Pre:
            country: str
            ts: dt.datetime


def test_source_needs_a_connector_and_kafka_format():
    with pytest.raises(DefinitionError, match=r"@source needs a connector's data"):
        source(hook)
    with pytest.raises(DefinitionError, match=r'Kafka k topic \'t\': format must be "json"'):
        Kafka(name="k", bootstrap_servers="b:9092").topic("t", format="avro")


def test_since_after_until():
    with pytest.raises(DefinitionError, match=r"since \(2025-01-01T00:00:00Z\) must be before until"):
        source(hook.endpoint("E"), since="2025-01-01T00:00:00Z", until=dt.datetime(2024, 1, 1))


# ---------------------------------------------------------------------------
# Featuresets
# ---------------------------------------------------------------------------


def test_feature_without_type():
    with pytest.raises(DefinitionError, match=r"featureset F: feature 'plan' has no type"):
        @featureset
        class F:
            uid: int
            plan = feature(Account.plan)


def test_lookup_field_not_existing():
    with pytest.raises(AttributeError, match=r"dataset Account has no field 'tier' \(fields: uid, plan, ts\)"):
        @featureset
        class F:
            uid: int
            tier: str = feature(Account.tier)


def test_lookup_key_not_bound_by_a_feature():
    with pytest.raises(DefinitionError, match=r"featureset F: feature plan looks up Account, which is keyed by uid; add a feature named 'uid'"):
        @featureset
        class F:
            user_id: int
            plan: str = feature(Account.plan, default="free")


def test_default_on_a_non_lookup_feature():
    with pytest.raises(DefinitionError, match=r"default is only for lookups"):
        feature(col("a") + 1, default=0)


def test_expression_feature_unknown_feature():
    with pytest.raises(DefinitionError, match=r"featureset F: feature total: the expression reads 'tax', which is not a feature of F"):
        @featureset
        class F:
            price: float
            total: float = feature(col("price") + col("tax"))


def test_extractor_output_not_a_feature():
    with pytest.raises(DefinitionError, match=r"featureset F: extractor fn: output 'score' is not a feature of F"):
        @featureset
        class F:
            uid: int
            flag: bool

            @extractor
            @inputs("uid")
            @outputs("score")
            def fn(cls, ts, uid):
                return uid > 0


def test_extractor_without_outputs():
    with pytest.raises(DefinitionError, match=r"featureset F: extractor fn: has no @outputs"):
        @featureset
        class F:
            uid: int
            flag: bool

            @extractor
            @inputs("uid")
            def fn(cls, ts, uid):
                return uid > 0


def test_extractor_unknown_input():
    with pytest.raises(DefinitionError, match=r"featureset F: extractor fn: input 'user' is not a feature of F"):
        @featureset
        class F:
            uid: int
            flag: bool

            @extractor
            @inputs("user")
            @outputs("flag")
            def fn(cls, ts, user):
                return user > 0


def test_extractor_deps_must_be_datasets():
    with pytest.raises(DefinitionError, match=r"@extractor fn: deps are datasets"):
        @extractor(deps=["Account"])
        def fn(cls, ts, uid):
            return uid


# ---------------------------------------------------------------------------
# Expressions, expectations, payload
# ---------------------------------------------------------------------------


def test_expression_truth_value_and_unfinished_when():
    with pytest.raises(TypeError, match="no Python truth value"):
        if col("a") > 1:
            pass
    with pytest.raises(DefinitionError, match=r"when\(\.\.\.\)\.then\(\.\.\.\) chain needs \.otherwise"):
        col("a") + when(col("b"))


def test_expectation_on_unknown_column():
    with pytest.raises(DefinitionError, match=r"dataset Ex: @expectations suite: expect_column_values_to_be_between: unknown column 'agee'"):
        @dataset
        class Ex:
            age: int
            ts: dt.datetime

            @expectations
            def suite(cls):
                return [expect_column_values_to_be_between("agee", 0, 100)]


def test_two_definitions_with_one_name():
    import thyme

    def make():
        @dataset
        class Twin:
            a: int
            ts: dt.datetime

        return Twin

    with pytest.raises(DefinitionError, match="two different datasets are named Twin"):
        thyme.commit_payload(make(), make())


def test_lambda_without_source():
    fn = eval("lambda df: df")  # no file to read the source from
    with pytest.raises(DefinitionError, match=r"cannot read the source of <lambda>"):
        @dataset
        class Out:
            uid: int
            amount: float
            tags: List[str]
            note: Optional[str]
            ts: dt.datetime

            @pipeline
            @inputs(Event)
            def p(cls, e):
                return e.filter(fn)
