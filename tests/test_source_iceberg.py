"""Iceberg table sources end to end against real tables written by
pyiceberg (a `SqlCatalog` on sqlite with a `file://` warehouse, and the same
catalog behind a REST endpoint served here): appends in random rounds (late
and out-of-order event times), copy-on-write overwrites and deletes on a
keyed dataset (compared with every version of a model kept here, and AS OF
at random times), a delete on a keyless dataset (reported, rows kept), a
downstream pipeline against a brute-force recomputation, rows that do not
fit (a null required value, a data file without a column) skipped with the
reason, the catalog unreachable and back, and `kill -9` at random moments
while commits flow, ten times: nothing lost, nothing doubled. Seeds are
printed."""

import json
import os
import random
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import ThymeServer, free_port, import_text
from iceberg_util import append, create_table, delete, make_catalog, overwrite
from test_source_kafka import query, source_of, wait_for
from thyme.client import Client

DEFS = '''
from datetime import datetime

from thyme.connectors import Iceberg, source
from thyme.datasets import Count, Dataset, Sum, dataset, field, pipeline
from thyme.dtypes import Continuous
from thyme.lib import inputs

lake = Iceberg(name="default", catalog_uri=CATALOG_URI, warehouse=WAREHOUSE)


@source(lake.table("shop.events"), disorder="1d", cdc="append", every="200ms")
@dataset
class Event:
    eid: int
    uid: int
    amount: float
    ts: datetime


@dataset(index=True)
class EventStats:
    uid: int = field(key=True)
    events: int
    spent: float
    ts: datetime

    @pipeline
    @inputs(Event)
    def stats(cls, e: Dataset):
        return e.groupby("uid").aggregate(
            events=Count(window=Continuous("forever")),
            spent=Sum(of="amount", window=Continuous("forever")),
        )


@source(lake.table("shop.customers"), disorder="1d", cdc="upsert", every="200ms")
@dataset(index=True)
class Customer:
    uid: int = field(key=True)
    tier: str
    ts: datetime
'''

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
TIERS = ["free", "pro", "gold", "team"]

EVENTS = pa.schema([
    pa.field("eid", pa.int64(), nullable=False),
    pa.field("uid", pa.int64(), nullable=False),
    pa.field("amount", pa.float64()),  # optional in the table, required in the dataset
    pa.field("ts", pa.timestamp("us", tz="UTC"), nullable=False),
])
CUSTOMERS = pa.schema([
    pa.field("uid", pa.int64(), nullable=False),
    pa.field("tier", pa.string(), nullable=False),
    pa.field("ts", pa.timestamp("us", tz="UTC"), nullable=False),
])


def us(dt):
    return int(dt.timestamp()) * 1_000_000 + dt.microsecond


def load_defs(uri, warehouse, name):
    return import_text(name, f"CATALOG_URI = {uri!r}\nWAREHOUSE = {warehouse!r}\n" + DEFS)


class Events:
    """The events appended, and what Thyme should hold of them."""

    def __init__(self, rng):
        self.rng = rng
        self.good = []
        self.next_id = 1

    def round(self, n):
        rows = []
        for _ in range(n):
            rows.append({"eid": self.next_id, "uid": self.rng.randrange(15),
                         "amount": round(self.rng.uniform(0, 50), 2),
                         # Out of order by up to a day.
                         "ts": T0 + timedelta(seconds=self.next_id * 60 - self.rng.randrange(86400))})
            self.next_id += 1
        self.good.extend(rows)
        return rows

    def check(self, server):
        got = query(server, "SELECT eid, uid, amount, ts FROM event ORDER BY eid")
        want = [(e["eid"], e["uid"], e["amount"], e["ts"]) for e in self.good]
        if got != want:
            return False, f"{len(got)} rows, want {len(want)}; {source_of(server, 'Event')}"
        stats = {u: (n, round(s, 6)) for u, n, s in query(server, "SELECT uid, events, spent FROM event_stats")}
        brute = {}
        for e in self.good:
            n, s = brute.get(e["uid"], (0, 0.0))
            brute[e["uid"]] = (n + 1, s + e["amount"])
        brute = {u: (n, round(s, 6)) for u, (n, s) in brute.items()}
        return stats == brute, f"stats {stats} != {brute}"


class Customers:
    """The customers table's every change, per key: ("put", ts µs, tier)
    or ("del", commit ms as µs); one row per key in the table."""

    def __init__(self, rng):
        self.rng = rng
        self.live = {}  # uid -> (tier, ts)
        self.history = {}
        self.next_uid = 1

    def round(self, table):
        rng = self.rng
        op = rng.choice(["add", "add", "update", "delete"] if self.live else ["add"])
        if op == "add":
            rows = []
            for _ in range(rng.randrange(1, 30)):
                uid, self.next_uid = self.next_uid, self.next_uid + 1
                rows.append({"uid": uid, "tier": rng.choice(TIERS),
                             "ts": T0 + timedelta(minutes=uid * 7 + rng.randrange(600))})
            append(table, rows)
            for r in rows:
                self.live[r["uid"]] = (r["tier"], r["ts"])
                self.history.setdefault(r["uid"], []).append(("put", us(r["ts"]), r["tier"]))
        elif op == "update":
            # Copy-on-write: the matched rows' files are rewritten without
            # them (their other rows copied unchanged), the new versions
            # appended.
            uids = rng.sample(sorted(self.live), min(len(self.live), rng.randrange(1, 6)))
            rows = []
            for uid in uids:
                tier, ts = self.live[uid]
                rows.append({"uid": uid, "tier": rng.choice(TIERS), "ts": ts + timedelta(hours=rng.randrange(1, 48))})
            overwrite(table, rows, overwrite_filter=f"uid in ({', '.join(map(str, uids))})")
            for r in rows:
                self.live[r["uid"]] = (r["tier"], r["ts"])
                self.history[r["uid"]].append(("put", us(r["ts"]), r["tier"]))
        else:
            uids = rng.sample(sorted(self.live), min(len(self.live), rng.randrange(1, 4)))
            delete(table, f"uid in ({', '.join(map(str, uids))})")
            at = table.current_snapshot().timestamp_ms * 1000
            for uid in uids:
                del self.live[uid]
                self.history[uid].append(("del", at))
        return op

    def check(self, server):
        rows = query(server, "SELECT uid, ts, _deleted, tier FROM history.customer ORDER BY uid, ts")
        got = {}
        for uid, ts, deleted, tier in rows:
            got.setdefault(uid, []).append(("del", us(ts)) if deleted else ("put", us(ts), tier))
        if got != self.history:
            bad = [u for u in set(got) | set(self.history) if got.get(u) != self.history.get(u)][:3]
            return False, f"{bad}: {[got.get(u) for u in bad]} != {[self.history.get(u) for u in bad]}"
        live = dict((u, (t, ts)) for u, t, ts in query(server, "SELECT uid, tier, ts FROM customer"))
        return live == self.live, f"live {len(live)} != {len(self.live)}"

    def as_of(self, uid, at_us):
        """The tier of `uid` at `at_us` by brute force over its history."""
        value = None
        for ev in sorted(self.history.get(uid, []), key=lambda e: e[1]):
            if ev[1] <= at_us:
                value = ev[2] if ev[0] == "put" else None
        return value


def check_as_of(server, customers, rng, n=20):
    uids = sorted(customers.history)
    for _ in range(n):
        uid = rng.choice(uids)
        times = [ev[1] for ev in customers.history[uid]]
        at = rng.choice(times) + rng.choice([-1, 0, 1, 3_600_000_000])
        at_dt = datetime.fromtimestamp(at // 1_000_000, tz=timezone.utc) + timedelta(microseconds=at % 1_000_000)
        got = query(server, f"SELECT tier FROM customer WHERE uid = {uid} AS OF '{at_dt.isoformat()}'")
        want = customers.as_of(uid, at)
        assert got == ([(want,)] if want is not None else []), (uid, at_dt, got, want, customers.history[uid])


def lake(tmp_path):
    """A seeded random source, a fresh catalog with the two tables, and
    their models: (rng, catalog, uri, warehouse, events table, customers
    table, Events, Customers)."""
    seed = random.randrange(1 << 30)
    print("seed", seed)
    rng = random.Random(seed)
    catalog, uri, warehouse = make_catalog(tmp_path / "lake")
    events_t = create_table(catalog, "shop.events", EVENTS)
    customers_t = create_table(catalog, "shop.customers", CUSTOMERS)
    return rng, catalog, uri, warehouse, events_t, customers_t, Events(rng), Customers(rng)


def test_iceberg_source_end_to_end(tmp_path):
    rng, _, uri, warehouse, events_t, customers_t, events, customers = lake(tmp_path)
    append(events_t, events.round(200))  # before the source starts
    server = ThymeServer(str(tmp_path / "data"))
    try:
        m = load_defs(uri, warehouse, "source_iceberg_defs")
        Client(url=server.control_url).commit("iceberg", datasets=[m.Event, m.EventStats, m.Customer])
        ops = []
        for _ in range(8):
            append(events_t, events.round(rng.randrange(1, 300)))
            ops.append(customers.round(customers_t))
            wait_for("events", lambda: events.check(server))
            wait_for("customers", lambda: customers.check(server))
        # Every kind of commit came through at least once.
        while not {"update", "delete"} <= set(ops):
            ops.append(customers.round(customers_t))
        wait_for("customers", lambda: customers.check(server))
        check_as_of(server, customers, rng)
        s = source_of(server, "Customer")
        assert s["connector"] == "iceberg" and s["status"] == "idle", s
        assert s["position"]["snapshot"] == customers_t.current_snapshot().snapshot_id, s
        assert s["skipped"] == 0, s
        # The lineage graph shows the source feeding its datasets.
        status, lineage = server.http("GET", "/api/v1/lineage")
        assert status == 200, lineage
        assert {"kind": "source", "name": "iceberg:default", "connector": "iceberg"} in lineage["nodes"], lineage
        feeds = {(e["to"], e["detail"]["table"]) for e in lineage["edges"] if e["from"] == "iceberg:default"}
        assert feeds == {("Event", "shop.events"), ("Customer", "shop.customers")}, lineage

        # A delete on the keyless dataset: the events stay, one report
        # says how many rows the table dropped.
        gone = [e["eid"] for e in events.good if e["uid"] == 3]
        delete(events_t, "uid = 3")
        wait_for("the delete read", lambda: (
            source_of(server, "Event")["position"]["snapshot"] == events_t.current_snapshot().snapshot_id,
            source_of(server, "Event")))
        assert events.check(server)[0]
        status, body = server.http("GET", "/api/v1/sources/Event/rejected")
        assert status == 200, body
        notes = [r for r in body["rows"] if "keyless" in r["error"]]
        assert len(notes) == 1 and notes[0]["value"] == f"{len(gone)} rows removed", body

        # Bad rows: a null required value (the table allows it), and a data
        # file without the column (added as is): skipped with the reason,
        # the rest stored.
        rows = events.round(5)
        bad_rows = [dict(r, eid=10**6 + i, amount=None) for i, r in enumerate(rows[:2])]
        append(events_t, rows + bad_rows)
        loose = str(tmp_path / "loose.parquet")
        no_amount = pa.schema([f for f in EVENTS if f.name != "amount"])
        pq.write_table(pa.Table.from_pylist([{"eid": 10**7, "uid": 1, "ts": T0}], schema=no_amount), loose)
        events_t.add_files([f"file://{loose}"])
        more = events.round(7)
        append(events_t, more)
        wait_for("events after bad rows", lambda: events.check(server))
        s = source_of(server, "Event")
        assert s["skipped"] == 1 + 2 + 1, s
        status, body = server.http("GET", "/api/v1/sources/Event/rejected")
        missing = [r for r in body["rows"] if r["field"] == "amount"]
        assert len(missing) == 3, body
        assert any("loose.parquet" in r["location"] for r in missing), missing
        assert query(server, "SELECT count(*) FROM thyme_rejected_rows WHERE dataset = 'Event'") == [(4,)]

        # The catalog unreachable: an error status, the server serves, and
        # it catches up once the catalog is back.
        db = str(tmp_path / "lake" / "catalog.db")
        os.rename(db, db + ".away")
        wait_for("error status", lambda: (source_of(server, "Event")["status"] == "error",
                                          source_of(server, "Event")), timeout=60)
        assert "catalog" in (source_of(server, "Event")["error"] or ""), source_of(server, "Event")
        assert server.http("GET", "/health")[0] == 200
        assert query(server, "SELECT count(*) FROM event")[0][0] == len(events.good)
        os.rename(db + ".away", db)
        append(events_t, events.round(20))
        customers.round(customers_t)
        wait_for("after the catalog came back", lambda: events.check(server))
        wait_for("customers after the catalog came back", lambda: customers.check(server))

        # A restart reads nothing again.
        server.restart()
        wait_for("idle after restart", lambda: (source_of(server, "Event")["status"] == "idle",
                                                source_of(server, "Event")))
        assert events.check(server)[0] and customers.check(server)[0]
        assert source_of(server, "Event")["rows"] == len(events.good)
    finally:
        server.stop()


def test_iceberg_source_kill_9(tmp_path):
    rng, _, uri, warehouse, events_t, customers_t, events, customers = lake(tmp_path)
    server = ThymeServer(str(tmp_path / "data"))
    try:
        m = load_defs(uri, warehouse, "source_iceberg_kill_defs")
        Client(url=server.control_url).commit("iceberg", datasets=[m.Event, m.EventStats, m.Customer])
        for _ in range(10):
            # Several commits (several data files per poll) between kills.
            for _ in range(rng.randrange(1, 5)):
                append(events_t, events.round(rng.randrange(50, 2000)))
                customers.round(customers_t)
            time.sleep(rng.uniform(0.0, 0.8))
            server.proc.kill()
            server.proc.wait()
            server.start()
        wait_for("events", lambda: events.check(server), timeout=180)
        wait_for("customers", lambda: customers.check(server))
        # Nothing doubled: the exact count of rows read; the pipeline (fed
        # by the dataset's log) saw each event once.
        assert source_of(server, "Event")["rows"] == len(events.good)
    finally:
        server.stop()


class RestCatalog:
    """The two REST catalog endpoints a reader needs (`GET /v1/config` and
    `GET /v1/{prefix}/namespaces/{ns}/tables/{table}`, Iceberg's REST
    catalog spec), answered from a pyiceberg SqlCatalog: the same tables,
    reached over HTTP."""

    def __init__(self, catalog, prefix="lake1"):
        self.catalog = catalog
        self.prefix = prefix
        self.requests = []
        self.down = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.requests.append(self.path)
                if outer.down:
                    return self.answer(503, {"error": {"message": "down for maintenance", "code": 503}})
                path = self.path.split("?")[0]
                if path == "/v1/config":
                    return self.answer(200, {"defaults": {}, "overrides": {"prefix": outer.prefix}})
                parts = path.split("/")
                # ['', 'v1', prefix, 'namespaces', ns, 'tables', t]
                if len(parts) == 7 and parts[2] == outer.prefix and parts[3] == "namespaces" and parts[5] == "tables":
                    from urllib.parse import unquote
                    ns = tuple(unquote(parts[4]).split("\x1f"))
                    try:
                        t = outer.catalog.load_table(ns + (unquote(parts[6]),))
                    except Exception as e:  # noqa: BLE001 - any miss is a 404 here
                        return self.answer(404, {"error": {"message": str(e), "type": "NoSuchTableException",
                                                           "code": 404}})
                    return self.answer(200, {"metadata-location": t.metadata_location,
                                             "metadata": json.loads(t.metadata.model_dump_json(by_alias=True))})
                return self.answer(404, {"error": {"message": f"no route {path}", "code": 404}})

            def answer(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.http = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.uri = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self):
        self.http.shutdown()
        self.http.server_close()


def test_iceberg_rest_catalog(tmp_path):
    rng, catalog, _, _, events_t, customers_t, events, customers = lake(tmp_path)
    rest = RestCatalog(catalog)
    server = ThymeServer(str(tmp_path / "data"))
    try:
        m = load_defs(rest.uri, "lake1", "source_iceberg_rest_defs")
        Client(url=server.control_url).commit("iceberg", datasets=[m.Event, m.EventStats, m.Customer])
        for _ in range(4):
            append(events_t, events.round(rng.randrange(1, 300)))
            customers.round(customers_t)
            wait_for("events", lambda: events.check(server))
            wait_for("customers", lambda: customers.check(server))
        assert any(r.startswith("/v1/config?warehouse=lake1") for r in rest.requests), rest.requests[:5]
        assert "/v1/lake1/namespaces/shop/tables/events" in rest.requests, rest.requests[:5]
        # The catalog answering 503: an error status naming the answer;
        # back: caught up.
        rest.down = True
        wait_for("error status", lambda: (source_of(server, "Event")["status"] == "error"
                                          and "503" in (source_of(server, "Event")["error"] or ""),
                                          source_of(server, "Event")), timeout=60)
        rest.down = False
        append(events_t, events.round(30))
        wait_for("events after the catalog came back", lambda: events.check(server))
    finally:
        server.stop()
        rest.close()
