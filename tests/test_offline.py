"""Offline queries: `Client.query_offline` through the streamed Arrow
endpoint (`POST /api/v1/query_offline`) on the seed example, against a
brute-force recomputation at each spine row's time and against the SQL
form (ASOF JOIN with the featureset view); job progress; errors before
and during the stream."""

import io
import os
import random
import urllib.error
import urllib.parse
import urllib.request

import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

from thyme.client import ThymeError

from test_asof import from_us, ts_text
from test_featuresets import DAY, FEATURES, T0, probes, same, setup_example


def arrow_post(thyme, params, table=None, raw=None, content_type="application/vnd.apache.arrow.stream"):
    """(status, headers, body bytes) of a raw query_offline request."""
    if raw is None:
        sink = io.BytesIO()
        with ipc.new_stream(sink, table.schema) as w:
            w.write_table(table)
        raw = sink.getvalue()
    url = f"{thyme.query_url}/api/v1/query_offline?{urllib.parse.urlencode(params)}"
    req = urllib.request.Request(url, data=raw, method="POST", headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def row(frame, i):
    """Row `i` of a query_offline frame as Python values (NaN: None)."""
    got = {f: frame[f"UserFeatures.{f}"].iloc[i] for f in FEATURES}
    got = {k: (v.item() if hasattr(v, "item") else v) for k, v in got.items()}
    return {k: (None if v is None or (isinstance(v, float) and v != v) else v) for k, v in got.items()}


def test_query_offline_matches_brute_force_and_sql(thyme):
    seed = int(os.environ.get("THYME_SEED", random.randrange(1 << 30)))
    print(f"test_query_offline_matches_brute_force_and_sql: THYME_SEED={seed}")
    rng = random.Random(seed)
    client, oracle, txns, uids = setup_example(thyme, rng)
    # A spine out of time order, with window edges and unknown users.
    spine = probes(rng, txns, uids, 3000)
    frame = pd.DataFrame({
        "uid": [u for u, _ in spine],
        "label_time": pd.to_datetime([t for _, t in spine], unit="us", utc=True),
        "label": [rng.random() < 0.5 for _ in spine],  # not sent (not an input): passed through
    })
    job = f"offline-test-{seed}"
    out = client.query_offline(["UserFeatures.uid"], ["UserFeatures"], frame, timestamp_column="label_time", job=job)
    assert list(out.columns) == [f"UserFeatures.{f}" for f in FEATURES] + ["label_time", "label"]
    assert len(out) == len(spine)
    assert out["label"].tolist() == frame["label"].tolist()
    bad = []
    for i, (uid, t) in enumerate(spine):
        got = row(out, i)
        assert out["label_time"].iloc[i] == pd.Timestamp(t, unit="us", tz="UTC")
        if not same(got, oracle.features(uid, t)):
            bad.append((i, uid, t, got, oracle.features(uid, t)))
    assert not bad, f"{len(bad)} mismatches: {bad[:3]} (THYME_SEED={seed})"

    # The SQL form gives the same rows.
    with psycopg.connect(thyme.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE spine (i BIGINT, uid BIGINT, label_time TIMESTAMPTZ)")
        with conn.cursor() as cur:
            with cur.copy("COPY spine (i, uid, label_time) FROM STDIN") as cp:
                for i, (uid, t) in enumerate(spine):
                    cp.write_row((i, uid, ts_text(t)))
        rows = conn.execute(
            "SELECT s.i, f.* FROM spine s ASOF LEFT JOIN user_features f "
            "MATCH_CONDITION (s.label_time >= f.ts) ON s.uid = f.uid ORDER BY s.i").fetchall()
    assert len(rows) == len(spine)
    for (i, *vals), (uid, t) in zip(rows, spine):
        sql = dict(zip(FEATURES + ["ts"], vals))
        assert sql["ts"] == from_us(t)
        offline = row(out, i)
        assert same(sql, offline), (i, sql, offline)

    # The job's progress record.
    state = client.offline_job(job)
    assert state["state"] == "done", state
    assert state["rows_in"] == state["rows_out"] == state["rows_total"] == len(spine)
    assert state["percent"] == 100.0
    status, listing = thyme.query_http("GET", "/api/v1/jobs")
    assert status == 200 and job in [j["id"] for j in listing["jobs"]]

    # The JSON fallback (no pyarrow on the client) sends only the inputs
    # too, and passes the other columns through in the same way.
    head = frame.iloc[:200]
    js = client._query_offline_json(["UserFeatures.uid"], ["UserFeatures"], head, "label_time", None)
    assert list(js.columns) == [f"UserFeatures.{f}" for f in FEATURES] + ["label_time", "label"]
    assert js["label"].tolist() == head["label"].tolist()
    for i in range(len(head)):
        assert same(row(js, i), row(out, i)), (i, row(js, i), row(out, i))
    with pytest.raises(ValueError, match="name of an output"):
        client.query_offline(["UserFeatures.uid"], ["UserFeatures.country"],
                             head.assign(**{"UserFeatures.country": "x"}), timestamp_column="label_time")

    # Explicit timestamps instead of a column; subsets of outputs.
    out2 = client.query_offline(["UserFeatures.uid"], ["UserFeatures.txn_count_7d"],
                                pd.DataFrame({"UserFeatures.uid": [u for u, _ in spine[:50]]}),
                                timestamps=[ts_text(t) for _, t in spine[:50]])
    assert list(out2.columns) == ["UserFeatures.txn_count_7d", "timestamp"]
    assert out2["UserFeatures.txn_count_7d"].tolist() == out["UserFeatures.txn_count_7d"].iloc[:50].tolist()


def test_query_offline_errors(thyme):
    rng = random.Random(7)
    client, _, _, _ = setup_example(thyme, rng)
    spine = pa.table({"uid": pa.array([1, 2, 3], pa.int64()),
                      "ts": pa.array([T0, T0 + DAY, T0 + 2 * DAY], pa.timestamp("us", tz="UTC"))})
    base = {"inputs": "UserFeatures.uid", "outputs": "UserFeatures", "timestamp_column": "ts"}

    status, _, body = arrow_post(thyme, base, spine)
    assert status == 200
    result = ipc.open_stream(body).read_all()
    assert result.num_rows == 3 and result.column_names[-1] == "ts"
    # The same times as epoch microseconds and as RFC 3339 strings.
    for times in (pa.array([T0, T0 + DAY, T0 + 2 * DAY], pa.int64()),
                  pa.array([ts_text(t) for t in (T0, T0 + DAY, T0 + 2 * DAY)])):
        status, _, body = arrow_post(thyme, base, pa.table({"uid": spine["uid"], "ts": times}))
        assert status == 200, body
        assert ipc.open_stream(body).read_all().equals(result)

    def err(status_want, code, params, table=spine, **kw):
        status, _, body = arrow_post(thyme, params, table, **kw)
        assert status == status_want, (status, body)
        e = pd.read_json(io.BytesIO(body), typ="series")["error"]
        assert e["code"] == code, e
        return e

    e = err(400, "invalid_request", {k: v for k, v in base.items() if k != "timestamp_column"})
    assert e["field"] == "timestamp_column"
    err(404, "unknown_feature", {**base, "outputs": "UserFeatures.nope"})
    err(400, "invalid_request", {**base, "timestamp_column": "when"})
    e = err(400, "missing_inputs", base, spine.select(["ts"]))
    assert "UserFeatures.uid" in e["message"]
    err(400, "invalid_arrow", base, raw=b"this is not arrow")
    err(400, "invalid_arrow", base, raw=b"")
    err(415, "unsupported_media_type", base, content_type="application/json")
    err(400, "invalid_request", {**base, "rows": "many"})
    err(400, "invalid_timestamp", base, pa.table({"uid": [1], "ts": pa.array([1.5])}))

    # A failure inside the stream (a NULL time in the second chunk) ends it;
    # the client reports the job's error.
    n = 70_000
    times = pa.array([T0 + i for i in range(n)], pa.timestamp("us", tz="UTC"))
    times = pa.concat_arrays([times.slice(0, n - 1), pa.array([None], pa.timestamp("us", tz="UTC"))])
    frame = pa.table({"uid": pa.array([i % 7 for i in range(n)], pa.int64()), "ts": times})
    with pytest.raises(ThymeError) as exc:
        client.query_offline(["UserFeatures.uid"], ["UserFeatures"], frame, timestamp_column="ts", job="bad-times")
    assert exc.value.code == "invalid_timestamp", exc.value
    assert f"row {n - 1}" in str(exc.value)
    state = client.offline_job("bad-times")
    assert state["state"] == "failed" and state["error"]["code"] == "invalid_timestamp"
    # The server keeps serving.
    status, _, _ = arrow_post(thyme, base, spine)
    assert status == 200
    with pytest.raises(ThymeError) as exc:
        client.offline_job("no-such-job")
    assert exc.value.status == 404
