"""Point lookups while other work runs: p50 / p99 latency of
`SELECT * FROM t WHERE k = $1` (prepared, 2 client threads) alone, with 100
idle connections open, and with a heavy analytical query running on
another connection the whole time. The goal of issue 20: p99 with the heavy
query under 2x the p99 alone."""
import argparse
import os
import random
import statistics
import sys
import tempfile
import threading
import time

import psycopg

sys.path.insert(0, os.path.dirname(__file__))
from common import start_thyme  # noqa: E402

HEAVY = ("SELECT count(*), sum(length(a.v || b.v)) FROM t a JOIN t b ON a.k = b.k "
         "WHERE a.k % 3 <> 1")


def lookups(dsn, rows, seconds, threads=2):
    lat = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def worker(seed):
        rng = random.Random(seed)
        mine = []
        with psycopg.connect(dsn, autocommit=True) as c:
            cur = c.cursor()
            while time.monotonic() < stop:
                k = rng.randrange(1, rows + 1)
                t0 = time.perf_counter()
                cur.execute("SELECT * FROM t WHERE k = %s", (k,), prepare=True)
                assert cur.fetchone()[0] == k
                mine.append(time.perf_counter() - t0)
        with lock:
            lat.extend(mine)

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    lat.sort()
    q = statistics.quantiles(lat, n=100)
    return len(lat) / seconds, q[49] * 1000, q[98] * 1000


def scenarios(thyme, rows, seconds, server_args):
    """The three scenarios on one fresh server; rows of (scenario, tps, p50,
    p99) and how often the heavy query ran."""
    with tempfile.TemporaryDirectory() as tmp:
        proc, ports = start_thyme(thyme, os.path.join(tmp, "data"), args=("--max-connections", "200", *server_args))
        dsn = f"host=127.0.0.1 port={ports['pg']} user=thyme dbname=thyme"
        try:
            with psycopg.connect(dsn, autocommit=True) as c:
                c.execute("CREATE TABLE t (k BIGINT PRIMARY KEY, ts TIMESTAMPTZ, v TEXT)")
                with c.cursor().copy("COPY t FROM STDIN WITH (FORMAT csv)") as cp:
                    for k in range(1, rows + 1):
                        cp.write(f"{k},2024-01-01T00:00:00Z,value-{k}\n")
            # Untimed warm-up: caches, and the compactions the load started.
            lookups(dsn, rows, min(5.0, seconds))
            results = [("alone",) + lookups(dsn, rows, seconds)]
            idle = [psycopg.connect(dsn, autocommit=True) for _ in range(100)]
            results.append(("100 idle connections open",) + lookups(dsn, rows, seconds))
            for c in idle:
                c.close()
            done = threading.Event()
            heavy_runs = [0]

            def heavy():
                with psycopg.connect(dsn, autocommit=True) as c:
                    while not done.is_set():
                        c.execute(HEAVY).fetchall()
                        heavy_runs[0] += 1

            h = threading.Thread(target=heavy)
            h.start()
            time.sleep(1)
            results.append(("heavy analytical query running",) + lookups(dsn, rows, seconds))
            done.set()
            h.join()
        finally:
            proc.terminate()
            proc.wait()
    return results, heavy_runs[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--thyme", required=True)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--out")
    ap.add_argument("--priorities", default="idle",
                    help="comma-separated --query-priority values, each on its own server (e.g. idle,low)")
    ap.add_argument("--server-args", default="", help="more `thyme serve` flags")
    a = ap.parse_args()
    lines = ["| query pool priority | scenario | lookups/s | p50 ms | p99 ms | p99 / p99 alone | heavy query runs |",
             "|---|---|---|---|---|---|---|"]
    for prio in a.priorities.split(","):
        results, runs = scenarios(a.thyme, a.rows, a.seconds, ["--query-priority", prio, *a.server_args.split()])
        base = results[0][3]
        for name, tps, p50, p99 in results:
            heavy = str(runs) if name.startswith("heavy") else ""
            lines.append(f"| {prio} | {name} | {tps:,.0f} | {p50:.3f} | {p99:.3f} | {p99 / base:.2f} | {heavy} |")
    table = "\n".join(lines) + (
        f"\n\n{a.rows:,} rows; 2 lookup clients (psycopg 3, prepared); {a.seconds:.0f} s per scenario after "
        f"an untimed warm-up; heavy query `{HEAVY}` on a third connection, back to back.")
    print(table)
    if a.out:
        with open(a.out, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
