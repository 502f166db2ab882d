"""ASOF join throughput: Thyme's SQL `ASOF LEFT JOIN` vs DuckDB's `ASOF LEFT
JOIN` and Polars' `join_asof`, on the same generated data (loading
excluded), N left rows x N right rows over K keys. Each engine computes the
full join and a small aggregate of it (so no engine pays for shipping N
rows to the client); the aggregates must agree. Peak memory: the Thyme
server's VmHWM (includes loading), and each peer's own process's maximum
RSS (each runs in a child process).

Run through bench/asof.sh.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from common import start_thyme, vm_hwm_mb

T0 = 1_704_067_200  # 2024-01-01, seconds

PEER = r'''
import json, sys, time, resource
engine, left, right = sys.argv[1], sys.argv[2], sys.argv[3]
if engine == "duckdb":
    import duckdb
    db = duckdb.connect()
    db.execute("SET enable_progress_bar = false")
    db.execute(f"CREATE TABLE l AS SELECT * FROM read_parquet('{left}')")
    db.execute(f"CREATE TABLE r AS SELECT * FROM read_parquet('{right}')")
    t = time.perf_counter()
    cnt, matched, total = db.execute(
        "SELECT count(*), count(r.v), sum(r.v) FROM l ASOF LEFT JOIN r ON l.uid = r.uid AND l.ts >= r.ts").fetchone()
    secs = time.perf_counter() - t
else:
    import polars as pl
    l = pl.read_parquet(left).sort("ts")
    r = pl.read_parquet(right).sort("ts")
    t = time.perf_counter()
    j = l.join_asof(r, on="ts", by="uid", strategy="backward")
    cnt, matched, total = j.height, j["v"].count(), j["v"].sum()
    secs = time.perf_counter() - t
print(json.dumps({"secs": secs, "rows": int(cnt), "matched": int(matched), "sum": int(total or 0),
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''



def gen(n, keys, work, seed):
    import numpy as np
    import pandas as pd
    rng = np.random.default_rng(seed)
    span = 365 * 86400
    left = pd.DataFrame({"id": np.arange(n, dtype=np.int64), "uid": rng.integers(0, keys, n, dtype=np.int64),
                         "ts": pd.to_datetime(T0 + rng.integers(0, span, n), unit="s", utc=True)})
    right = pd.DataFrame({"uid": rng.integers(0, keys, n, dtype=np.int64),
                          "ts": pd.to_datetime(T0 - 86400 + rng.integers(0, span, n), unit="s", utc=True),
                          "v": rng.integers(0, 1000, n, dtype=np.int64)})
    # Distinct (uid, ts) on the right: engines break ties differently.
    right = right.drop_duplicates(["uid", "ts"])
    paths = {}
    for name, df in (("l", left), ("r", right)):
        df.to_parquet(os.path.join(work, f"{name}.parquet"))
        df.to_csv(os.path.join(work, f"{name}.csv"), index=False, header=False,
                  date_format="%Y-%m-%dT%H:%M:%SZ")
        paths[name] = os.path.join(work, f"{name}.parquet")
    return paths, len(right)


def psql(port, *args, input=None):
    return subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(port),
                           "-U", "thyme", "-d", "thyme", *args], input=input, capture_output=True, text=True,
                          check=True).stdout



def thyme(binary, work, runs):
    proc, ports = start_thyme(binary, os.path.join(work, "thyme"))
    try:
        psql(ports["pg"], "-c", "CREATE TABLE l (id BIGINT, uid BIGINT, ts TIMESTAMPTZ)",
             "-c", "CREATE TABLE r (uid BIGINT, ts TIMESTAMPTZ, v BIGINT)",
             "-c", f"\\copy l FROM '{work}/l.csv' WITH (FORMAT csv)",
             "-c", f"\\copy r FROM '{work}/r.csv' WITH (FORMAT csv)")
        best = None
        for _ in range(runs):
            t = time.perf_counter()
            out = psql(ports["pg"], "-c",
                       "SELECT count(*), count(r.v), sum(r.v) FROM l ASOF LEFT JOIN r ON l.uid = r.uid AND l.ts >= r.ts")
            secs = time.perf_counter() - t
            best = secs if best is None else min(best, secs)
        cnt, matched, total = out.strip().split("|")
        return {"secs": best, "rows": int(cnt), "matched": int(matched), "sum": int(total or 0),
                "rss_mb": vm_hwm_mb(proc.pid)}
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def peer(engine, paths, runs):
    best = None
    for _ in range(runs):
        p = subprocess.run([sys.executable, "-c", PEER, engine, paths["l"], paths["r"]], capture_output=True,
                           text=True, check=True)
        r = json.loads(p.stdout.strip().splitlines()[-1])
        if best is None or r["secs"] < best["secs"]:
            best = r
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--thyme", required=True)
    ap.add_argument("--sizes", default="1000000,10000000")
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    lines = ["| rows (left x right) | engine | seconds | x DuckDB | peak memory MiB |", "|---|---|---:|---:|---:|"]
    for n in [int(s) for s in args.sizes.split(",")]:
        work = tempfile.mkdtemp(prefix="thyme-bench-asof-")
        try:
            paths, nr = gen(n, args.keys, work, seed=n)
            res = {"DuckDB": peer("duckdb", paths, args.runs), "Polars": peer("polars", paths, args.runs),
                   "Thyme": thyme(args.thyme, work, args.runs)}
            base = (res["DuckDB"]["rows"], res["DuckDB"]["matched"], res["DuckDB"]["sum"])
            for name, r in res.items():
                if (r["rows"], r["matched"], r["sum"]) != base:
                    raise SystemExit(f"{name} disagrees with DuckDB at {n}: {r} vs {base}")
            for name, r in res.items():
                line = (f"| {n:,} x {nr:,} | {name} | {r['secs']:.3f} | {r['secs'] / res['DuckDB']['secs']:.2f} "
                        f"| {r['rss_mb']:,.0f} |")
                print(line, flush=True)
                lines.append(line)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    text = "\n".join(lines)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
