"""Local file sources end to end: a committed `Files(...).directory(...)`
source reads new CSV / JSON-lines files on every poll, each file once;
rows that do not fit are skipped, counted and listed with the reason; the
stored data equals what was written (a brute-force expectation); and
`kill -9` at random moments while files flow loses nothing and doubles
nothing. Seeds are printed."""

import json
import os
import random
import time

import psycopg
import pytest

from conftest import ThymeServer, import_text
from thyme.client import Client

DEFS = '''
from datetime import datetime
from typing import Optional

from thyme.connectors import Files, source
from thyme.datasets import dataset, field

drop = Files(name="drop")


@source(drop.directory(CSV_DIR, format="csv", prefix="orders"), disorder="1d", cdc="append", every="200ms")
@dataset
class Order:
    oid: int
    amount: float
    note: Optional[str]
    ts: datetime


@source(drop.directory(PQ_DIR, format="parquet"), disorder="1d", cdc="append", every="200ms")
@dataset
class Reading:
    rid: int
    v: float
    ts: datetime


@source(drop.directory(JSON_DIR, format="json"), disorder="1d", cdc="upsert", every="200ms",
        since="2024-01-01T00:00:00Z")
@dataset(index=True)
class Profile:
    uid: int = field(key=True)
    tier: str
    ts: datetime
'''


def load_defs(csv_dir, json_dir, name):
    pq_dir = os.path.join(os.path.dirname(csv_dir), "parquet")
    os.makedirs(pq_dir, exist_ok=True)
    return import_text(name, f"CSV_DIR = {csv_dir!r}\nJSON_DIR = {json_dir!r}\nPQ_DIR = {pq_dir!r}\n" + DEFS)


def put(path, text):
    """Write a file elsewhere, rename it in, and age it past the settle time."""
    tmp = path + ".tmp-writing"
    with open(tmp, "w") as f:
        f.write(text)
    old = time.time() - 10
    os.utime(tmp, (old, old))
    os.rename(tmp, path)


def sources(server):
    status, body = server.http("GET", "/api/v1/sources")
    assert status == 200, body
    return {s["dataset"]: s for s in body["sources"]}


def wait_files(server, dataset, n, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        s = sources(server).get(dataset)
        if s and s["position"] and s["position"].get("files_read") == n and s["status"] == "idle":
            return s
        time.sleep(0.1)
    raise AssertionError(f"{dataset}: not {n} files read: {sources(server).get(dataset)}")


def test_files_end_to_end_with_bad_rows(tmp_path):
    csv_dir, json_dir = str(tmp_path / "csv"), str(tmp_path / "json")
    os.makedirs(csv_dir)
    os.makedirs(json_dir)
    server = ThymeServer(str(tmp_path / "data"))
    try:
        m = load_defs(csv_dir, json_dir, "source_files_defs")
        Client(url=server.control_url).commit("files", datasets=[m.Order, m.Profile, m.Reading])
        seed = random.randrange(1 << 30)
        print("seed", seed)
        rng = random.Random(seed)
        expected = []  # (oid, amount, note, ts)
        oid = 0
        for round_ in range(3):
            lines = ["oid,amount,note,ts"]
            for _ in range(rng.randrange(5, 30)):
                oid += 1
                amount = round(rng.uniform(0, 100), 2)
                note = rng.choice(["", "gift", "x,y"])
                ts = f"2024-01-0{rng.randrange(1, 9)}T0{rng.randrange(0, 9)}:00:00Z"
                lines.append(f'{oid},{amount},"{note}",{ts}')
                expected.append((oid, amount, note or None, ts))
            # Bad data: a value that is not a float, a record with a missing
            # field, a missing required value.
            lines.append("9001,lots,,2024-01-01T00:00:00Z")
            lines.append("9002,1.0")
            lines.append(",1.0,,2024-01-01T00:00:00Z")
            put(os.path.join(csv_dir, f"orders-{round_}.csv"), "\n".join(lines) + "\n")
            put(os.path.join(csv_dir, f"ignored-{round_}.csv"), "oid,amount,note,ts\n1,1,,2024-01-01T00:00:00Z\n")
            st = wait_files(server, "Order", round_ + 1)
            assert st["rows"] == len(expected) and st["skipped"] == 3 * (round_ + 1), st
        with psycopg.connect(server.dsn, autocommit=True) as c:
            got = c.execute("SELECT oid, amount, note FROM \"order\" ORDER BY oid").fetchall()
            assert got == [(o, a, n) for o, a, n, _ in expected]
            assert c.execute("SELECT count(*) FROM thyme_rejected_rows WHERE dataset = 'Order'").fetchone() == (9,)
        status, body = server.http("GET", "/api/v1/sources/Order/rejected?limit=100")
        assert status == 200 and body["skipped"] == 9, body
        reasons = {(r["location"].split(" line ")[0], r["field"]) for r in body["rows"]}
        assert ("orders-0.csv", "amount") in reasons and ("orders-0.csv", "oid") in reasons, body
        assert any("malformed CSV record" in r["error"] for r in body["rows"]), body
        assert any('"lots"' in (r["value"] or "") for r in body["rows"]), body

        metrics = __import__("urllib.request").request.urlopen(server.control_url + "/metrics").read().decode()
        assert f'thyme_source_rows_total{{dataset="Order",source="drop"}} {len(expected)}' in metrics, metrics
        assert 'thyme_source_skipped_total{dataset="Order",source="drop"} 9' in metrics, metrics
        assert 'thyme_source_up{dataset="Order",source="drop"} 1' in metrics, metrics

        # JSON lines, upserts, since: versions by key, AS OF, history; a
        # line that is not JSON and a file that is not UTF-8 are skipped.
        put(os.path.join(json_dir, "a.jsonl"), "\n".join([
            json.dumps({"uid": 1, "tier": "free", "ts": "2024-01-01T00:00:00Z"}),
            json.dumps({"uid": 2, "tier": "pro", "ts": "2024-01-02T00:00:00Z"}),
            json.dumps({"uid": 3, "tier": "old", "ts": "2023-06-01T00:00:00Z"}),  # before since
            "{not json",
        ]) + "\n")
        put(os.path.join(json_dir, "b.jsonl"), json.dumps({"uid": 1, "tier": "gold", "ts": "2024-01-05T00:00:00Z"}) + "\n")
        st = wait_files(server, "Profile", 2)
        assert st["rows"] == 3 and st["skipped"] == 1, st
        with psycopg.connect(server.dsn, autocommit=True) as c:
            assert c.execute("SELECT uid, tier FROM profile ORDER BY uid").fetchall() == [(1, "gold"), (2, "pro")]
            assert c.execute("SELECT tier FROM profile WHERE uid = 1 AS OF '2024-01-03T00:00:00Z'").fetchall() == [("free",)]
        # Parquet: typed columns read by name; a file without a required
        # column has every row skipped with the reason; a file that is not
        # Parquet is recorded once; the others are read.
        import pyarrow as pa
        import pyarrow.parquet as pq
        from datetime import datetime, timezone
        pq_dir = str(tmp_path / "parquet")

        def put_parquet(fname, table):
            tmp = os.path.join(pq_dir, "." + fname)
            pq.write_table(table, tmp)
            old = time.time() - 10
            os.utime(tmp, (old, old))
            os.rename(tmp, os.path.join(pq_dir, fname))

        t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
        ts = pa.array([t0.replace(hour=h) for h in range(10)], pa.timestamp("us", tz="UTC"))
        put_parquet("r1.parquet", pa.table({"rid": pa.array(range(10), pa.int64()),
                                            "v": pa.array([i * 0.5 for i in range(10)]), "ts": ts}))
        put_parquet("r2.parquet", pa.table({"rid": pa.array(range(10, 15), pa.int64()), "ts": ts[:5]}))
        with open(os.path.join(pq_dir, ".r3.parquet"), "wb") as f:
            f.write(b"PAR1 this is not parquet")
        old = time.time() - 10
        os.utime(os.path.join(pq_dir, ".r3.parquet"), (old, old))
        os.rename(os.path.join(pq_dir, ".r3.parquet"), os.path.join(pq_dir, "r3.parquet"))
        put_parquet("r4.parquet", pa.table({"rid": pa.array([20, 21], pa.int64()), "v": pa.array([1.0, None]),
                                            "ts": ts[:2]}))
        st = wait_files(server, "Reading", 4)
        assert st["rows"] == 11 and st["skipped"] == 5 + 1 + 1, st
        with psycopg.connect(server.dsn, autocommit=True) as c:
            got = c.execute("SELECT rid, v, ts FROM reading ORDER BY rid").fetchall()
        assert got == [(i, i * 0.5, t0.replace(hour=i)) for i in range(10)] + [(20, 1.0, t0)], got
        status, body = server.http("GET", "/api/v1/sources/Reading/rejected")
        errors = [(r["location"], r["field"], r["error"]) for r in body["rows"]]
        assert any(loc == "r3.parquet" and "not a readable Parquet file" in e for loc, _, e in errors), errors
        assert sum(1 for loc, _, e in errors if loc.startswith("r2.parquet row") and "v" in e) == 5, errors
        assert any(loc == "r4.parquet row 2" and f == "v" for loc, f, _ in errors), errors

        # A restart reads nothing again.
        server.restart()
        wait_files(server, "Order", 3)
        st = wait_files(server, "Profile", 2)
        assert st["rows"] == 3, st
        with psycopg.connect(server.dsn, autocommit=True) as c:
            assert c.execute("SELECT count(*) FROM \"order\"").fetchone() == (len(expected),)
    finally:
        server.stop()


def test_kill_9_while_files_flow_loses_and_doubles_nothing(tmp_path):
    csv_dir, json_dir = str(tmp_path / "csv"), str(tmp_path / "json")
    os.makedirs(csv_dir)
    os.makedirs(json_dir)
    seed = random.randrange(1 << 30)
    print("seed", seed)
    rng = random.Random(seed)
    server = ThymeServer(str(tmp_path / "data"))
    files, per_file = 40, 300
    try:
        m = load_defs(csv_dir, json_dir, "source_files_crash_defs")
        Client(url=server.control_url).commit("files", datasets=[m.Order, m.Profile, m.Reading])
        oid = 0
        written = 0
        kills = 0
        while written < files or kills < 10:
            # Drop a few files, then kill at a random moment.
            for _ in range(rng.randrange(1, 6)):
                if written == files:
                    break
                lines = ["oid,amount,note,ts"]
                for _ in range(per_file):
                    oid += 1
                    lines.append(f"{oid},{oid % 97}.5,,2024-01-01T00:00:00Z")
                put(os.path.join(csv_dir, f"orders-{written:03d}.csv"), "\n".join(lines) + "\n")
                written += 1
            time.sleep(rng.uniform(0.0, 0.8))
            if kills < 10:
                server.proc.kill()
                server.proc.wait()
                kills += 1
                server.start()
        wait_files(server, "Order", files, timeout=120)
        with psycopg.connect(server.dsn, autocommit=True) as c:
            n, distinct, total = c.execute(
                "SELECT count(*), count(DISTINCT oid), sum(oid) FROM \"order\"").fetchone()
        want = files * per_file
        assert (n, distinct, total) == (want, want, want * (want + 1) // 2), (n, distinct, total)
        st = sources(server)["Order"]
        assert st["rows"] == want and st["skipped"] == 0, st
    finally:
        server.stop()
