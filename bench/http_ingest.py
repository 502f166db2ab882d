"""HTTP ingest benchmark: rows/s through `POST /api/v1/log` for a keyless
event dataset and a keyed (upsert) dataset, at several batch sizes.

Starts its own `thyme serve` on free loopback ports with a fresh data
directory per run. Request bodies are encoded before the clock starts, so
the numbers are the server's (parse, check, encode, one atomic RocksDB
write per request), over one keep-alive connection, requests back to back.

    python bench/http_ingest.py --bin target/release/thyme --rows 1000000 \
        --batches 100,1000,10000 --out bench/results/http_ingest.md
"""

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request

from common import free_port



def commit_payload():
    hook = lambda ep: {"connector": {"kind": "webhook", "name": "bench", "endpoint": ep}}  # noqa: E731
    return {
        "schema_version": 1,
        "message": "benchmark",
        "datasets": [
            {
                "name": "Event",
                "fields": [
                    {"name": "uid", "type": "int"},
                    {"name": "amount", "type": "float"},
                    {"name": "merchant", "type": "str"},
                    {"name": "ts", "type": "datetime", "timestamp": True},
                ],
                "sources": [{**hook("Event"), "cdc": "append"}],
            },
            {
                "name": "Profile",
                "index": True,
                "fields": [
                    {"name": "uid", "type": "int", "key": True},
                    {"name": "score", "type": "float"},
                    {"name": "country", "type": "str"},
                    {"name": "ts", "type": "datetime", "timestamp": True},
                ],
                "sources": [{**hook("Profile"), "cdc": "upsert"}],
            },
        ],
    }


def bodies(endpoint: str, rows: int, batch: int, rng: random.Random):
    out = []
    t0 = 1_704_067_200  # 2024-01-01
    for start in range(0, rows, batch):
        n = min(batch, rows - start)
        uids = [rng.randrange(100_000) for _ in range(n)]
        ts = [time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0 + start + i)) for i in range(n)]
        if endpoint == "Event":
            data = {"uid": uids, "amount": [round(rng.random() * 100, 2) for _ in range(n)],
                    "merchant": [f"m{rng.randrange(1000)}" for _ in range(n)], "ts": ts}
        else:
            data = {"uid": uids, "score": [rng.random() for _ in range(n)],
                    "country": [rng.choice(["US", "DE", "IN", "BR"]) for _ in range(n)], "ts": ts}
        out.append(json.dumps({"webhook": "bench", "endpoint": endpoint, "data": data}).encode())
    return out


class Server:
    def __init__(self, binary: str):
        self.tmp = tempfile.mkdtemp(prefix="thyme-bench-")
        self.port = free_port()
        pg, query = free_port(), free_port()
        self.proc = subprocess.Popen(
            [binary, "serve", "--data", os.path.join(self.tmp, "data"), "--pg-addr", f"127.0.0.1:{pg}",
             "--control-addr", f"127.0.0.1:{self.port}", "--query-addr", f"127.0.0.1:{query}"],
            env={**os.environ, "THYME_LOG": "warn"},
        )
        for _ in range(600):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1).read()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("thyme did not start")

    def post(self, conn, path, body: bytes):
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{path}: {resp.status} {data[:300]!r}")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        shutil.rmtree(self.tmp, ignore_errors=True)


def run(binary: str, endpoint: str, rows: int, batch: int) -> tuple[float, float]:
    rng = random.Random(42)
    reqs = bodies(endpoint, rows, batch, rng)
    mib = sum(len(b) for b in reqs) / 2**20
    server = Server(binary)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=600)
        server.post(conn, "/api/v1/commit", json.dumps(commit_payload()).encode())
        start = time.perf_counter()
        for b in reqs:
            server.post(conn, "/api/v1/log", b)
        secs = time.perf_counter() - start
        conn.close()
    finally:
        server.stop()
    return rows / secs, mib / secs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--batches", default="100,1000,10000")
    ap.add_argument("--out")
    ap.add_argument("--command", default="")
    args = ap.parse_args()
    lines = ["| dataset | batch size | rows | rows/s | MiB/s of JSON |", "|---|---:|---:|---:|---:|"]
    for endpoint in ["Event", "Profile"]:
        for batch in [int(b) for b in args.batches.split(",")]:
            rps, mibs = run(args.bin, endpoint, args.rows, batch)
            kind = "keyless (append)" if endpoint == "Event" else "keyed (upsert)"
            line = f"| {endpoint}, {kind} | {batch:,} | {args.rows:,} | {rps:,.0f} | {mibs:.1f} |"
            print(line, flush=True)
            lines.append(line)
    if args.out:
        with open(args.out, "w") as f:
            f.write("# HTTP ingest benchmark\n\n")
            f.write(f"Command: `{args.command or 'bench/http_ingest.sh'}`.\n")
            f.write(f"Machine: {os.cpu_count()} cores; date {time.strftime('%Y-%m-%d', time.gmtime())}.\n")
            f.write("One keep-alive connection, requests back to back, bodies encoded before timing; "
                    "each request is parsed, checked against the schema, and written as one atomic batch "
                    "(dataset log + temporal store).\n\n")
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
