"""Postgres sources by logical replication (`cdc="native"`, pgoutput)
against a throwaway Postgres 15 cluster with `wal_level=logical`: the
initial snapshot, then random rounds of INSERT / UPDATE / DELETE (single
statements and multi-statement transactions, key changes included) whose
every version is compared with the dataset's full history (a model kept
here, brute force); a value that does not fit is skipped with its reason;
Postgres down and back; `kill -9` at random moments while changes flow, ten
times: nothing lost (the history matches) and nothing doubled (the source's
exact row count). Seeds are printed."""

import random
import time

import psycopg
import pytest

from conftest import ThymeServer, import_text
from pg_util import PGBIN, Cluster
from test_source_postgres import source_of
from thyme.client import Client

DEFS = '''
from datetime import datetime
from typing import Optional

from thyme.connectors import Postgres, source
from thyme.datasets import dataset, field

pg = Postgres(name="crm", host="127.0.0.1", port=PG_PORT, db_name="postgres", username="postgres")


@source(pg.table("accounts"), cdc="native", disorder="1d", every="100ms")
@dataset(index=True)
class Account:
    uid: int = field(key=True)
    tier: str
    score: Optional[float]
    updated_at: datetime
'''


@pytest.fixture
def cluster():
    import os
    if not os.path.exists(os.path.join(PGBIN, "initdb")):
        pytest.fail(f"Postgres 15 binaries not found in {PGBIN}")
    c = Cluster(logical=True)
    with c.conn() as k:
        k.execute("CREATE TABLE accounts (uid bigint PRIMARY KEY, tier text NOT NULL, score float8, "
                  "updated_at timestamptz NOT NULL DEFAULT clock_timestamp())")
    yield c
    c.remove()


class Model:
    """Every change made to `accounts`, per key, in commit order: ("put",
    updated_at in µs, tier, score) or ("del",)."""

    def __init__(self):
        self.history = {}
        self.live = {}

    def put(self, uid, tier, score, at_us):
        self.history.setdefault(uid, []).append(("put", at_us, tier, score))
        self.live[uid] = (tier, score)

    def delete(self, uid):
        self.history.setdefault(uid, []).append(("del",))
        self.live.pop(uid, None)

    def changes(self):
        return sum(len(v) for v in self.history.values())


def micros(dt):
    return int(dt.timestamp()) * 1_000_000 + dt.microsecond


def run_round(k, rng, model, next_uid, key_moves=True):
    """Random changes, some in multi-statement transactions; returns the next
    unused uid."""
    def one(cur):
        nonlocal next_uid
        live = sorted(model.live)
        op = rng.random()
        if not live or op < 0.35:
            uid = next_uid
            next_uid += 1
            tier, score = rng.choice("abc"), rng.choice([None, round(rng.uniform(0, 100), 3)])
            at = cur.execute("INSERT INTO accounts (uid, tier, score) VALUES (%s, %s, %s) RETURNING updated_at",
                             (uid, tier, score)).fetchone()[0]
            model.put(uid, tier, score, micros(at))
        elif op < 0.75:
            uid = rng.choice(live)
            tier, score = rng.choice("abcd"), round(rng.uniform(0, 100), 3)
            at = cur.execute("UPDATE accounts SET tier = %s, score = %s, updated_at = clock_timestamp() "
                             "WHERE uid = %s RETURNING updated_at", (tier, score, uid)).fetchone()[0]
            model.put(uid, tier, score, micros(at))
        elif op < 0.8 and key_moves:
            # A key change: the old key is deleted, the new one upserted.
            uid = rng.choice(live)
            new = next_uid
            next_uid += 1
            row = cur.execute("UPDATE accounts SET uid = %s, updated_at = clock_timestamp() WHERE uid = %s "
                              "RETURNING tier, score, updated_at", (new, uid)).fetchone()
            model.delete(uid)
            model.put(new, row[0], row[1], micros(row[2]))
        else:
            uid = rng.choice(live)
            cur.execute("DELETE FROM accounts WHERE uid = %s", (uid,))
            model.delete(uid)

    for _ in range(rng.randrange(5, 40)):
        if rng.random() < 0.3:
            with k.transaction():
                for _ in range(rng.randrange(2, 6)):
                    one(k)
        else:
            one(k)
    return next_uid


def thyme_history(server):
    """Per key, the dataset's versions in time order, as the model writes them."""
    with psycopg.connect(server.dsn, autocommit=True) as c:
        rows = c.execute("SELECT uid, updated_at, _deleted, tier, score FROM history.account ORDER BY uid, updated_at").fetchall()
    out = {}
    for uid, ts, deleted, tier, score in rows:
        out.setdefault(uid, []).append(("del",) if deleted else ("put", micros(ts), tier, score))
    return out


def wait_history(server, model, timeout=90):
    deadline = time.time() + timeout
    while True:
        got = thyme_history(server)
        if got == model.history and source_of(server, "Account")["status"] == "idle":
            return
        if time.time() > deadline:
            bad = [u for u in set(got) | set(model.history) if got.get(u) != model.history.get(u)][:3]
            raise AssertionError(f"history differs for {bad}: thyme {[got.get(u) for u in bad]} "
                                 f"model {[model.history.get(u) for u in bad]}; {source_of(server, 'Account')}")
        time.sleep(0.2)


def test_native_cdc_snapshot_then_changes(cluster, tmp_path):
    seed = random.randrange(1 << 30)
    print("seed", seed)
    rng = random.Random(seed)
    model = Model()
    with cluster.conn() as k:
        # Rows before the source exists come from the initial snapshot:
        # more than one page of it.
        rows = k.execute("INSERT INTO accounts (uid, tier, score) SELECT g, 'a', g / 2.0 "
                         "FROM generate_series(1, 12345) g RETURNING uid, tier, score, updated_at").fetchall()
        for uid, tier, score, at in rows:
            model.put(uid, tier, score, micros(at))
    next_uid = 20000
    server = ThymeServer(str(tmp_path / "data"))
    try:
        m = import_text("source_pg_cdc_defs", f"PG_PORT = {cluster.port}\n" + DEFS)
        Client(url=server.control_url).commit("cdc", datasets=[m.Account])
        wait_history(server, model)
        s = source_of(server, "Account")
        assert s["connector"] == "postgres" and s["position"]["phase"] == "stream", s
        with cluster.conn() as k:
            slots = k.execute("SELECT slot_name FROM pg_replication_slots").fetchall()
        assert len(slots) == 1 and slots[0][0].startswith("thyme_account_0_"), slots
        for _ in range(6):
            with cluster.conn() as k:
                next_uid = run_round(k, rng, model, next_uid)
            wait_history(server, model)
        # The current rows and a lookup agree with the table.
        with cluster.conn() as k:
            want = k.execute("SELECT uid, tier, score FROM accounts ORDER BY uid").fetchall()
        with psycopg.connect(server.dsn, autocommit=True) as c:
            got = c.execute("SELECT uid, tier, score FROM account ORDER BY uid").fetchall()
        assert got == want
        assert source_of(server, "Account")["rows"] == model.changes()

        # A value that does not fit (a tier Thyme cannot hold as text is
        # impossible; NOT NULL is dropped and a null tier sent) is skipped
        # with its reason; the rest goes on.
        with cluster.conn() as k:
            k.execute("ALTER TABLE accounts ALTER COLUMN tier DROP NOT NULL")
            k.execute("INSERT INTO accounts (uid, tier) VALUES (%s, NULL)", (next_uid,))
            next_uid = run_round(k, rng, model, next_uid + 1)
        wait_history(server, model)
        s = source_of(server, "Account")
        assert s["skipped"] == 1, s
        status, body = server.http("GET", "/api/v1/sources/Account/rejected")
        assert status == 200 and body["rows"][0]["field"] == "tier", body

        # Postgres down: the source shows an error, the server serves; it
        # catches up when Postgres is back.
        cluster.stop()
        deadline = time.time() + 30
        while source_of(server, "Account")["status"] != "error":
            assert time.time() < deadline, source_of(server, "Account")
            time.sleep(0.2)
        assert server.http("GET", "/health")[0] == 200
        cluster.start()
        with cluster.conn() as k:
            next_uid = run_round(k, rng, model, next_uid)
        wait_history(server, model)
    finally:
        server.stop()


def test_native_cdc_kill_9(cluster, tmp_path):
    seed = random.randrange(1 << 30)
    print("seed", seed)
    rng = random.Random(seed)
    model = Model()
    server = ThymeServer(str(tmp_path / "data"))
    next_uid = 1
    try:
        m = import_text("source_pg_cdc_kill_defs", f"PG_PORT = {cluster.port}\n" + DEFS)
        Client(url=server.control_url).commit("cdc", datasets=[m.Account])
        # Changes made before the slot exists are seen only as the snapshot
        # (the rows as they are then), so start once it streams.
        deadline = time.time() + 60
        while ((source_of(server, "Account") or {}).get("position") or {}).get("phase") != "stream":
            assert time.time() < deadline, source_of(server, "Account")
            time.sleep(0.1)
        for _ in range(10):
            with cluster.conn() as k:
                for _ in range(rng.randrange(1, 8)):
                    next_uid = run_round(k, rng, model, next_uid, key_moves=False)
            time.sleep(rng.uniform(0.0, 0.8))
            server.proc.kill()
            server.proc.wait()
            server.start()
        wait_history(server, model, timeout=120)
        # Nothing doubled: every change was stored exactly once.
        assert source_of(server, "Account")["rows"] == model.changes()
    finally:
        server.stop()
