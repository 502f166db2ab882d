"""A dataset the server fills itself: CSV files dropped into a directory
(see docs/sources.md). The quickstart commits this file after
examples/features.py and drops a file into $THYME_DROP_DIR."""

import os
from datetime import datetime

from thyme.connectors import Files, source
from thyme.datasets import dataset

drop = Files(name="drop")


@source(
    drop.directory(os.path.abspath(os.environ.get("THYME_DROP_DIR", "thyme-drop")), format="csv", prefix="refunds"),
    disorder="1d",
    cdc="append",
    every="1s",
)
@dataset
class Refund:
    uid: int
    amount: float
    ts: datetime
