"""Offline training sets: a spine of N (uid, time) rows against the seed
example's featureset, side by side in one run on the same data:
- Thyme `Client.query_offline` (Arrow IPC in and out through `POST
  /api/v1/query_offline`), every feature of `UserFeatures` (lookups into
  the pipeline's aggregated dataset and user info, an expression, a Python
  extractor), and the four looked-up features only;
- Thyme's SQL form (`spine ASOF LEFT JOIN user_features`), aggregated so
  that the client transfer is not measured;
- Feast `get_historical_features` (local provider, file offline store) over
  the same values: every version of Thyme's `user_stats` and `user_info`
  exported to Parquet, so Feast's point-in-time join sees the same history.

Transactions go through the real pipeline first (ingest excluded from the
timings). Thyme's memory is the server's peak (VmHWM, which includes the
ingest); Feast's is its process's maximum RSS. Run through bench/offline.sh.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from common import start_thyme, vm_hwm_mb, wait_caught_up

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DAY = 86_400_000_000
T0 = 1_704_067_200_000_000  # 2024-01-01


FEAST_SCRIPT = r'''
import json, os, resource, sys, time
from datetime import timedelta
import pandas as pd
from feast import Entity, FeatureStore, FeatureView, Field, FileSource
from feast.types import Float64, Int64, String

repo, out = sys.argv[1], sys.argv[2]
uid = Entity(name="uid", join_keys=["uid"])
stats = FeatureView(
    name="user_stats", entities=[uid], ttl=timedelta(days=3650),
    source=FileSource(path=os.path.join(repo, "user_stats.parquet"), timestamp_field="ts"),
    schema=[Field(name="txn_count_7d", dtype=Int64), Field(name="total_7d", dtype=Float64),
            Field(name="avg_7d", dtype=Float64)])
info = FeatureView(
    name="user_info", entities=[uid], ttl=timedelta(days=3650),
    source=FileSource(path=os.path.join(repo, "user_info.parquet"), timestamp_field="ts"),
    schema=[Field(name="country", dtype=String)])
store = FeatureStore(repo_path=repo)
store.apply([uid, stats, info])
spine = pd.read_parquet(os.path.join(repo, "spine.parquet"))
t = time.perf_counter()
df = store.get_historical_features(
    entity_df=spine,
    features=["user_stats:txn_count_7d", "user_stats:total_7d", "user_stats:avg_7d", "user_info:country"],
).to_df()
secs = time.perf_counter() - t
df.to_parquet(out)
print(json.dumps({"secs": secs, "rows": len(df),
                  "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''


def run_feast(feast_python, work, spine, stats, info):
    import pyarrow as pa
    import pyarrow.parquet as pq
    repo = os.path.join(work, "feast")
    os.makedirs(repo)
    with open(os.path.join(repo, "feature_store.yaml"), "w") as f:
        f.write("project: offline\nregistry: registry.db\nprovider: local\n"
                "online_store:\n  type: sqlite\n  path: online.db\n"
                "offline_store:\n  type: file\nentity_key_serialization_version: 3\n")
    pq.write_table(pa.table({"uid": spine["uid"], "event_timestamp": spine["ts"]}),
                   os.path.join(repo, "spine.parquet"))
    pq.write_table(stats, os.path.join(repo, "user_stats.parquet"))
    pq.write_table(info, os.path.join(repo, "user_info.parquet"))
    script = os.path.join(work, "feast_offline.py")
    with open(script, "w") as f:
        f.write(FEAST_SCRIPT)
    out = os.path.join(work, "feast_out.parquet")
    res = subprocess.run([feast_python, script, repo, out], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"feast failed:\n{res.stderr[-3000:]}")
    r = json.loads(res.stdout.strip().splitlines()[-1])
    return r, pq.read_table(out).to_pandas()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--thyme", required=True)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--txns", type=int, default=1_000_000)
    ap.add_argument("--spine", type=int, default=1_000_000)
    ap.add_argument("--feast-python", default=None, help="python of a venv with feast (skipped when absent)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    import numpy as np
    import pandas as pd
    import psycopg
    import pyarrow as pa

    sys.path.insert(0, REPO)
    from examples import features as ex
    from thyme.client import Client

    rng = np.random.default_rng(42)
    work = tempfile.mkdtemp(prefix="thyme-bench-offline-")
    proc, ports = start_thyme(args.thyme, os.path.join(work, "thyme"))
    results = []
    try:
        control, query = f"http://127.0.0.1:{ports['control']}", f"http://127.0.0.1:{ports['query']}"
        client = Client(control, query, timeout=3600)
        client.commit("bench offline", datasets=[ex.Transaction, ex.UserInfo, ex.UserStats, ex.CountryStats],
                      featuresets=[ex.UserFeatures])
        span = 90 * DAY
        users = np.arange(1, args.users + 1)
        client.log("main", "UserInfo", pd.DataFrame({
            "uid": users, "country": np.array(["fr", "de", "us", "it"])[users % 4],
            "signup_time": pd.to_datetime(np.full(len(users), T0 - 100 * DAY), unit="us", utc=True),
            "ts": pd.to_datetime(T0 + rng.integers(0, span // 2, len(users)), unit="us", utc=True)}))
        t_ingest = time.perf_counter()
        chunk = 200_000
        times = np.sort(T0 + rng.integers(0, span, args.txns))
        for i in range(0, args.txns, chunk):
            n = min(chunk, args.txns - i)
            client.log("main", "Transaction", pd.DataFrame({
                "uid": rng.integers(1, args.users + 1, n), "amount": rng.uniform(1, 400, n).round(2),
                "merchant": np.array(["x", "y", "z"])[rng.integers(0, 3, n)],
                "ts": pd.to_datetime(times[i:i + n], unit="us", utc=True)}))
        wait_caught_up(control)
        print(f"ingest + pipelines: {args.txns} transactions in {time.perf_counter() - t_ingest:.1f} s", flush=True)
        spine = pd.DataFrame({"uid": rng.integers(1, args.users + 1, args.spine),
                              "ts": pd.to_datetime(T0 + rng.integers(0, span + 7 * DAY, args.spine), unit="us",
                                                   utc=True)})
        four = ["UserFeatures.txn_count_7d", "UserFeatures.total_7d", "UserFeatures.avg_7d", "UserFeatures.country"]
        thyme_four = None
        for label, outputs in (("every feature (7, incl. a Python extractor)", ["UserFeatures"]),
                               ("4 looked-up features", four)):
            t = time.perf_counter()
            out = client.query_offline(["UserFeatures.uid"], outputs, spine, timestamp_column="ts")
            secs = time.perf_counter() - t
            assert len(out) == len(spine)
            if outputs == four:
                thyme_four = out
            results.append(("Thyme query_offline (Arrow over HTTP)", label, secs, vm_hwm_mb(proc.pid), len(out)))
            print(f"{results[-1][0]:40} {label:45} {secs:8.2f} s", flush=True)
        # The SQL form (spine loaded first, not timed).
        with psycopg.connect(f"host=127.0.0.1 port={ports['pg']} user=thyme dbname=thyme", autocommit=True) as conn:
            conn.execute("CREATE TABLE spine (uid BIGINT, ts TIMESTAMPTZ)")
            with conn.cursor() as cur:
                with cur.copy("COPY spine (uid, ts) FROM STDIN") as cp:
                    for u, ts in zip(spine["uid"].tolist(), spine["ts"].astype("int64").tolist()):
                        cp.write_row((u, pd.Timestamp(ts, unit="ns", tz="UTC").isoformat()))
            t = time.perf_counter()
            agg = conn.execute("SELECT count(*), avg(f.txn_count_7d), count(f.country) FROM spine s "
                               "ASOF LEFT JOIN user_features f MATCH_CONDITION (s.ts >= f.ts) ON s.uid = f.uid"
                               ).fetchall()
            secs = time.perf_counter() - t
            results.append(("Thyme SQL ASOF JOIN user_features", "every feature, aggregated", secs,
                            vm_hwm_mb(proc.pid), int(agg[0][0])))
            print(f"{results[-1][0]:40} {results[-1][1]:45} {secs:8.2f} s", flush=True)
            if args.feast_python:
                stats = pa.table(pd.DataFrame(conn.execute(
                    "SELECT uid, ts, txn_count_7d, total_7d, avg_7d FROM history.user_stats WHERE NOT _deleted"
                ).fetchall(), columns=["uid", "ts", "txn_count_7d", "total_7d", "avg_7d"]))
                info = pa.table(pd.DataFrame(conn.execute(
                    "SELECT uid, ts, country FROM history.user_info WHERE NOT _deleted").fetchall(),
                    columns=["uid", "ts", "country"]))
        if args.feast_python:
            r, feast_df = run_feast(args.feast_python, work, spine, stats, info)
            results.append(("Feast get_historical_features (file store)", "4 looked-up features", r["secs"],
                            r["maxrss_mb"], r["rows"]))
            print(f"{results[-1][0]:40} {results[-1][1]:45} {r['secs']:8.2f} s", flush=True)
            # How often the two agree (Feast keeps the last version at or
            # before each time; Thyme's windows also decay between events).
            a = thyme_four.assign(uid=spine["uid"].to_numpy(),
                                  ts=pd.to_datetime(spine["ts"], utc=True).astype("datetime64[us, UTC]").astype("int64").to_numpy())
            b = feast_df.rename(columns={"event_timestamp": "ts"})
            b["ts"] = pd.to_datetime(b["ts"], utc=True).astype("datetime64[us, UTC]").astype("int64")
            m = a.merge(b, on=["uid", "ts"], how="inner")
            same_country = (m["UserFeatures.country"].fillna("") == m["country"].fillna("")).mean()
            same_count = (m["UserFeatures.txn_count_7d"] == m["txn_count_7d"].fillna(0)).mean()
            print(f"agreement: country {same_country:.4f}, txn_count_7d {same_count:.4f} over {len(m)} rows",
                  flush=True)
            results.append(("(agreement with Thyme on the rows Feast returned)",
                            f"country {same_country:.2%}, 7d count {same_count:.2%}", None, None, len(m)))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(work, ignore_errors=True)
    base = next((r[2] for r in results if r[0].startswith("Feast")), None)
    table = ["| engine | features | seconds | spine rows/s | vs Feast | peak memory MiB | rows returned |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for name, what, secs, mem, n in results:
        if secs is None:
            table.append(f"| {name} | {what} | | | | | {n:,} |")
            continue
        ratio = f"{base / secs:.1f}x" if base else "-"
        table.append(f"| {name} | {what} | {secs:.2f} | {args.spine / secs:,.0f} | {ratio} | {mem:,.0f} | {n:,} |")
    text = "\n".join(table)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
