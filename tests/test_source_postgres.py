"""Postgres table sources (cursor polling) end to end against a throwaway
Postgres 15 cluster started here: rounds of INSERT / UPDATE compared with
the table itself (brute force); a transaction that commits after a later
cursor value was read is not lost; a value that does not fit its field is
skipped with the reason; the server keeps going while Postgres is down and
catches up when it returns; `kill -9` at random moments loses and doubles
nothing. Seeds are printed."""

import os
import random
import shutil
import socket
import subprocess
import tempfile
import time

import psycopg
import pytest

from conftest import ThymeServer, free_port, import_text
from thyme.client import Client

PGBIN = "/usr/lib/postgresql/15/bin"

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


class Cluster:
    """A throwaway Postgres 15 cluster on 127.0.0.1 (``logical``: with
    ``wal_level=logical``, for replication sources)."""

    def __init__(self, logical=False):
        self.logical = logical
        self.dir = tempfile.mkdtemp(prefix="thyme-pg-")
        self.port = free_port()
        shutil.chown(self.dir, "postgres")
        os.chmod(self.dir, 0o755)
        self.data = os.path.join(self.dir, "data")
        self._pg("initdb", "-D", self.data, "-U", "postgres", "-A", "trust")
        self.start()

    def _pg(self, *args):
        cmd = ["runuser", "-u", "postgres", "--", os.path.join(PGBIN, args[0]), *args[1:]]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def start(self):
        self._pg("pg_ctl", "-D", self.data, "-w", "-l", os.path.join(self.dir, "log"), "-o",
                 f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
                 + (" -c wal_level=logical -c max_replication_slots=20" if self.logical else ""), "start")

    def stop(self):
        self._pg("pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")

    def conn(self):
        return psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True)

    def remove(self):
        try:
            self._pg("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


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
