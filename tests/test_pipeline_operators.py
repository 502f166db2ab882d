"""The row operators of pipelines against the real server, each checked
with the rows it must produce: transform (Python), rename, drop, dropnull,
explode, dedup, union, select, groupby().latest() / .first(), a left join
on differently named columns, and changelog (upserts and an SQL DELETE of a
keyed dataset) feeding an aggregation."""

from datetime import datetime, timezone
from typing import List, Optional

import pandas as pd
import psycopg

from thyme.client import Client
from thyme.connectors import Webhook, source
from thyme.datasets import Count, Dataset, dataset, field, pipeline
from thyme.dtypes import Continuous
from thyme.expr import col
from thyme.lib import inputs

from test_pipeline_oracle import wait_caught_up

webhook = Webhook(name="ops")


@source(webhook.endpoint("Click"), disorder="1d", cdc="append")
@dataset
class Click:
    uid: int
    page: Optional[str]
    tags: List[str]
    amount: float
    ts: datetime


@source(webhook.endpoint("Profile"), disorder="1d", cdc="upsert")
@dataset(index=True)
class Profile:
    uid: int = field(key=True)
    tier: str
    ts: datetime


@dataset
class Shaped:
    user: int
    cents: int
    ts: datetime

    @pipeline
    @inputs(Click)
    def shape(cls, c: Dataset):
        t = c.transform(
            lambda df: pd.DataFrame({"uid": df["uid"], "cents": (df["amount"] * 100).round().astype("int64"), "ts": df["ts"]}),
            schema={"uid": int, "cents": int, "ts": datetime},
        )
        return t.rename({"uid": "user"})


@dataset
class Tagged:
    uid: int
    page: str
    tag: Optional[str]
    ts: datetime

    @pipeline
    @inputs(Click)
    def tagged(cls, c: Dataset):
        return c.dropnull("page").explode("tags").rename({"tags": "tag"}).drop("amount").dedup(by=["uid", "tag"])


@dataset(index=True)
class LastPage:
    uid: int = field(key=True)
    page: str
    ts: datetime

    @pipeline
    @inputs(Click)
    def last(cls, c: Dataset):
        big = c.filter(col("amount") > 10)
        small = c.filter(col("amount") <= 10)
        return (big + small).dropnull("page").select("uid", "page").groupby("uid").latest()


@dataset(index=True)
class FirstPage:
    uid: int = field(key=True)
    page: str
    ts: datetime

    @pipeline
    @inputs(Click)
    def first(cls, c: Dataset):
        return c.dropnull("page").select("uid", "page").groupby("uid").first()


@dataset(index=True)
class TierChanges:
    uid: int = field(key=True)
    changes: int
    ts: datetime

    @pipeline
    @inputs(Profile)
    def changes_(cls, p: Dataset):
        return p.changelog("deleted").groupby("uid").aggregate(changes=Count(window=Continuous("forever")))


@dataset
class ClickTier:
    user: int
    tier: Optional[str]
    ts: datetime

    @pipeline
    @inputs(Click, Profile)
    def tiers(cls, c: Dataset, p: Dataset):
        return c.rename({"uid": "user"}).select("user").join(p, how="left", left_on=["user"], right_on=["uid"])


def ts(s):
    return pd.to_datetime(s, utc=True)


def test_row_operators(thyme):
    client = Client(thyme.control_url)
    client.commit("ops", datasets=[Click, Profile, Shaped, Tagged, LastPage, FirstPage, TierChanges, ClickTier])
    # The profiles first: the join meets the right rows stored when a click
    # is processed (as of the click's time), so clicks logged before them
    # could be joined before they arrive.
    client.log("ops", "Profile", pd.DataFrame({
        "uid": [1, 1, 2, 3], "tier": ["free", "pro", "gold", "free"],
        "ts": ts(["2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z", "2024-01-01T10:00:00Z", "2024-01-01T13:30:00Z"]),
    }))
    client.log("ops", "Click", pd.DataFrame({
        "uid": [1, 1, 2, 1, 2, 1],
        "page": ["home", None, "cart", "shop", "home", "home"],
        "tags": [["a", "b"], ["x"], [], ["a"], ["c", "c"], ["a", "b"]],
        "amount": [12.5, 3.0, 0.29, 40.0, 5.0, 12.5],
        "ts": ts(["2024-01-01T10:00:00Z", "2024-01-01T11:00:00Z", "2024-01-01T12:00:00Z",
                  "2024-01-01T13:00:00Z", "2024-01-01T14:00:00Z", "2024-01-01T10:00:00Z"]),
    }))
    # An earlier first page for user 2 arrives later (out of order).
    client.log("ops", "Click", pd.DataFrame({
        "uid": [2], "page": ["landing"], "tags": [["z"]], "amount": [1.0], "ts": ts(["2024-01-01T09:00:00Z"]),
    }))
    with psycopg.connect(thyme.dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM profile WHERE uid = 2 AS OF '2024-01-03T00:00:00Z'")
    wait_caught_up(thyme)

    with psycopg.connect(thyme.dsn, autocommit=True) as conn:
        q = lambda sql: conn.execute(sql).fetchall()  # noqa: E731
        # transform + rename: amount in cents, uid renamed.
        assert sorted(q("SELECT user, cents FROM shaped")) == sorted(
            [(1, 1250), (1, 300), (2, 29), (1, 4000), (2, 500), (1, 1250), (2, 100)])
        # dropnull(page) drops the 11:00 click; explode gives one row per tag
        # (an empty list gives one null tag); dedup drops the repeated
        # (uid, tag, ts): user 2's two "c" tags at 14:00 and user 1's
        # identical 10:00 click.
        got = sorted(q("SELECT uid, page, tag, CAST(ts AS TEXT) FROM tagged"), key=str)
        exp = sorted([
            (1, "home", "a", "2024-01-01 10:00:00+00"), (1, "home", "b", "2024-01-01 10:00:00+00"),
            (2, "cart", None, "2024-01-01 12:00:00+00"), (1, "shop", "a", "2024-01-01 13:00:00+00"),
            (2, "home", "c", "2024-01-01 14:00:00+00"), (2, "landing", "z", "2024-01-01 09:00:00+00"),
        ], key=str)
        assert [r[:3] for r in got] == [r[:3] for r in exp], got
        # union of two filters + latest: each user's newest page, and as of a time.
        assert sorted(q("SELECT uid, page FROM last_page")) == [(1, "shop"), (2, "home")]
        assert sorted(q("SELECT uid, page FROM last_page AS OF '2024-01-01T12:30:00Z'")) == [(1, "home"), (2, "cart")]
        # first: the earliest page, also when the earliest arrived last.
        assert sorted(q("SELECT uid, page FROM first_page")) == [(1, "home"), (2, "landing")]
        assert sorted(q("SELECT uid, page FROM first_page AS OF '2024-01-01T09:30:00Z'")) == [(2, "landing")]
        # changelog: two upserts of user 1; user 2's upsert and its delete.
        assert sorted(q("SELECT uid, changes FROM tier_changes")) == [(1, 2), (2, 2), (3, 1)]
        assert sorted(q("SELECT uid, changes FROM tier_changes AS OF '2024-01-01T12:00:00Z'")) == [(1, 1), (2, 1)]
        # join, left_on=user / right_on=uid: each click meets its user's tier
        # as of the click (user 1 turns "pro" only the next day; user 2 has
        # no profile yet at 09:00).
        h = lambda hour: datetime(2024, 1, 1, hour, tzinfo=timezone.utc)  # noqa: E731
        assert sorted(q("SELECT user, tier, ts FROM click_tier"), key=str) == sorted([
            (1, "free", h(10)), (1, "free", h(11)), (2, "gold", h(12)), (1, "free", h(13)),
            (2, "gold", h(14)), (1, "free", h(10)), (2, None, h(9)),
        ], key=str)
