"""Definitions served by bench/features.py: one keyed dataset of
pre-computed per-user statistics (loaded directly, so every peer serves
the same values) and two featuresets over it.

- ``Lookups``: four lookups and one expression (native extractors only);
- ``WithPython``: the same plus a Python extractor (one call per request).
"""

from datetime import datetime
from typing import Optional

import pandas as pd

from thyme.connectors import Webhook, source
from thyme.datasets import dataset, field
from thyme.expr import col
from thyme.featuresets import extractor, feature, featureset
from thyme.lib import inputs, outputs

hook = Webhook(name="bench")


@source(hook.endpoint("Stats"), disorder="1d", cdc="upsert")
@dataset(index=True)
class BenchStats:
    uid: int = field(key=True)
    txn_count_7d: int
    total_7d: float
    avg_7d: float
    country: str
    ts: datetime


@featureset
class Lookups:
    uid: int
    txn_count_7d: int = feature(BenchStats.txn_count_7d, default=0)
    total_7d: float = feature(BenchStats.total_7d, default=0.0)
    avg_7d: float = feature(BenchStats.avg_7d, default=0.0)
    country: Optional[str] = feature(BenchStats.country)
    spend_per_txn: float = feature((col("total_7d") / col("txn_count_7d")).fillnull(0.0))


@featureset
class WithPython:
    uid: int
    txn_count_7d: int = feature(BenchStats.txn_count_7d, default=0)
    total_7d: float = feature(BenchStats.total_7d, default=0.0)
    avg_7d: float = feature(BenchStats.avg_7d, default=0.0)
    country: Optional[str] = feature(BenchStats.country)
    is_big_spender: bool

    @extractor
    @inputs("total_7d", "txn_count_7d")
    @outputs("is_big_spender")
    def big_spender(cls, ts: pd.Series, total_7d: pd.Series, txn_count_7d: pd.Series):
        return pd.DataFrame({"is_big_spender": (total_7d > 1000) & (txn_count_7d >= 3)})
