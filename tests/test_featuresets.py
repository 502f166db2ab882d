"""The seed example's featureset served three ways, against a brute-force
oracle: `GET /features` (with and without `ts`), `POST /api/v1/query` (one
batch, a timestamp per row; also through `Client.query_offline`) and the
SQL view (`SELECT * FROM user_features WHERE uid = $1 AS OF $2`, psycopg).

Transactions arrive out of order (within the source's disorder), user
info changes over time; the read times are random, event times, and the
7-day window edges (`e + 7d` still counts `e`, `e + 7d + 1µs` no longer
does); some users are unknown (defaults)."""

import os
import random
import sys
import time
import urllib.parse

import pandas as pd
import psycopg

from thyme.client import Client

from test_pipeline_oracle import close, iso, ts_frame, wait_caught_up

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from examples import features as ex  # noqa: E402

DAY = 86_400_000_000
HOUR = 3_600_000_000
T0 = 1_704_067_200_000_000  # 2024-01-01T00:00:00Z
FEATURES = ["uid", "txn_count_7d", "total_7d", "avg_7d", "country", "spend_per_txn", "is_big_spender"]


class Oracle:
    def __init__(self, txns, info):
        self.txns = txns
        self.info = info

    def features(self, uid, t):
        evs = [e for e in self.txns if e["uid"] == uid and t - 7 * DAY <= e["ts"] <= t]
        n = len(evs)
        total = float(sum(e["amount"] for e in evs))
        versions = [r for r in self.info if r[0] == uid and r[2] <= t]
        country = max(versions, key=lambda r: r[2])[1] if versions else None
        return {
            "uid": uid,
            "txn_count_7d": n,
            "total_7d": total,
            "avg_7d": total / n if n else 0.0,
            "country": country,
            "spend_per_txn": total / n if n else 0.0,
            "is_big_spender": total > 1000 and n >= 3,
        }


def same(got, want):
    for k in FEATURES:
        g, w = got[k], want[k]
        if isinstance(w, float):
            if not close(g, w):
                return False
        elif g != w:
            return False
    return True


def setup_example(thyme, rng):
    client = Client(thyme.control_url, thyme.query_url)
    client.commit("example", datasets=[ex.Transaction, ex.UserInfo, ex.UserStats, ex.CountryStats],
                  featuresets=[ex.UserFeatures])
    now = int(time.time() * 1_000_000)
    uids = list(range(1, 7))
    info = []
    for u in uids:
        info.append((u, rng.choice(["fr", "de"]), T0 - 10 * DAY))
        info.append((u, rng.choice(["fr", "de", "us"]), T0 + rng.randrange(40 * DAY)))
    info.append((1, "it", now - 2 * DAY))
    info.sort(key=lambda r: r[2])
    client.log("main", "UserInfo", pd.DataFrame({
        "uid": [r[0] for r in info], "country": [r[1] for r in info],
        "signup_time": ts_frame([T0 - 100 * DAY] * len(info)), "ts": ts_frame([r[2] for r in info]),
    }))
    txns = []
    for i in range(400):
        base = T0 + i * (45 * DAY // 400)
        txns.append({"uid": rng.choice(uids), "amount": round(rng.uniform(1, 400), 2),
                     "merchant": rng.choice("xyz"), "ts": base + rng.randrange(-2 * DAY, 2 * DAY)})
    # Recent activity, so that reads at "now" are not all defaults.
    recent = [{"uid": rng.choice(uids[:3]), "amount": round(rng.uniform(1, 900), 2), "merchant": "r",
               "ts": now - rng.randrange(1, 72) * HOUR} for _ in range(20)]
    # Logged in order of `base`: event times out of order by up to 4 days,
    # within the source's 14-day disorder (nothing is late).
    rng.shuffle(recent)
    for chunk in (txns[:200], txns[200:], recent):
        client.log("main", "Transaction", pd.DataFrame({
            "uid": [r["uid"] for r in chunk], "amount": [r["amount"] for r in chunk],
            "merchant": [r["merchant"] for r in chunk], "ts": ts_frame([r["ts"] for r in chunk]),
        }))
    ps = wait_caught_up(thyme)
    assert all(p["late_events"] == 0 for p in ps), ps
    return client, Oracle(txns + recent, info), txns, uids


def probes(rng, txns, uids, k=50):
    out = []
    for _ in range(k):
        e = rng.choice(txns)
        uid = rng.choice(uids + [99])  # 99 is never seen: defaults
        t = rng.choice([
            e["ts"], e["ts"] + 7 * DAY, e["ts"] + 7 * DAY + 1, e["ts"] - 1,
            T0 + rng.randrange(60 * DAY),
        ])
        out.append((e["uid"] if rng.random() < 0.6 else uid, t))
    return out


def test_example_featureset_matches_brute_force_over_http_and_sql(thyme):
    seed = int(os.environ.get("THYME_SEED", random.randrange(1 << 30)))
    print(f"test_example_featureset_matches_brute_force_over_http_and_sql: THYME_SEED={seed}")
    rng = random.Random(seed)
    client, oracle, txns, uids = setup_example(thyme, rng)
    points = probes(rng, txns, uids)
    bad = []

    # GET /features, point in time.
    for uid, t in points:
        status, got = thyme.query_http("GET", f"/features?featureset=UserFeatures&uid={uid}&ts={urllib.parse.quote(iso(t))}")
        assert status == 200, got
        assert list(got) == FEATURES, got  # declaration order
        want = oracle.features(uid, t)
        if not same(got, want):
            bad.append(("GET ts", uid, iso(t), got, want))

    # GET /features, now (the recent events are within the window).
    for uid in uids + [99]:
        status, got = thyme.query_http("GET", f"/features?featureset=UserFeatures&uid={uid}")
        assert status == 200, got
        want = oracle.features(uid, int(time.time() * 1_000_000))
        if not same(got, want):
            bad.append(("GET now", uid, got, want))

    # POST /api/v1/query: one batch, a timestamp per row.
    frame = client.query([ex.UserFeatures.uid], [ex.UserFeatures],
                         pd.DataFrame({"UserFeatures.uid": [u for u, _ in points]}),
                         timestamps=[iso(t) for _, t in points])
    assert len(frame) == len(points)
    for i, (uid, t) in enumerate(points):
        got = {f: frame[f"UserFeatures.{f}"].iloc[i] for f in FEATURES}
        got = {k: (None if v is None or (isinstance(v, float) and v != v) else v) for k, v in got.items()}
        got = {k: (v.item() if hasattr(v, "item") else v) for k, v in got.items()}
        want = oracle.features(uid, t)
        if not same(got, want):
            bad.append(("query", uid, iso(t), got, want))

    # query_offline: timestamps from a column of the input frame.
    offline = client.query_offline(
        [ex.UserFeatures.uid], [ex.UserFeatures.txn_count_7d, ex.UserFeatures.country],
        pd.DataFrame({"UserFeatures.uid": [u for u, _ in points[:10]], "when": [iso(t) for _, t in points[:10]]}),
        timestamp_column="when")
    assert list(offline.columns) == ["UserFeatures.txn_count_7d", "UserFeatures.country", "when"]
    for i, (uid, t) in enumerate(points[:10]):
        want = oracle.features(uid, t)
        if offline["UserFeatures.txn_count_7d"].iloc[i] != want["txn_count_7d"]:
            bad.append(("offline", uid, iso(t), offline["UserFeatures.txn_count_7d"].iloc[i], want["txn_count_7d"]))

    # The SQL view, with the read time bound as a parameter.
    with psycopg.connect(thyme.dsn, autocommit=True) as conn:
        for uid, t in points:
            cur = conn.execute("SELECT * FROM user_features WHERE uid = %s AS OF %s",
                               (uid, pd.Timestamp(t, unit="us", tz="UTC").to_pydatetime()))
            names = [d.name for d in cur.description]
            assert names == FEATURES
            rows = cur.fetchall()
            assert len(rows) == 1
            got = dict(zip(names, rows[0]))
            want = oracle.features(uid, t)
            if not same(got, want):
                bad.append(("sql", uid, iso(t), got, want))
        # Several inputs at once, now.
        rows = conn.execute("SELECT uid, txn_count_7d, country FROM user_features WHERE uid IN (1, 2, 99) ORDER BY uid").fetchall()
        now = int(time.time() * 1_000_000)
        assert [(r[0], r[1], r[2]) for r in rows] == [
            (u, oracle.features(u, now)["txn_count_7d"], oracle.features(u, now)["country"]) for u in (1, 2, 99)]
    assert not bad, f"{len(bad)} mismatches: {bad[:8]} (THYME_SEED={seed})"
