"""Crash harness shared by the crash test and `bench/crash.py`.

Two servers get the same event stream through webhook ingestion and the same
aggregation pipeline. One runs undisturbed; the other is `kill -9`ed at
random moments (while requests are in flight and pipelines are stepping),
restarted on the same data directory, and the ingest resumes from what the
store says it holds (a request is stored whole or not at all, so the stored
row count must be a whole number of requests). At the end both pipelines
have caught up and the effective history of the aggregated dataset (the
last version written at every key and time) must be the same: nothing lost,
nothing counted twice.
"""

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

MIN = 60_000_000
T0 = 1_709_251_200_000_000  # 2024-03-01T00:00:00Z


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def payload():
    agg = lambda kind, into, of, w: {"kind": kind, "into": into, **({"of": of} if of else {}), "window": {"kind": "continuous", "duration": w}}  # noqa: E731
    return {
        "schema_version": 1,
        "message": "crash test",
        "datasets": [
            {
                "name": "Txn",
                "fields": [
                    {"name": "uid", "type": "int"},
                    {"name": "amount", "type": "float"},
                    {"name": "ts", "type": "datetime", "timestamp": True},
                ],
                "sources": [{"connector": {"kind": "webhook", "name": "crash", "endpoint": "Txn"}, "disorder": "10m", "cdc": "append"}],
            },
            {
                "name": "TxnAgg",
                "index": True,
                "fields": [
                    {"name": "uid", "type": "int", "key": True},
                    {"name": "n_1h", "type": "int"},
                    {"name": "n_1d", "type": "int"},
                    {"name": "sum_1h", "type": "float"},
                    {"name": "sum_1d", "type": "float"},
                    {"name": "avg_1h", "type": "float"},
                    {"name": "avg_1d", "type": "float"},
                    {"name": "ts", "type": "datetime", "timestamp": True},
                ],
                "pipelines": [
                    {
                        "name": "agg",
                        "inputs": ["Txn"],
                        "nodes": [
                            {"op": "input", "id": 0, "dataset": "Txn"},
                            {
                                "op": "aggregate",
                                "id": 1,
                                "input": 0,
                                "keys": ["uid"],
                                "aggregates": [
                                    agg("count", "n_1h", None, "1h"),
                                    agg("count", "n_1d", None, "1d"),
                                    agg("sum", "sum_1h", "amount", "1h"),
                                    agg("sum", "sum_1d", "amount", "1d"),
                                    {**agg("average", "avg_1h", "amount", "1h"), "default": 0.0},
                                    {**agg("average", "avg_1d", "amount", "1d"), "default": 0.0},
                                ],
                            },
                        ],
                        "output": 1,
                    }
                ],
            },
        ],
    }


def make_batches(n_events, batch, keys, seed):
    """Column-oriented request bodies; times drift forward with jitter inside
    the 10-minute disorder (some events out of order)."""
    rng = random.Random(seed)
    bodies = []
    step = 20_000_000  # 20 s of event time per event on average
    for start in range(0, n_events, batch):
        m = min(batch, n_events - start)
        uid = [rng.randrange(keys) for _ in range(m)]
        amount = [round(rng.uniform(1, 500), 2) for _ in range(m)]
        ts = [T0 + (start + i) * step + rng.randrange(-4 * MIN, 4 * MIN) for i in range(m)]
        bodies.append(json.dumps({"webhook": "crash", "endpoint": "Txn", "data": {"uid": uid, "amount": amount, "ts": ts}}).encode())
    return bodies


class Server:
    def __init__(self, binary, data, extra_args=()):
        self.binary, self.data, self.extra_args = binary, data, list(extra_args)
        self.pg, self.ctl, self.q = free_port(), free_port(), free_port()
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [self.binary, "serve", "--data", self.data, "--pg-addr", f"127.0.0.1:{self.pg}",
             "--control-addr", f"127.0.0.1:{self.ctl}", "--query-addr", f"127.0.0.1:{self.q}",
             *self.extra_args],
            env={**os.environ, "THYME_LOG": "warn", **({"VIRTUAL_ENV": sys.prefix} if sys.prefix != sys.base_prefix else {})},
        )
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.ctl}/health", timeout=1).read()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"thyme exited with {self.proc.returncode}")
                time.sleep(0.05)
        raise RuntimeError("thyme did not start")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def post(self, path, body):
        req = urllib.request.Request(f"http://127.0.0.1:{self.ctl}{path}", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.loads(r.read())

    def get(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ctl}{path}", timeout=60) as r:
            return json.loads(r.read())

    def sql(self, query):
        import psycopg
        with psycopg.connect(f"host=127.0.0.1 port={self.pg} user=thyme dbname=thyme", autocommit=True) as c:
            return c.execute(query).fetchall()

    def wait_caught_up(self, timeout=1800):
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            ps = self.get("/api/v1/pipelines")["pipelines"]
            state = [(p["status"], p["lag"], p["rows_written"]) for p in ps]
            if ps and all(p["status"] == "running" and p["lag"] == 0 for p in ps) and state == last:
                return ps
            last = state
            time.sleep(0.5)
        raise AssertionError(f"pipelines did not catch up: {last}")

    def effective_history(self):
        """(uid, ts) -> values of the last version written there."""
        out = {}
        for row in self.sql("SELECT uid, ts, n_1h, n_1d, sum_1h, sum_1d, avg_1h, avg_1d FROM history.txn_agg"):
            out[(row[0], row[1])] = row[2:]
        return out


def same(a, b):
    if a.keys() != b.keys():
        missing = sorted(set(b) - set(a))[:5]
        extra = sorted(set(a) - set(b))[:5]
        return f"change points differ: missing {missing}, extra {extra}"
    for k, va in a.items():
        vb = b[k]
        for x, y in zip(va, vb):
            if isinstance(x, float):
                if abs(x - y) > 1e-6 + 1e-9 * abs(y):
                    return f"{k}: {va} != {vb}"
            elif x != y:
                return f"{k}: {va} != {vb}"
    return None


def run(binary, workdir, n_events, kills, seed, batch=1000, keys=1000, log=print):
    rng = random.Random(seed)
    bodies = make_batches(n_events, batch, keys, seed)
    commit = json.dumps(payload()).encode()

    ref = Server(binary, os.path.join(workdir, "ref"))
    ref.start()
    t = time.time()
    ref.post("/api/v1/commit", commit)
    for b in bodies:
        ref.post("/api/v1/log", b)
    ref.wait_caught_up()
    ref_time = time.time() - t
    expected = ref.effective_history()
    ref.stop()
    log(f"reference run: {n_events} events, {len(expected)} change points, {ref_time:.1f}s")

    srv = Server(binary, os.path.join(workdir, "crashed"))
    srv.start()
    srv.post("/api/v1/commit", commit)
    # Kill at random moments spread over the expected run time.
    moments = sorted(rng.uniform(0.05, 1.0) * max(ref_time, 2.0) for _ in range(kills))
    killed = 0
    done = threading.Event()
    lock = threading.Lock()

    def killer():
        nonlocal killed
        start = time.time()
        for m in moments:
            while time.time() - start < m and not done.is_set():
                time.sleep(0.01)
            with lock:
                srv.kill9()
                killed += 1
                srv.start()

    th = threading.Thread(target=killer)
    th.start()
    i = 0
    while i < len(bodies):
        try:
            with lock:
                pass
            srv.post("/api/v1/log", bodies[i])
            i += 1
        except (urllib.error.URLError, ConnectionError, OSError):
            # Down or killed mid-request: ask the store what it holds.
            while True:
                try:
                    with lock:
                        stored = srv.sql("SELECT count(*) FROM txn")[0][0]
                    break
                except Exception:
                    time.sleep(0.1)
            assert stored % batch == 0 or stored == n_events, f"seed {seed}: {stored} rows stored, not whole requests"
            i = stored // batch
    th.join()
    done.set()
    srv.wait_caught_up()
    stored = srv.sql("SELECT count(*) FROM txn")[0][0]
    got = srv.effective_history()
    srv.stop()
    assert stored == n_events, f"seed {seed}: {stored} events stored, expected {n_events}"
    diff = same(got, expected)
    log(f"crashed run: {killed} kill -9, {len(got)} change points")
    return killed, diff
