"""Postgres table sources (cursor polling) end to end against a throwaway
Postgres 15 cluster started here: rounds of INSERT / UPDATE compared with
the table itself (brute force); a transaction that commits after a later
cursor value was read is not lost; a value that does not fit its field is
skipped with the reason; the server keeps going while Postgres is down and
catches up when it returns; `kill -9` at random moments loses and doubles
nothing. Seeds are printed."""

import os
import random
import time

import psycopg
import pytest

from conftest import ThymeServer, import_text
from pg_util import PGBIN, Cluster
from thyme.client import Client


DEFS = '''
from datetime import datetime

from thyme.connectors import Postgres, source
from thyme.datasets import dataset, field

pg = Postgres(name="crm", host="127.0.0.1", port=PG_PORT, db_name="postgres", username="postgres")


@source(pg.table("users", cursor="updated_at"), disorder="1m", cdc="upsert", every="200ms")
@dataset(index=True)
class User:
    uid: int = field(key=True)
    tier: str
    score: float
    updated_at: datetime


@source(pg.table("clicks", cursor="id"), disorder="1d", cdc="append", every="200ms")
@dataset
class Click:
    id: int
    uid: int
    ts: datetime
'''


@pytest.fixture
def cluster():
    if not os.path.exists(os.path.join(PGBIN, "initdb")):
        pytest.fail(f"Postgres 15 binaries not found in {PGBIN}")
    c = Cluster()
    with c.conn() as k:
        k.execute("CREATE TABLE users (uid bigint PRIMARY KEY, tier text NOT NULL, score float8, "
                  "updated_at timestamptz NOT NULL DEFAULT clock_timestamp())")
        k.execute("CREATE TABLE clicks (id bigint PRIMARY KEY, uid bigint, ts timestamptz NOT NULL)")
    yield c
    c.remove()


def load_defs(port, name):
    return import_text(name, f"PG_PORT = {port}\n" + DEFS)


def source_of(server, dataset):
    status, body = server.http("GET", "/api/v1/sources")
    assert status == 200, body
    return next((s for s in body["sources"] if s["dataset"] == dataset), None)


def wait_rows(server, dataset, rows, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        s = source_of(server, dataset)
        if s and s["rows"] >= rows and s["status"] == "idle":
            return s
        time.sleep(0.1)
    raise AssertionError(f"{dataset}: not {rows} rows: {source_of(server, dataset)}")


def table_now(cluster):
    with cluster.conn() as k:
        return k.execute("SELECT uid, tier, score FROM users WHERE score IS NOT NULL ORDER BY uid").fetchall()


def thyme_now(server):
    with psycopg.connect(server.dsn, autocommit=True) as c:
        return c.execute("SELECT uid, tier, score FROM \"user\" ORDER BY uid").fetchall()


def wait_equal(server, cluster, timeout=60):
    deadline = time.time() + timeout
    while True:
        want, got = table_now(cluster), thyme_now(server)
        if want == got and source_of(server, "User")["status"] == "idle":
            return
        if time.time() > deadline:
            raise AssertionError(f"thyme {got[-5:]} != postgres {want[-5:]}; {source_of(server, 'User')}")
        time.sleep(0.1)


def test_postgres_cursor_source(cluster, tmp_path):
    seed = random.randrange(1 << 30)
    print("seed", seed)
    rng = random.Random(seed)
    server = ThymeServer(str(tmp_path / "data"))
    try:
        m = load_defs(cluster.port, "source_pg_defs")
        Client(url=server.control_url).commit("pg", datasets=[m.User, m.Click])
        uid = 0
        for round_ in range(4):
            with cluster.conn() as k:
                for _ in range(rng.randrange(5, 40)):
                    uid += 1
                    k.execute("INSERT INTO users (uid, tier, score) VALUES (%s, %s, %s)",
                              (uid, rng.choice(["free", "pro"]), rng.randrange(100) / 4))
                for u in rng.sample(range(1, uid + 1), min(uid, 5)):
                    k.execute("UPDATE users SET tier = %s, updated_at = clock_timestamp() WHERE uid = %s",
                              (f"t{round_}", u))
            wait_equal(server, cluster)

        # A transaction that commits after a later cursor value was read.
        late = cluster.conn()
        late.autocommit = False
        late.execute("INSERT INTO users (uid, tier, score) VALUES (10000, 'late', 1)")  # cursor: now
        time.sleep(0.3)
        with cluster.conn() as k:
            k.execute("INSERT INTO users (uid, tier, score) VALUES (10001, 'early', 2)")
        deadline = time.time() + 30
        while 10001 not in [r[0] for r in thyme_now(server)]:
            assert time.time() < deadline
            time.sleep(0.1)
        time.sleep(0.5)  # a few more polls past 10001 before 10000 commits
        late.commit()
        late.close()
        wait_equal(server, cluster)
        assert 10000 in [r[0] for r in thyme_now(server)]

        # A value that does not fit its field: skipped, with the reason.
        with cluster.conn() as k:
            k.execute("INSERT INTO users (uid, tier, score) VALUES (20000, 'bad', NULL)")
            k.execute("INSERT INTO users (uid, tier, score) VALUES (20001, 'good', 3)")
        wait_equal(server, cluster)
        assert source_of(server, "User")["skipped"] == 1, source_of(server, "User")
        status, body = server.http("GET", "/api/v1/sources/User/rejected")
        assert [(r["field"], r["value"]) for r in body["rows"]] == [("score", "null")], body
        assert "null is not allowed" in body["rows"][0]["error"], body

        # Postgres down: the source shows the error, the server keeps
        # serving; it catches up when Postgres is back.
        cluster.stop()
        deadline = time.time() + 30
        while (source_of(server, "User") or {}).get("status") != "error":
            assert time.time() < deadline, source_of(server, "User")
            time.sleep(0.2)
        assert "postgres" in source_of(server, "User")["error"]
        with psycopg.connect(server.dsn, autocommit=True) as c:
            assert c.execute("SELECT 1").fetchone() == (1,)
        cluster.start()
        with cluster.conn() as k:
            k.execute("INSERT INTO users (uid, tier, score) VALUES (30000, 'back', 4)")
        wait_equal(server, cluster, timeout=90)
    finally:
        server.stop()


def test_postgres_source_kill_9(cluster, tmp_path):
    seed = random.randrange(1 << 30)
    print("seed", seed)
    rng = random.Random(seed)
    server = ThymeServer(str(tmp_path / "data"))
    total = 0
    try:
        m = load_defs(cluster.port, "source_pg_kill_defs")
        Client(url=server.control_url).commit("pg", datasets=[m.User, m.Click])
        for kill in range(10):
            with cluster.conn() as k:
                n = rng.randrange(200, 3000)
                k.execute("INSERT INTO clicks SELECT g, g %% 17, timestamptz '2024-01-01' + g * interval '1 second' "
                          "FROM generate_series(%s::bigint, %s::bigint) g", (total + 1, total + n))
                total += n
            time.sleep(rng.uniform(0.0, 0.6))
            server.proc.kill()
            server.proc.wait()
            server.start()
        wait_rows(server, "Click", total, timeout=120)
        with psycopg.connect(server.dsn, autocommit=True) as c:
            got = c.execute("SELECT count(*), count(DISTINCT id), sum(id) FROM click").fetchone()
        assert got == (total, total, total * (total + 1) // 2), got
        assert source_of(server, "Click")["rows"] == total
    finally:
        server.stop()


TYPED_DEFS = '''
from datetime import date, datetime
from decimal import Decimal
from typing import Dict, List, Optional

from thyme.connectors import Postgres, source
from thyme.datasets import dataset, field

pg = Postgres(name="crm", host="127.0.0.1", port=PG_PORT, db_name="postgres", username="postgres")


@source(pg.table("typed", cursor="ts"), disorder="1m", cdc="append", every="200ms")
@dataset
class Typed:
    small: int
    big: int
    real4: float
    real8: Optional[float]
    flag: bool
    name: str
    padded: str
    day: date
    naive: datetime
    amount: float
    doc: Dict[str, int]
    tags: List[int]
    ts: datetime = field(timestamp=True)
'''


def test_postgres_cursor_source_reads_every_column_type(cluster, tmp_path):
    # Integers, floats (with a NaN: skipped, with the reason), booleans,
    # text kinds, dates and naive timestamps are read in binary; numeric,
    # jsonb and arrays through to_json; the values equal Postgres' own.
    with cluster.conn() as k:
        k.execute("CREATE TABLE typed (small int2, big int8, real4 float4, real8 float8, flag bool, "
                  "name varchar(20), padded char(4), day date, naive timestamp, amount numeric(10,2), "
                  "doc jsonb, tags int4[], ts timestamptz NOT NULL)")
        k.execute("INSERT INTO typed VALUES "
                  "(1, 9000000000, 0.5, 2.25, true, 'a', 'ab', '2024-02-29', '2024-01-01 10:00:00.25', "
                  " 12.50, '{\"x\": 1}', '{1,2}', '2024-01-01 00:00:00+00'), "
                  "(-2, -1, -1.5, NULL, false, 'b\"q', 'cd', '1999-12-31', '2024-01-01 10:00:00', "
                  " 0.01, '{}', '{}', '2024-01-01 00:00:01.5+00'), "
                  "(3, 3, 1, 'NaN', true, 'c', 'ef', '2024-01-01', '2024-01-01 00:00:00', "
                  " 1, '{}', '{3}', '2024-01-01 00:00:02+00')")
    m = import_text("typed_defs", f"PG_PORT = {cluster.port}\n" + TYPED_DEFS)
    server = ThymeServer(str(tmp_path / "data"))
    try:
        Client(url=server.control_url).commit("typed", datasets=[m.Typed])
        deadline = time.time() + 60
        while True:
            s = source_of(server, "Typed")
            if s and s["rows"] + s["skipped"] >= 3 and s["status"] == "idle":
                break
            assert time.time() < deadline, s
            time.sleep(0.1)
        assert (s["rows"], s["skipped"]) == (2, 1), s
        with psycopg.connect(server.dsn, autocommit=True) as c:
            got = c.execute("SELECT small, big, real4, real8, flag, name, padded, day, naive, amount, "
                            "tags, ts FROM typed ORDER BY ts").fetchall()
        with cluster.conn() as k:
            want = k.execute("SELECT small, big, real4::float8, real8, flag, name, padded, day, naive AT TIME ZONE 'UTC', "
                             "amount::float8, tags::int8[], ts FROM typed WHERE real8 IS DISTINCT FROM 'NaN' "
                             "ORDER BY ts").fetchall()
        assert got == want, (got, want)
        status, body = server.http("GET", "/api/v1/sources/Typed/rejected")
        assert [r["field"] for r in body["rows"]] == ["real8"], body
    finally:
        server.stop()
