"""The seed-shaped example: transactions pushed to a webhook, per-user
7-day and 30-day statistics computed by a pipeline, user info joined in for
per-country totals, and a featureset serving them.

Written the way a Fennel feature file is; only the imports say thyme.
"""

from datetime import datetime
from typing import Optional

import pandas as pd

from thyme.connectors import Webhook, source
from thyme.datasets import Average, Count, Dataset, Sum, dataset, field, pipeline
from thyme.dtypes import Continuous
from thyme.expr import col
from thyme.featuresets import extractor, feature, featureset
from thyme.lib import inputs, meta, outputs

webhook = Webhook(name="main")


@meta(owner="payments@example.com", tags=["payments"])
@source(webhook.endpoint("Transaction"), disorder="14d", cdc="append")
@dataset
class Transaction:
    """Card transactions, one event per payment."""

    uid: int
    amount: float
    merchant: str
    ts: datetime


@source(webhook.endpoint("UserInfo"), disorder="14d", cdc="upsert")
@dataset(index=True)
class UserInfo:
    uid: int = field(key=True)
    country: str
    signup_time: datetime
    ts: datetime = field(timestamp=True)


@dataset(index=True)
class UserStats:
    uid: int = field(key=True)
    txn_count_7d: int
    total_7d: float
    avg_7d: float
    txn_count_30d: int
    total_30d: float
    ts: datetime

    @pipeline(version=1)
    @inputs(Transaction)
    def compute(cls, txn: Dataset):
        return txn.groupby("uid").aggregate(
            txn_count_7d=Count(window=Continuous("7d")),
            total_7d=Sum(of="amount", window=Continuous("7d")),
            avg_7d=Average(of="amount", window=Continuous("7d"), default=0.0),
            txn_count_30d=Count(window=Continuous("30d")),
            total_30d=Sum(of="amount", window=Continuous("30d")),
        )


@dataset(index=True)
class CountryStats:
    country: str = field(key=True)
    total_1d: float
    ts: datetime

    @pipeline
    @inputs(Transaction, UserInfo)
    def by_country(cls, txn: Dataset, info: Dataset):
        positive = txn.filter(lambda df: df["amount"] > 0)
        joined = positive.join(info, how="inner", on=["uid"], fields=["country"])
        return joined.groupby("country").aggregate(
            [Sum(of="amount", window=Continuous("1d"), into_field="total_1d")]
        )


@featureset
class UserFeatures:
    uid: int
    txn_count_7d: int = feature(UserStats.txn_count_7d, default=0)
    total_7d: float = feature(UserStats.total_7d, default=0.0)
    avg_7d: float = feature(UserStats.avg_7d, default=0.0)
    country: Optional[str] = feature(UserInfo.country)
    spend_per_txn: float = feature((col("total_7d") / col("txn_count_7d")).fillnull(0.0))
    is_big_spender: bool

    @extractor(deps=[UserStats])
    @inputs("total_7d", "txn_count_7d")
    @outputs("is_big_spender")
    def big_spender(cls, ts: pd.Series, total_7d: pd.Series, txn_count_7d: pd.Series):
        return pd.DataFrame({"is_big_spender": (total_7d > 1000) & (txn_count_7d >= 3)})
