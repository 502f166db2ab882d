"""Extractors in the server: DAG resolution across featuresets, only the
needed extractors run, Python extractors that read datasets point in time
with `Dataset.lookup`, commit-time cycle checks, and failures (an extractor
that raises, returns the wrong type or length, or runs past the time
limit) reported with the extractor's name while the server keeps serving.

The definitions live in a module written to a temporary directory and
deleted after the commit: the server runs the committed source, and a
client without the file (plain HTTP, psycopg) gets results."""

import importlib
import os
import re
import sys
import tempfile
import threading
import time
import urllib.parse

import pandas as pd
import psycopg
import pytest

from conftest import ThymeServer
from thyme.client import Client

from test_pipeline_oracle import iso, ts_frame

DAY = 86_400_000_000
T0 = 1_704_067_200_000_000  # 2024-01-01T00:00:00Z
LIMIT_MS = 1500

DEFINITIONS = '''
from datetime import datetime
from typing import Optional

import pandas as pd

from thyme.connectors import Webhook, source
from thyme.datasets import dataset, field
from thyme.expr import col
from thyme.featuresets import extractor, feature, featureset
from thyme.lib import inputs, outputs

hook = Webhook(name="ext")


@source(hook.endpoint("Profile"), disorder="1d", cdc="upsert")
@dataset(index=True)
class Profile:
    pid: int = field(key=True)
    name: str
    score: float
    ts: datetime


@featureset
class Request:
    user: int


@featureset
class Person:
    pid: int = feature(Request.user)
    score: float = feature(Profile.score, default=-1.0)
    double_score: float = feature(col("score") * 2)
    name_len: int
    label: str

    @extractor(deps=[Profile])
    @inputs("pid")
    @outputs("name_len")
    def lengths(cls, ts, pid):
        df, found = Profile.lookup(ts, pid=pid)
        n = df["name"].fillna("").map(len)
        return pd.DataFrame({"name_len": [int(v) if f else -1 for v, f in zip(n, found)]})

    @extractor
    @inputs("name_len", "double_score")
    @outputs("label")
    def label_of(cls, ts, name_len, double_score):
        return pd.Series([f"{n}:{d:g}" for n, d in zip(name_len, double_score)])


@featureset
class Faulty:
    x: int
    boom: float
    wrong_type: bool
    wrong_len: int
    slow: int
    fine: int

    @extractor
    @inputs("x")
    @outputs("boom")
    def explode(cls, ts, x):
        return pd.DataFrame({"boom": [v // 0 for v in x]})

    @extractor
    @inputs("x")
    @outputs("wrong_type")
    def bad_type(cls, ts, x):
        return pd.DataFrame({"wrong_type": ["yes" for _ in x]})

    @extractor
    @inputs("x")
    @outputs("wrong_len")
    def bad_len(cls, ts, x):
        return pd.DataFrame({"wrong_len": [1]})

    @extractor
    @inputs("x")
    @outputs("slow")
    def spin(cls, ts, x):
        while True:
            pass

    @extractor
    @inputs("x")
    @outputs("fine")
    def plus_one(cls, ts, x):
        return x + 1
'''


@pytest.fixture(scope="module")
def served():
    """A server with a short extractor time limit and the definitions
    committed from a module that no longer exists."""
    tmp = tempfile.mkdtemp(prefix="thyme-ext-")
    server = ThymeServer(os.path.join(tmp, "data"), env={"THYME_EXTRACTOR_TIMEOUT_MS": str(LIMIT_MS)})
    mod_dir = os.path.join(tmp, "mods")
    os.makedirs(mod_dir)
    path = os.path.join(mod_dir, "ext_defs.py")
    with open(path, "w") as f:
        f.write(DEFINITIONS)
    sys.path.insert(0, mod_dir)
    try:
        m = importlib.import_module("ext_defs")
        client = Client(server.control_url, server.query_url)
        client.commit("extractors", datasets=[m.Profile], featuresets=[m.Request, m.Person, m.Faulty])
        rows = [(1, "ann", 1.5, T0), (1, "annabel", 2.5, T0 + 10 * DAY), (2, "bo", 7.0, T0 + 5 * DAY)]
        client.log("ext", "Profile", pd.DataFrame({
            "pid": [r[0] for r in rows], "name": [r[1] for r in rows], "score": [r[2] for r in rows],
            "ts": ts_frame([r[3] for r in rows]),
        }))
    finally:
        sys.path.remove(mod_dir)
        sys.modules.pop("ext_defs", None)
        os.remove(path)
    yield server, rows
    server.stop()


def expected_person(rows, pid, t):
    versions = [r for r in rows if r[0] == pid and r[3] <= t]
    if not versions:
        score, name_len = -1.0, -1
    else:
        v = max(versions, key=lambda r: r[3])
        score, name_len = v[2], len(v[1])
    return {"Person.pid": pid, "Person.score": score, "Person.double_score": score * 2,
            "Person.name_len": name_len, "Person.label": f"{name_len}:{score * 2:g}"}


def calls(server):
    _, text = None, None
    import urllib.request

    with urllib.request.urlopen(server.control_url + "/metrics", timeout=30) as r:
        text = r.read().decode()
    out = {}
    for m in re.finditer(r'thyme_extractor_calls_total\{featureset="(\w+)",extractor="(\w+)"\} (\d+)', text):
        out[(m.group(1), m.group(2))] = int(m.group(3))
    return out


def test_chain_across_featuresets_with_point_in_time_lookups_in_python(served):
    server, rows = served
    pids = [1, 2, 3, 1, 2, 1]
    times = [T0 - DAY, T0 + 5 * DAY, T0 + 20 * DAY, T0 + 10 * DAY - 1, T0 + 5 * DAY - 1, T0 + 10 * DAY]
    status, got = server.query_http("POST", "/api/v1/query", {
        "inputs": ["Request.user"], "outputs": ["Person"],
        "data": {"Request.user": pids}, "timestamps": [iso(t) for t in times]})
    assert status == 200, got
    assert list(got) == ["Person.pid", "Person.score", "Person.double_score", "Person.name_len", "Person.label"]
    for i, (pid, t) in enumerate(zip(pids, times)):
        want = expected_person(rows, pid, t)
        assert {k: got[k][i] for k in want} == want, (pid, iso(t))


def test_only_needed_extractors_run(served):
    server, _ = served
    before = calls(server)
    status, got = server.query_http("POST", "/api/v1/query", {
        "inputs": ["Request.user"], "outputs": ["Person.score"], "data": {"Request.user": [1, 2]}})
    assert status == 200, got
    assert got == {"Person.score": [2.5, 7.0]}
    after = calls(server)
    ran = {k for k in after if after[k] != before.get(k, 0)}
    assert ran == {("Person", "_alias_pid"), ("Person", "_lookup_score")}, ran
    # Supplying a computed feature skips its extractor (and what it needs).
    before = after
    status, got = server.query_http("POST", "/api/v1/query", {
        "inputs": ["Person.score", "Person.name_len"], "outputs": ["Person.label"],
        "data": {"Person.score": [1.0], "Person.name_len": [4]}})
    assert status == 200, got
    assert got == {"Person.label": ["4:2"]}
    after = calls(server)
    ran = {k for k in after if after[k] != before.get(k, 0)}
    assert ran == {("Person", "_expr_double_score"), ("Person", "label_of")}, ran
    # The SQL view runs only what its columns need.
    before = after
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        assert conn.execute("SELECT x, fine FROM faulty WHERE x IN (1, 2) ORDER BY x").fetchall() == [(1, 2), (2, 3)]
    after = calls(server)
    ran = {k for k in after if after[k] != before.get(k, 0)}
    assert ran == {("Faulty", "plus_one")}, ran


def test_missing_inputs_unknown_features_and_cycles(served):
    server, _ = served
    status, got = server.query_http("POST", "/api/v1/query", {
        "inputs": [], "outputs": ["Person.score"], "data": {}})
    assert status == 400 and got["error"]["code"] == "missing_inputs", got
    assert "Request.user" in got["error"]["message"]
    status, got = server.query_http("POST", "/api/v1/query", {
        "inputs": ["Request.user"], "outputs": ["Person.nope"], "data": {"Request.user": [1]}})
    assert status == 404 and "no feature nope" in got["error"]["message"], got
    status, got = server.query_http("POST", "/api/v1/query", {
        "inputs": ["Request.user"], "outputs": ["Person"], "data": {"Request.user": ["x"]}})
    assert status == 400 and got["error"]["field"] == "Request.user", got
    status, got = server.query_http("GET", "/features?featureset=Person&user=1")
    assert status == 400 and got["error"]["code"] == "unknown_feature", got
    # Cycles are refused at commit, naming the features.
    payload = {
        "schema_version": 1, "message": "cycle", "incremental": True, "datasets": [],
        "featuresets": [{"name": "Cyc", "features": [{"name": "a", "type": "int"}, {"name": "b", "type": "int"}],
                         "extractors": [
                             {"name": "e1", "kind": "expr", "inputs": ["Cyc.b"], "outputs": ["a"], "expr": {"col": "b"}},
                             {"name": "e2", "kind": "expr", "inputs": ["Cyc.a"], "outputs": ["b"], "expr": {"col": "a"}}]}],
    }
    status, got = server.http("POST", "/api/v1/commit", payload)
    assert status == 400, got
    assert "cycle" in got["error"]["message"] and "Cyc.a" in got["error"]["message"], got


def test_extractor_failures_name_the_extractor_and_the_server_keeps_serving(served):
    server, _ = served
    query = lambda out, xs=(1,): server.query_http("POST", "/api/v1/query", {  # noqa: E731
        "inputs": ["Faulty.x"], "outputs": [out], "data": {"Faulty.x": list(xs)}})
    status, got = query("Faulty.boom")
    assert status == 422 and got["error"]["code"] == "extractor_error", got
    assert "Faulty.explode" in got["error"]["message"] and "ZeroDivisionError" in got["error"]["message"], got
    assert "line " in got["error"]["message"]
    status, got = query("Faulty.wrong_type")
    assert status == 422 and "Faulty.bad_type" in got["error"]["message"] and "wrong_type" in got["error"]["message"], got
    status, got = query("Faulty.wrong_len", xs=(1, 2))
    assert status == 422 and "Faulty.bad_len" in got["error"]["message"], got
    assert "1 values" in got["error"]["message"], got
    status, got = server.query_http("GET", "/features?featureset=Faulty&x=3")
    assert status == 422, got
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as err:
            conn.execute("SELECT boom FROM faulty WHERE x = 1").fetchall()
        assert err.value.sqlstate == "38000"
        assert "Faulty.explode" in str(err.value) and "ZeroDivisionError" in str(err.value)
        # The connection and the server go on.
        assert conn.execute("SELECT fine FROM faulty WHERE x = 41").fetchall() == [(42,)]
    status, got = query("Faulty.fine", xs=(1, 2))
    assert status == 200 and got == {"Faulty.fine": [2, 3]}, got


def test_slow_extractor_is_stopped_at_the_limit_without_stalling_others(served):
    server, rows = served
    result = {}

    def slow():
        t = time.time()
        result["slow"] = server.query_http("POST", "/api/v1/query", {
            "inputs": ["Faulty.x"], "outputs": ["Faulty.slow"], "data": {"Faulty.x": [1]}})
        result["slow_s"] = time.time() - t

    th = threading.Thread(target=slow)
    th.start()
    time.sleep(0.3)
    # Meanwhile: lookups (no Python) answer at once, and a Python extractor
    # still gets its turns at the interpreter.
    t = time.time()
    status, got = server.query_http("POST", "/api/v1/query", {
        "inputs": ["Request.user"], "outputs": ["Person.score"], "data": {"Request.user": [2]}})
    assert status == 200 and got == {"Person.score": [7.0]}, got
    assert time.time() - t < 1.0
    # A computed feature can be supplied too (here Person.pid, by name).
    status, got = server.query_http("GET", f"/features?featureset=Person&pid=2&ts={urllib.parse.quote(iso(T0 + 6 * DAY))}")
    assert status == 200 and got == {"pid": 2, "score": 7.0, "double_score": 14.0, "name_len": 2, "label": "2:14"}, got
    assert th.is_alive()
    th.join(timeout=LIMIT_MS / 1000 + 10)
    status, got = result["slow"]
    assert status == 504 and got["error"]["code"] == "extractor_timeout", got
    assert "Faulty.spin" in got["error"]["message"], got
    # Interrupted by the watchdog at the limit (the request deadline is 2 s later).
    assert result["slow_s"] < LIMIT_MS / 1000 + 1.0, result["slow_s"]
    # Nothing is left pending in the interpreter: the next calls succeed.
    for _ in range(3):
        status, got = server.query_http("POST", "/api/v1/query", {
            "inputs": ["Faulty.x"], "outputs": ["Faulty.fine"], "data": {"Faulty.x": [5]}})
        assert status == 200 and got == {"Faulty.fine": [6]}, got
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as err:
            conn.execute("SELECT slow FROM faulty WHERE x = 1").fetchall()
        assert err.value.sqlstate == "57014", err.value


def test_dataset_lookup_endpoint_and_views_in_psql(served):
    server, rows = served
    client = Client(server.control_url, server.query_url)
    df, found = client.lookup("Profile", pd.DataFrame({"pid": [1, 2, 3]}), fields=["name", "score"],
                              timestamps=[iso(T0 + DAY), iso(T0 + DAY), iso(T0 + DAY)])
    assert list(found) == [True, False, False]
    assert list(df.columns) == ["name", "score"]
    assert df["name"].iloc[0] == "ann" and df["score"].iloc[0] == 1.5
    df, found = client.lookup("Profile", pd.DataFrame({"pid": [1, 2]}))
    assert list(found) == [True, True] and list(df["name"]) == ["annabel", "bo"]
    status, got = server.query_http("POST", "/api/v1/lookup", {"dataset": "Profile", "keys": {"uid": [1]}})
    assert status == 400 and "pid" in got["error"]["message"], got
    status, got = server.query_http("POST", "/api/v1/lookup", {"dataset": "Nope", "keys": {"pid": [1]}})
    assert status == 404, got
    out = server.psql("-c", "\\dv").stdout
    assert re.search(r"public \| person\s+\| view", out) and "faulty" in out and "request" in out, out
    out = server.psql("-c", "\\d person").stdout
    assert "double_score" in out and "double precision" in out, out
