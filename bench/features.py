"""Online feature serving: latency (p50 / p99) and throughput at 1, 8 and 64
concurrent clients, side by side in one run:

- Thyme `GET /features` for a featureset of lookups and an expression
  (``Lookups``) and for one with a Python extractor (``WithPython``), load
  from wrk;
- the same featuresets as SQL views over pgwire
  (`SELECT * FROM lookups WHERE uid = $1`, pgbench, prepared statements);
- Feast's Python feature server (`feast serve`, SQLite online store) serving
  the same pre-computed values (`POST /get-online-features`, wrk);
- Redis `GET` of a pre-computed JSON vector (redis-benchmark): the floor.

Every peer serves the same N users' rows; each request asks for one random
user. Run through bench/features.sh (which builds and installs the peers).
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import tempfile
import urllib.request

from common import free_port, wait_port
from common import start_thyme as start_server

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
T_NOW = "2024-06-01T00:00:00Z"




def rows(n):
    """The pre-computed statistics of user 1..n (deterministic)."""
    out = []
    for u in range(1, n + 1):
        c = u % 17
        total = round((u * 37 % 5000) / 3.0, 2)
        out.append((u, c, total, round(total / c, 4) if c else 0.0, ["fr", "de", "us", "it"][u % 4]))
    return out


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read() or b"null")


# -- load generators ----------------------------------------------------------

WRK_GET = """
local n = tonumber(os.getenv("BENCH_N"))
local path = os.getenv("BENCH_PATH")
math.randomseed(os.time() + (os.clock() * 1000000))
request = function()
  return wrk.format("GET", path .. math.random(1, n))
end
"""

WRK_FEAST = """
local n = tonumber(os.getenv("BENCH_N"))
math.randomseed(os.time() + (os.clock() * 1000000))
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  local body = '{"features": ["user_stats:txn_count_7d", "user_stats:total_7d", "user_stats:avg_7d", "user_stats:country"], "entities": {"uid": [' .. math.random(1, n) .. ']}}'
  return wrk.format(nil, "/get-online-features", nil, body)
end
"""


def to_ms(s):
    m = re.match(r"([\d.]+)(us|ms|s)", s)
    v = float(m.group(1))
    return {"us": v / 1000, "ms": v, "s": v * 1000}[m.group(2)]


def wrk(url, script, clients, secs, env):
    threads = min(clients, 2)
    out = subprocess.run(["wrk", "-t", str(threads), "-c", str(clients), "-d", f"{secs}s", "--latency", "-s", script, url],
                         capture_output=True, text=True, env={**os.environ, **env}, check=True).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw error responses:\n{out}")
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m and sum(int(x) for x in m.groups()) > 0:
        print(f"  (wrk: socket errors {m.group(0)})", flush=True)
    p50 = to_ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = to_ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return rps, p50, p99


def pgbench(port, sql, n, clients, secs, work):
    script = os.path.join(work, "view.sql")
    with open(script, "w") as f:
        f.write(f"\\set uid random(1, {n})\n{sql}\n")
    logdir = tempfile.mkdtemp(dir=work)
    subprocess.run(["pgbench", "-n", "-M", "prepared", "-c", str(clients), "-j", str(min(clients, 2)), "-T", str(secs),
                    "-f", script, "-l", "-h", "127.0.0.1", "-p", str(port), "-U", "thyme", "thyme"],
                   cwd=logdir, capture_output=True, text=True, check=True)
    lat = []
    for name in os.listdir(logdir):
        with open(os.path.join(logdir, name)) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3:
                    lat.append(int(parts[2]) / 1000.0)
    shutil.rmtree(logdir, ignore_errors=True)
    lat.sort()
    if not lat:
        raise RuntimeError("pgbench logged no transactions")
    return len(lat) / secs, lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))]


def redis_bench(port, n, clients, secs):
    total = 0
    # Size the run to about `secs` seconds from a short probe.
    probe = subprocess.run(["redis-benchmark", "-p", str(port), "-c", str(clients), "-n", "20000", "-r", str(n), "--csv",
                            "GET", "u:__rand_int__"], capture_output=True, text=True, check=True).stdout
    rps = float(list(csv_rows(probe))[0]["rps"])
    total = max(20000, int(rps * secs))
    out = subprocess.run(["redis-benchmark", "-p", str(port), "-c", str(clients), "-n", str(total), "-r", str(n), "--csv",
                          "GET", "u:__rand_int__"], capture_output=True, text=True, check=True).stdout
    r = list(csv_rows(out))[0]
    return float(r["rps"]), float(r["p50_latency_ms"]), float(r["p99_latency_ms"])


def csv_rows(text):
    import csv
    import io
    return csv.DictReader(io.StringIO(text))


# -- peers --------------------------------------------------------------------

def start_thyme(binary, work, n):
    proc, ports = start_server(binary, os.path.join(work, "thyme"))
    import features_defs as d
    from thyme.client import Client
    client = Client(f"http://127.0.0.1:{ports['control']}", f"http://127.0.0.1:{ports['query']}")
    client.commit("bench", datasets=[d.BenchStats], featuresets=[d.Lookups, d.WithPython])
    data = rows(n)
    for i in range(0, n, 20000):
        chunk = data[i:i + 20000]
        post(f"http://127.0.0.1:{ports['control']}/api/v1/log", {
            "webhook": "bench", "endpoint": "Stats", "data": {
                "uid": [r[0] for r in chunk], "txn_count_7d": [r[1] for r in chunk], "total_7d": [r[2] for r in chunk],
                "avg_7d": [r[3] for r in chunk], "country": [r[4] for r in chunk], "ts": [T_NOW] * len(chunk)}})
    # Check one answer against the loaded row.
    u = data[n // 2]
    with urllib.request.urlopen(f"http://127.0.0.1:{ports['query']}/features?featureset=Lookups&uid={u[0]}") as r:
        got = json.loads(r.read())
    assert got["txn_count_7d"] == u[1] and got["country"] == u[4], (got, u)
    # Warm up: the first Python extractor call imports pandas (~0.4 s).
    with urllib.request.urlopen(f"http://127.0.0.1:{ports['query']}/features?featureset=WithPython&uid={u[0]}") as r:
        got = json.loads(r.read())
    assert got["is_big_spender"] == (u[2] > 1000 and u[1] >= 3), (got, u)
    return proc, ports


def start_redis(work, n):
    if not shutil.which("redis-server"):
        return None, None
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", work], stdout=subprocess.DEVNULL)
    wait_port(port, proc)
    cmds = []
    for u, c, total, avg, country in rows(n):
        v = json.dumps({"uid": u, "txn_count_7d": c, "total_7d": total, "avg_7d": avg, "country": country,
                        "spend_per_txn": total / c if c else 0.0})
        cmds.append(f"SET u:{u:012d} '{v}'\n")
    subprocess.run(["redis-cli", "-p", str(port)], input="".join(cmds), capture_output=True, text=True, check=True)
    return proc, port


FEAST_REPO = '''
from datetime import timedelta
from feast import Entity, FeatureView, Field, FileSource
from feast.types import Float64, Int64, String

uid = Entity(name="uid", join_keys=["uid"])
source = FileSource(path="{path}", timestamp_field="ts")
user_stats = FeatureView(
    name="user_stats", entities=[uid], ttl=timedelta(days=3650), online=True, source=source,
    schema=[Field(name="txn_count_7d", dtype=Int64), Field(name="total_7d", dtype=Float64),
            Field(name="avg_7d", dtype=Float64), Field(name="country", dtype=String)],
)
'''


def start_feast(feast_bin, work, n):
    if not feast_bin or not os.path.exists(feast_bin):
        return None, None
    repo = os.path.join(work, "feast")
    os.makedirs(os.path.join(repo, "data"))
    data = rows(n)
    csv_path = os.path.join(repo, "data", "stats.csv")
    with open(csv_path, "w") as f:
        f.write("uid,txn_count_7d,total_7d,avg_7d,country\n")
        for r in data:
            f.write(",".join(str(x) for x in r) + "\n")
    # Parquet written by Feast's own interpreter (it has pyarrow).
    feast_python = os.path.join(os.path.dirname(feast_bin), "python")
    subprocess.run([feast_python, "-c", (
        "import sys, pandas as pd; df = pd.read_csv(sys.argv[1]); "
        "df['ts'] = pd.Timestamp(sys.argv[3]); df.to_parquet(sys.argv[2])")
        , csv_path, os.path.join(repo, "data", "stats.parquet"), T_NOW], check=True)
    with open(os.path.join(repo, "feature_store.yaml"), "w") as f:
        f.write("project: bench\nregistry: data/registry.db\nprovider: local\n"
                "online_store:\n  type: sqlite\n  path: data/online.db\nentity_key_serialization_version: 3\n")
    with open(os.path.join(repo, "features.py"), "w") as f:
        f.write(FEAST_REPO.format(path=os.path.join(repo, "data", "stats.parquet")))
    subprocess.run([feast_bin, "apply"], cwd=repo, check=True, capture_output=True)
    subprocess.run([feast_bin, "materialize", "2024-01-01T00:00:00", "2024-12-31T00:00:00"], cwd=repo, check=True,
                   capture_output=True)
    port = free_port()
    proc = subprocess.Popen([feast_bin, "serve", "-h", "127.0.0.1", "-p", str(port), "--workers", "2"], cwd=repo,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc)
    got = post(f"http://127.0.0.1:{port}/get-online-features",
               {"features": ["user_stats:txn_count_7d", "user_stats:country"], "entities": {"uid": [data[n // 2][0]]}})
    assert data[n // 2][4] in json.dumps(got), got
    return proc, port


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--thyme", required=True)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--secs", type=int, default=10)
    ap.add_argument("--clients", default="1,8,64")
    ap.add_argument("--feast", default=None, help="the feast CLI (skipped when absent)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    work = tempfile.mkdtemp(prefix="thyme-bench-features-")
    procs = []
    results = []
    try:
        thyme, ports = start_thyme(args.thyme, work, args.users)
        procs.append(thyme)
        redis, redis_port = start_redis(work, args.users)
        if redis:
            procs.append(redis)
        feast, feast_port = start_feast(args.feast, work, args.users)
        if feast:
            procs.append(feast)
        get_lua = os.path.join(work, "get.lua")
        with open(get_lua, "w") as f:
            f.write(WRK_GET)
        feast_lua = os.path.join(work, "feast.lua")
        with open(feast_lua, "w") as f:
            f.write(WRK_FEAST)
        env = {"BENCH_N": str(args.users)}
        q = f"http://127.0.0.1:{ports['query']}"
        for c in clients:
            start = len(results)
            for fs in ("Lookups", "WithPython"):
                r = wrk(q, get_lua, c, args.secs, {**env, "BENCH_PATH": f"/features?featureset={fs}&uid="})
                results.append(("Thyme HTTP GET /features", fs, c, *r))
            for view in ("lookups", "with_python"):
                r = pgbench(ports["pg"], f"SELECT * FROM {view} WHERE uid = :uid;", args.users, c, args.secs, work)
                results.append(("Thyme SQL view (pgwire)", view, c, *r))
            if feast:
                r = wrk(f"http://127.0.0.1:{feast_port}", feast_lua, c, args.secs, env)
                results.append(("Feast feature server (SQLite)", "user_stats (4 lookups)", c, *r))
            if redis:
                r = redis_bench(redis_port, args.users, c, args.secs)
                results.append(("Redis GET (pre-computed vector)", "-", c, *r))
            for row in results[start:]:
                print(f"{row[0]:34} {row[1]:24} c={row[2]:<3} {row[3]:>10.0f} req/s  p50 {row[4]:7.3f} ms  p99 {row[5]:7.3f} ms",
                      flush=True)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)
    table = ["| peer | what | clients | req/s | p50 ms | p99 ms |", "|---|---|---:|---:|---:|---:|"]
    for peer, what, c, rps, p50, p99 in results:
        table.append(f"| {peer} | {what} | {c} | {rps:,.0f} | {p50:.3f} | {p99:.3f} |")
    text = "\n".join(table)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
