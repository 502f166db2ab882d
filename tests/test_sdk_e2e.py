"""The Python SDK against the real server: `thyme commit` on the example
feature file, `Client.log` of a DataFrame, and what SQL sees afterwards."""

import os
import re
import shutil
import subprocess
import sys

import pandas as pd
import psycopg
import pytest

from thyme.client import Client, ThymeError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(REPO, "examples", "features.py")


def thyme_cli(*args, check=False):
    exe = shutil.which("thyme", path=os.path.dirname(sys.executable))
    assert exe, "the thyme console script is not installed in this venv (pip install ./python)"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=120, check=check)


def sql(thyme, query):
    with psycopg.connect(thyme.dsn, autocommit=True) as conn:
        return conn.execute(query).fetchall()


def test_commit_log_query_the_example(thyme):
    r = thyme_cli("commit", EXAMPLE, "--url", thyme.control_url, "-m", "first")
    assert r.returncode == 0, r.stderr
    for name in ["Transaction", "UserInfo", "UserStats", "CountryStats"]:
        assert re.search(rf"created\s+dataset {name}\b", r.stdout), r.stdout
    assert re.search(r"created\s+featureset UserFeatures\b", r.stdout), r.stdout

    again = thyme_cli("commit", EXAMPLE, "--url", thyme.control_url)
    assert again.returncode == 0, again.stderr
    assert "created" not in again.stdout and re.search(r"unchanged\s+dataset UserStats", again.stdout), again.stdout

    client = Client(url=thyme.control_url)
    assert {d["name"] for d in client.list_datasets()} == {"Transaction", "UserInfo", "UserStats", "CountryStats"}
    assert [f["name"] for f in client.list_featuresets()] == ["UserFeatures"]
    edges = {(e["from"], e["to"]) for e in client.lineage()["edges"]}
    assert ("Transaction", "UserStats") in edges and ("UserStats", "UserFeatures") in edges

    df = pd.DataFrame({
        "uid": [1, 2, 1, 3, 2],
        "amount": [10.0, 20.5, 30.0, 5.0, 1.25],
        "merchant": ["a", "b", "c", "d", "e"],
        "ts": pd.to_datetime(["2024-01-01T00:00:00Z", "2024-01-01T01:00:00Z", "2024-01-02T00:00:00Z",
                              "2024-01-03T00:00:00Z", "2024-01-04T00:00:00Z"]),
    })
    answers = client.log("main", "Transaction", df, batch_size=2)
    assert len(answers) == 3
    assert sql(thyme, "SELECT uid, amount, merchant FROM transaction ORDER BY ts") == [
        (1, 10.0, "a"), (2, 20.5, "b"), (1, 30.0, "c"), (3, 5.0, "d"), (2, 1.25, "e")]
    newest = client.inspect("Transaction", n=2)
    assert newest["merchant"].tolist() == ["e", "d"] and newest["amount"].tolist() == [1.25, 5.0]
    assert newest["ts"].tolist() == ["2024-01-04T00:00:00Z", "2024-01-03T00:00:00Z"]
    with pytest.raises(ThymeError, match="no committed dataset named Nope"):
        client.inspect("Nope")
    out = thyme.psql("-A", "-t", "-F", "|", "-c", "SELECT uid, amount, merchant FROM transaction ORDER BY ts").stdout
    assert out.split() == ["1|10.0|a", "2|20.5|b", "1|30.0|c", "3|5.0|d", "2|1.25|e"]

    info = pd.DataFrame({"uid": [1, 2], "country": ["DE", "US"],
                         "signup_time": pd.to_datetime(["2023-01-01", "2023-06-01"], utc=True),
                         "ts": pd.to_datetime(["2024-01-01", "2024-01-01"], utc=True)})
    client.log("main", "UserInfo", info)
    assert sql(thyme, "SELECT uid, country FROM user_info ORDER BY uid") == [(1, "DE"), (2, "US")]

    # A bad row: a clear error naming row, field and value; nothing stored.
    bad = df.copy()
    bad["merchant"] = bad["merchant"].astype(object)
    bad.loc[3, "merchant"] = None
    with pytest.raises(ThymeError, match=r"row 3, field merchant") as err:
        client.log("main", "Transaction", bad)
    assert err.value.status == 400
    assert sql(thyme, "SELECT count(*) FROM transaction") == [(5,)]


def test_cli_refuses_a_change_without_a_version_bump(thyme, tmp_path):
    assert thyme_cli("commit", EXAMPLE, "--url", thyme.control_url).returncode == 0
    text = open(EXAMPLE).read()
    changed = text.replace("    merchant: str\n", "    merchant: str\n    currency: str\n", 1)
    assert changed != text
    path = tmp_path / "features_v2.py"
    path.write_text(changed)
    r = thyme_cli("commit", str(path), "--url", thyme.control_url)
    assert r.returncode == 1
    assert "dataset Transaction changed without a version bump: field currency was added" in r.stderr, r.stderr

    bumped = changed.replace('@source(webhook.endpoint("Transaction"), disorder="14d", cdc="append")\n@dataset\n',
                             '@source(webhook.endpoint("Transaction"), disorder="14d", cdc="append")\n@dataset(version=2)\n', 1)
    assert bumped != changed
    path.write_text(bumped)
    r = thyme_cli("commit", str(path), "--url", thyme.control_url)
    assert r.returncode == 0, r.stderr
    assert re.search(r"updated\s+dataset Transaction", r.stdout), r.stdout
    cols = [c for (c,) in sql(thyme, "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'transaction' ORDER BY ordinal_position")]
    assert cols == ["uid", "amount", "merchant", "currency", "ts"]


def test_cli_local_validation_needs_no_server(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(open(EXAMPLE).read().replace("    uid: int = field(key=True)\n    txn_count_7d: int\n",
                                                 "    uid: int = field(key=True)\n    txn_count_7d: float\n", 1))
    r = thyme_cli("commit", str(bad), "--url", "http://127.0.0.1:9")
    assert r.returncode == 1
    assert "output field txn_count_7d has type int but dataset UserStats declares float" in r.stderr, r.stderr
