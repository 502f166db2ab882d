"""Exactly once: `kill -9` at random moments during ingest and pipeline
processing; the aggregated output equals an uninterrupted run's. Size set by
THYME_CRASH_EVENTS / THYME_CRASH_KILLS (CI: 100,000 events, 20 kills;
`bench/crash.py` runs 1M with the release build)."""

import os
import random
import tempfile

from conftest import thyme_bin
from crash_harness import run


def test_kill9_during_ingest_and_pipelines_changes_nothing():
    seed = int(os.environ.get("THYME_SEED", random.randrange(1 << 30)))
    print(f"test_kill9_during_ingest_and_pipelines_changes_nothing: THYME_SEED={seed}")
    n = int(os.environ.get("THYME_CRASH_EVENTS", "100000"))
    kills = int(os.environ.get("THYME_CRASH_KILLS", "20"))
    with tempfile.TemporaryDirectory(prefix="thyme-crash-") as d:
        killed, diff = run(thyme_bin(), d, n, kills, seed)
    assert killed == kills
    assert diff is None, f"seed {seed}: {diff}"
