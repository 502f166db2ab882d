"""S3 bucket sources (`S3(...).bucket(...)`) against moto's S3 server
started here: new objects are read on every poll, each once; a malformed
object is recorded and the others read; the source shows an error while
the bucket cannot be reached and catches up when it can; `kill -9` while
objects flow loses and doubles nothing. Seeds are printed."""

import os
import random
import subprocess
import sys
import time
import urllib.request

import boto3
import psycopg
import pytest

from conftest import ThymeServer, free_port, import_text
from thyme.client import Client

DEFS = '''
from datetime import datetime

from thyme.connectors import S3, source
from thyme.datasets import dataset

s3 = S3(name="lake", aws_access_key_id="test", aws_secret_access_key="test", endpoint=ENDPOINT)


@source(s3.bucket("events", prefix="in/", format="json"), disorder="1d", cdc="append", every="200ms")
@dataset
class Event:
    eid: int
    kind: str
    ts: datetime
'''


class Moto:
    def __init__(self):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None
        self.start()

    def start(self):
        exe = os.path.join(os.path.dirname(sys.executable), "moto_server")
        self.proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                urllib.request.urlopen(self.url + "/moto-api/", timeout=1)
                return
            except Exception:
                time.sleep(0.1)
        raise RuntimeError("moto_server did not start")

    def stop(self):
        self.proc.terminate()
        self.proc.wait()

    def client(self):
        return boto3.client("s3", endpoint_url=self.url, aws_access_key_id="test",
                            aws_secret_access_key="test", region_name="us-east-1")


@pytest.fixture
def moto():
    m = Moto()
    m.client().create_bucket(Bucket="events")
    yield m
    m.stop()


def load_defs(endpoint, name):
    return import_text(name, f"ENDPOINT = {endpoint!r}\n" + DEFS)


def source_of(server):
    status, body = server.http("GET", "/api/v1/sources")
    return next(s for s in body["sources"] if s["dataset"] == "Event")


def wait(server, pred, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        s = source_of(server)
        if pred(s):
            return s
        time.sleep(0.1)
    raise AssertionError(source_of(server))


def events(server):
    with psycopg.connect(server.dsn, autocommit=True) as c:
        return c.execute("SELECT count(*), count(DISTINCT eid), coalesce(sum(eid), 0) FROM event").fetchone()


def put(client, key, eids):
    body = "\n".join(f'{{"eid": {e}, "kind": "k{e % 3}", "ts": "2024-01-01T00:00:00Z"}}' for e in eids)
    client.put_object(Bucket="events", Key=key, Body=body.encode())


def test_s3_bucket_source(moto, tmp_path):
    seed = random.randrange(1 << 30)
    print("seed", seed)
    rng = random.Random(seed)
    server = ThymeServer(str(tmp_path / "data"))
    try:
        m = load_defs(moto.url, "source_s3_defs")
        Client(url=server.control_url).commit("s3", datasets=[m.Event])
        s3 = moto.client()
        eid = 0
        for n in range(5):
            ids = list(range(eid + 1, eid + 1 + rng.randrange(1, 50)))
            eid = ids[-1]
            put(s3, f"in/part-{n:03d}.jsonl", ids)
        s3.put_object(Bucket="events", Key="other/skip.jsonl", Body=b'{"eid": -1}')  # outside the prefix
        s3.put_object(Bucket="events", Key="in/part-bad.jsonl", Body=b'{"eid": "x", "kind": "k", "ts": 1}\nnot json\n')
        st = wait(server, lambda s: (s["position"] or {}).get("files_read") == 6 and s["status"] == "idle")
        assert st["rows"] == eid and st["skipped"] == 2, st
        assert st["position"]["directory"] == "s3://events", st
        assert events(server) == (eid, eid, eid * (eid + 1) // 2)

        # Unreachable: error status, retried; back: the new objects are read.
        moto.stop()
        wait(server, lambda s: s["status"] == "error")
        assert "s3://events" in source_of(server)["error"]
        moto.start()  # in memory: an empty store again
        s3 = moto.client()
        s3.create_bucket(Bucket="events")
        put(s3, "in/part-100.jsonl", [eid + 1, eid + 2])
        wait(server, lambda s: s["status"] == "idle" and (s["position"] or {}).get("files_read") == 7, timeout=90)
        assert events(server)[0] == eid + 2
    finally:
        server.stop()


def test_s3_source_kill_9(moto, tmp_path):
    seed = random.randrange(1 << 30)
    print("seed", seed)
    rng = random.Random(seed)
    server = ThymeServer(str(tmp_path / "data"))
    s3 = moto.client()
    total, objects = 0, 0
    try:
        m = load_defs(moto.url, "source_s3_kill_defs")
        Client(url=server.control_url).commit("s3", datasets=[m.Event])
        for _ in range(10):
            for _ in range(rng.randrange(1, 5)):
                put(s3, f"in/obj-{objects:04d}.jsonl", range(total + 1, total + 201))
                total += 200
                objects += 1
            time.sleep(rng.uniform(0.0, 0.6))
            server.proc.kill()
            server.proc.wait()
            server.start()
        wait(server, lambda s: (s["position"] or {}).get("files_read") == objects and s["status"] == "idle", timeout=120)
        assert events(server) == (total, total, total * (total + 1) // 2)
    finally:
        server.stop()
