"""Source benchmarks: Thyme's ingest rate from each external system against
a floor read from the same data in the same run.

- kafka: N JSON messages pre-produced to a 4-partition topic on a noida
  broker; Thyme's Kafka source into a keyless dataset against a
  confluent-kafka (librdkafka) consumer that only counts the messages;
- parquet: N rows in F Parquet files; Thyme's files source into a keyless
  dataset against DuckDB loading the same files into a table on disk
  (`CREATE TABLE t AS SELECT * FROM read_parquet(...)`);
- postgres: an N-row table; Thyme's cursor source's initial read against
  `COPY (SELECT ...) TO STDOUT` of the same table to /dev/null.

Thyme's time runs from the commit that creates the source until
`GET /api/v1/sources` reports every row stored (it is polled every 50 ms).
Every rate is rows/s; the ratio is Thyme's over the floor's."""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timedelta, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from common import start_thyme, vm_hwm_mb  # noqa: E402

FIELDS = [
    {"name": "id", "type": "int"},
    {"name": "uid", "type": "int"},
    {"name": "amount", "type": "float"},
    {"name": "merchant", "type": "str"},
    {"name": "ts", "type": "datetime", "timestamp": True},
]
T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


def commit(control, connector, **source):
    body = {
        "schema_version": 1,
        "message": "source benchmark",
        "datasets": [{
            "name": "Event",
            "fields": FIELDS,
            "sources": [{"connector": connector, "cdc": "append", "disorder": "1d", **source}],
        }],
    }
    req = urllib.request.Request(f"{control}/api/v1/commit", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=120) as r:
        r.read()


def source_status(control):
    with urllib.request.urlopen(f"{control}/api/v1/sources", timeout=30) as r:
        return next((s for s in json.loads(r.read())["sources"] if s["dataset"] == "Event"), None)


def thyme_run(binary, connector, rows, timeout, **source):
    """Seconds from the commit until the source has stored `rows` rows, and
    the server's peak memory (MiB)."""
    data = tempfile.mkdtemp(prefix="thyme-bench-src-")
    proc, ports = start_thyme(binary, data)
    control = f"http://127.0.0.1:{ports['control']}"
    try:
        start = time.perf_counter()
        commit(control, connector, **source)
        deadline = start + timeout
        while True:
            s = source_status(control)
            if s and s["rows"] + s["skipped"] >= rows:
                took = time.perf_counter() - start
                break
            if s and s["status"] == "error":
                print(f"  source error (retrying): {s['error']}", file=sys.stderr)
            if time.perf_counter() > deadline:
                raise RuntimeError(f"source did not finish: {s}")
            time.sleep(0.05)
        if s["skipped"]:
            raise RuntimeError(f"{s['skipped']} rows skipped: {s}")
        return took, vm_hwm_mb(proc.pid)
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(data, ignore_errors=True)


def row(i):
    return {"id": i, "uid": i % 10_007, "amount": (i % 1000) / 10.0,
            "merchant": f"m{i % 97}", "ts": (T0 + timedelta(seconds=i)).isoformat()}


# --- Kafka -------------------------------------------------------------------

def bench_kafka(binary, rows, runs):
    from confluent_kafka import Consumer, TopicPartition
    from kafka_util import Broker, create_topic

    broker = Broker("noida").start()
    try:
        boot = broker.bootstrap
        create_topic(boot, "events", 4)
        t = time.perf_counter()
        produce_json(boot, "events", rows)
        print(f"  produced {rows:,} messages in {time.perf_counter() - t:.1f} s", file=sys.stderr)

        def raw():
            # The settings Thyme's consumer uses (noida answers a fetch with
            # up to the whole partition, whatever size is asked for).
            c = Consumer({"bootstrap.servers": boot, "group.id": "bench-raw",
                          "enable.auto.commit": False, "isolation.level": "read_committed",
                          "fetch.wait.max.ms": 100, "queued.min.messages": 200_000,
                          "receive.message.max.bytes": 2147483647, "log_level": 3})
            c.assign([TopicPartition("events", p, 0) for p in range(4)])
            n, start = 0, time.perf_counter()
            while n < rows:
                for m in c.consume(num_messages=10_000, timeout=1.0):
                    if m.error() is None:
                        n += 1
            took = time.perf_counter() - start
            c.close()
            return took

        connector = {"kind": "kafka", "name": "bench", "bootstrap_servers": boot, "topic": "events"}
        out = []
        for _ in range(runs):
            wait_idle(broker.proc.pid)
            raw_s = raw()
            wait_idle(broker.proc.pid)
            thyme_s, mem = thyme_run(binary, connector, rows, timeout=max(600, rows / 10_000))
            out.append((thyme_s, raw_s, mem))
            print(f"  kafka: thyme {thyme_s:.2f} s, raw {raw_s:.2f} s", file=sys.stderr)
        return out
    finally:
        broker.remove()


def wait_idle(pid, timeout=600):
    """Wait until process `pid` (the broker: noida saves its state in the
    background after a burst of writes) has used under 5% of a core for 2 s."""
    from common import cpu_seconds
    deadline = time.time() + timeout
    while time.time() < deadline:
        before = cpu_seconds(pid)
        time.sleep(2)
        if cpu_seconds(pid) - before < 0.1:
            return
    print("  the broker did not go idle", file=sys.stderr)


def produce_json(boot, topic, rows):
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": boot, "linger.ms": 20, "batch.num.messages": 10_000,
                  "queue.buffering.max.messages": 1_000_000, "compression.type": "none",
                  "log_level": 3})
    for i in range(rows):
        v = json.dumps(row(i)).encode()
        while True:
            try:
                p.produce(topic, v, partition=i % 4)
                break
            except BufferError:
                p.poll(0.05)
        if i % 50_000 == 0:
            p.poll(0)
    if p.flush(120) != 0:
        raise RuntimeError("messages left unsent")


# --- Parquet -----------------------------------------------------------------

def write_parquet(directory, rows, files):
    import pyarrow as pa
    import pyarrow.parquet as pq
    per = -(-rows // files)
    base = int(T0.timestamp() * 1_000_000)
    for f in range(files):
        lo, hi = f * per, min(rows, (f + 1) * per)
        ids = pa.array(range(lo, hi), pa.int64())
        import pyarrow.compute as pc
        table = pa.table({
            "id": ids,
            "uid": pc.remainder(ids, 10_007),
            "amount": pc.divide(pc.cast(pc.remainder(ids, 1000), pa.float64()), 10.0),
            "merchant": pc.binary_join_element_wise("m", pc.cast(pc.remainder(ids, 97), pa.string()), ""),
            "ts": pc.cast(pc.add(pc.multiply(ids, 1_000_000), base), pa.timestamp("us", tz="UTC")),
        })
        pq.write_table(table, os.path.join(directory, f"part-{f:03}.parquet"))


def bench_parquet(binary, rows, files, runs):
    import duckdb
    work = tempfile.mkdtemp(prefix="thyme-bench-parquet-")
    try:
        src = os.path.join(work, "files")
        os.mkdir(src)
        write_parquet(src, rows, files)
        time.sleep(1.1)  # older than the files source's settle time

        def duck():
            db = os.path.join(work, "duck.db")
            for p in (db, db + ".wal"):
                if os.path.exists(p):
                    os.remove(p)
            con = duckdb.connect(db)
            start = time.perf_counter()
            con.execute(f"CREATE TABLE t AS SELECT * FROM read_parquet('{src}/*.parquet')")
            con.execute("CHECKPOINT")
            took = time.perf_counter() - start
            n = con.execute("SELECT count(*) FROM t").fetchone()[0]
            con.close()
            assert n == rows, n
            return took

        connector = {"kind": "files", "name": "bench", "path": src, "format": "parquet"}
        out = []
        for _ in range(runs):
            duck_s = duck()
            thyme_s, mem = thyme_run(binary, connector, rows, timeout=max(600, rows / 10_000))
            out.append((thyme_s, duck_s, mem))
            print(f"  parquet: thyme {thyme_s:.2f} s, duckdb {duck_s:.2f} s", file=sys.stderr)
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --- Postgres ----------------------------------------------------------------

def bench_postgres(binary, rows, runs):
    from pg_util import PGBIN, Cluster
    c = Cluster()
    try:
        with c.conn() as k:
            k.execute("CREATE TABLE events (id bigint PRIMARY KEY, uid bigint NOT NULL, "
                      "amount float8 NOT NULL, merchant text NOT NULL, ts timestamptz NOT NULL)")
            k.execute("INSERT INTO events SELECT i, i %% 10007, (i %% 1000) / 10.0, 'm' || (i %% 97), "
                      "timestamptz '2024-01-01 00:00:00+00' + i * interval '1 second' "
                      "FROM generate_series(0, %s - 1) i", (rows,))
            k.execute("CREATE INDEX ON events (ts)")  # the cursor column, indexed
            k.execute("VACUUM ANALYZE events")

        def copy():
            start = time.perf_counter()
            with open(os.devnull, "wb") as null:
                subprocess.run([os.path.join(PGBIN, "psql"), "-h", "127.0.0.1", "-p", str(c.port),
                                "-U", "postgres", "-d", "postgres", "-X", "-q", "-c",
                                "COPY (SELECT id, uid, amount, merchant, ts FROM events) TO STDOUT"],
                               stdout=null, check=True)
            return time.perf_counter() - start

        connector = {"kind": "postgres", "name": "bench", "host": "127.0.0.1", "port": c.port,
                     "db_name": "postgres", "username": "postgres", "table": "events"}
        out = []
        for _ in range(runs):
            copy_s = copy()
            thyme_s, mem = thyme_run(binary, connector, rows, timeout=max(600, rows / 5_000),
                                     cursor="ts")
            out.append((thyme_s, copy_s, mem))
            print(f"  postgres: thyme {thyme_s:.2f} s, copy {copy_s:.2f} s", file=sys.stderr)
        return out
    finally:
        c.remove()


def line(name, rows, results, floor):
    """A table row: medians over the runs."""
    results = sorted(results, key=lambda r: r[0] / r[1])
    thyme_s, floor_s, mem = results[len(results) // 2]
    return (f"| {name} | {rows:,} | {rows / thyme_s:,.0f} | {floor} {rows / floor_s:,.0f} | "
            f"**{floor_s / thyme_s:.2f}x** | {mem:,.0f} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--only", default="kafka,parquet,postgres")
    ap.add_argument("--kafka-rows", type=int, default=10_000_000)
    ap.add_argument("--parquet-rows", type=int, default=10_000_000)
    ap.add_argument("--parquet-files", type=int, default=20)
    ap.add_argument("--postgres-rows", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--out")
    ap.add_argument("--command", default="bench/sources.sh")
    a = ap.parse_args()
    only = a.only.split(",")
    lines = []
    if "kafka" in only:
        lines.append(line("Kafka, JSON, 4 partitions (noida)", a.kafka_rows,
                          bench_kafka(a.bin, a.kafka_rows, a.runs), "confluent-kafka count"))
    if "parquet" in only:
        lines.append(line(f"Parquet, {a.parquet_files} files", a.parquet_rows,
                          bench_parquet(a.bin, a.parquet_rows, a.parquet_files, a.runs),
                          "DuckDB CTAS"))
    if "postgres" in only:
        lines.append(line("Postgres table, cursor, first read", a.postgres_rows,
                          bench_postgres(a.bin, a.postgres_rows, a.runs), "COPY TO STDOUT"))
    table = "\n".join([
        "| source | rows | Thyme rows/s | floor rows/s | Thyme / floor | Thyme peak RSS MiB |",
        "|---|---|---|---|---|---|",
        *lines,
    ])
    print(table)
    if a.out:
        with open(a.out, "w") as f:
            f.write(f"# Sources\n\n`{a.command}` ({time.strftime('%Y-%m-%d')}, "
                    f"{os.cpu_count()} cores; median of {a.runs} run(s), Thyme and the floor "
                    "taking turns on the same data)\n\n" + table + "\n")


if __name__ == "__main__":
    main()
