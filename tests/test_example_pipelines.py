"""The seed example's pipelines against a brute-force oracle: per-user 7-day
and 30-day aggregates and per-country 1-day totals (Python lambda filter +
as-of join), read with `SELECT ... AS OF`. The transactions are logged
before the pipelines are committed (so the first run is a backfill of the
full history), then more arrive live."""

import os
import random
import time

import pandas as pd
import psycopg

from thyme.client import Client

from test_pipeline_oracle import close, iso, ts_frame, wait_caught_up

import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from examples import features as ex  # noqa: E402

DAY = 86_400_000_000
T0 = 1_704_067_200_000_000  # 2024-01-01T00:00:00Z


def log_txns(client, rows):
    client.log("main", "Transaction", pd.DataFrame({
        "uid": [r["uid"] for r in rows], "amount": [r["amount"] for r in rows],
        "merchant": [r["merchant"] for r in rows], "ts": ts_frame([r["ts"] for r in rows]),
    }))


def test_example_aggregates_backfilled_then_live_match_brute_force(thyme):
    seed = int(os.environ.get("THYME_SEED", random.randrange(1 << 30)))
    print(f"test_example_aggregates_backfilled_then_live_match_brute_force: THYME_SEED={seed}")
    rng = random.Random(seed)
    client = Client(thyme.control_url)
    client.commit("sources first", datasets=[ex.Transaction, ex.UserInfo], incremental=True)

    uids = list(range(1, 7))
    info = []
    for u in uids:
        info.append((u, rng.choice(["fr", "de"]), T0 - 10 * DAY))
        info.append((u, rng.choice(["fr", "de", "us"]), T0 + rng.randrange(60 * DAY)))
    client.log("main", "UserInfo", pd.DataFrame({
        "uid": [r[0] for r in info], "country": [r[1] for r in info],
        "signup_time": ts_frame([T0 - 100 * DAY] * len(info)), "ts": ts_frame([r[2] for r in info]),
    }))

    n = 600
    txns = []
    for i in range(n):
        base = T0 + i * (90 * DAY // n)
        late = rng.random() < 0.01 and i > 100
        ts = base - 20 * DAY if late else base + rng.randrange(-3 * DAY, 3 * DAY)
        txns.append({"uid": rng.choice(uids), "amount": round(rng.uniform(-20, 300), 2),
                     "merchant": rng.choice("xyz"), "ts": ts, "late": late})
    # Same watermark rule as the engine: 14 days behind the newest event.
    newest = None
    for t in txns:
        t["late"] = newest is not None and t["ts"] < newest - 14 * DAY
        newest = t["ts"] if newest is None else max(newest, t["ts"])
    half = n // 2
    log_txns(client, txns[:half])

    # Commit the whole file: UserStats and CountryStats backfill.
    client.commit("pipelines", datasets=[ex.Transaction, ex.UserInfo, ex.UserStats, ex.CountryStats],
                  featuresets=[ex.UserFeatures])
    wait_caught_up(thyme)
    ps = client.pipelines()
    stats = next(p for p in ps if p["pipeline"] == "compute")
    assert stats["inputs"][0]["offset"] == half and stats["inputs"][0]["end"] == half, stats
    log_txns(client, txns[half:])
    wait_caught_up(thyme)

    applied = [t for t in txns if not t["late"]]
    times = [rng.randrange(T0 - DAY, T0 + 130 * DAY) for _ in range(40)]
    for t in rng.sample(applied, 25):
        times += [t["ts"], t["ts"] + 7 * DAY, t["ts"] + 7 * DAY + 1, t["ts"] + 30 * DAY + 1, t["ts"] + DAY + 1]

    def window(u, t, days):
        return [x for x in applied if x["uid"] == u and t - days * DAY <= x["ts"] <= t]

    def country_at(u, t):
        vs = [r for r in sorted(info, key=lambda r: r[2]) if r[0] == u and r[2] <= t]
        return vs[-1][1] if vs else None

    checked = 0
    with psycopg.connect(thyme.dsn, autocommit=True) as conn:
        for t in times:
            rows = conn.execute(
                "SELECT uid, txn_count_7d, total_7d, avg_7d, txn_count_30d, total_30d "
                f"FROM user_stats AS OF '{iso(t)}'").fetchall()
            got = {r[0]: r[1:] for r in rows}
            for u in uids:
                where = f"seed {seed}: uid {u} at {iso(t)}"
                if not any(x["uid"] == u and x["ts"] <= t for x in applied):
                    assert u not in got, where
                    continue
                w7, w30 = window(u, t, 7), window(u, t, 30)
                c7, s7 = len(w7), sum(x["amount"] for x in w7)
                exp = (c7, s7, s7 / c7 if c7 else 0.0, len(w30), sum(x["amount"] for x in w30))
                g = got[u]
                assert g[0] == exp[0] and g[3] == exp[3], (where, g, exp)
                assert close(g[1], exp[1]) and close(g[2], exp[2]) and close(g[4], exp[4]), (where, g, exp)
                checked += 1
            rows = conn.execute(f"SELECT country, total_1d FROM country_stats AS OF '{iso(t)}'").fetchall()
            got = dict(rows)
            positive = [(country_at(x["uid"], x["ts"]), x) for x in applied if x["amount"] > 0]
            for c in ["fr", "de", "us"]:
                mine = [x for cc, x in positive if cc == c]
                if not any(x["ts"] <= t for x in mine):
                    assert c not in got, (seed, c, iso(t))
                    continue
                exp = sum(x["amount"] for x in mine if t - DAY <= x["ts"] <= t)
                assert close(got[c], exp), (seed, c, iso(t), got[c], exp)
                checked += 1
        n_late = conn.execute("SELECT count(*) FROM thyme_late_events WHERE pipeline = 'compute'").fetchone()[0]
        assert n_late == sum(t["late"] for t in txns)
    assert checked > 300, checked
