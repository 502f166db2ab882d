"""The HTTP client's value encoding and the ``thyme commit`` command line's
local behaviour (dry runs, file, import and definition errors, an
unreachable server). Against the real server: ``tests/test_sdk_e2e.py``."""

import io
import json
import math
import os

import pandas as pd
import pytest

from thyme import cli
from thyme.client import Client, ThymeError, columns_json


EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "examples", "features.py")


def unused_url():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


# ---------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------


def test_columns_json_from_dataframe():
    df = pd.DataFrame({
        "uid": [1, 2, 3],
        "amount": [1.5, math.nan, 3.0],
        "name": ["a", None, "c"],
        "ts": pd.to_datetime(["2024-01-01T00:00:00", None, "2024-01-03T12:30:00.250"], format="ISO8601"),
        "tz": pd.to_datetime(["2024-01-01T01:00:00+01:00"] * 3),
        "tags": [["x"], [], None],
    })
    assert columns_json(df) == {
        "uid": [1, 2, 3],
        "amount": [1.5, None, 3.0],
        "name": ["a", None, "c"],
        "ts": ["2024-01-01T00:00:00Z", None, "2024-01-03T12:30:00.250000Z"],
        "tz": ["2024-01-01T00:00:00Z"] * 3,
        "tags": [["x"], [], None],
    }


def test_columns_json_from_dict_and_rows():
    import datetime as dt
    from decimal import Decimal

    assert columns_json({"a": [1, None], "d": [Decimal("1.25"), dt.date(2024, 1, 2)]}) == {
        "a": [1, None], "d": ["1.25", "2024-01-02"]}
    assert columns_json([{"a": 1}, {"a": 2, "b": "x"}]) == {"a": [1, 2], "b": [None, "x"]}
    with pytest.raises(ValueError, match="column 'b' has 1 values, the first column has 2"):
        columns_json({"a": [1, 2], "b": [1]})


# ---------------------------------------------------------------------------
# Client
# ---------------------------------------------------------------------------


def test_unreachable_server():
    with pytest.raises(ThymeError, match="cannot reach") as info:
        Client(url=unused_url(), timeout=5).list_datasets()
    assert info.value.code == "unreachable"


# ---------------------------------------------------------------------------
# thyme commit
# ---------------------------------------------------------------------------


def run_cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_cli_dry_run_prints_the_payload():
    code, out, err = run_cli("commit", EXAMPLE, "--dry-run", "-m", "hello")
    assert code == 0, err
    p = json.loads(out)
    assert p["message"] == "hello"
    assert {d["name"] for d in p["datasets"]} == {"Transaction", "UserInfo", "UserStats", "CountryStats"}
    assert [f["name"] for f in p["featuresets"]] == ["UserFeatures"]


def test_cli_unreachable():
    code, _, err = run_cli("commit", EXAMPLE, "--url", unused_url())
    assert code == 1 and "cannot reach" in err and "thyme serve" in err


def test_cli_file_not_found():
    code, _, err = run_cli("commit", "/nonexistent/features.py")
    assert code == 1 and err.strip() == "error: file not found: /nonexistent/features.py"


def test_cli_definition_error_names_the_line(tmp_path):
    bad = tmp_path / "bad_features.py"
    bad.write_text(
        "from datetime import datetime\n"
        "from thyme.datasets import dataset\n"
        "\n"
        "@dataset\n"
        "class Broken:\n"
        "    ids: set\n"
        "    ts: datetime\n"
    )
    code, _, err = run_cli("commit", str(bad), "--dry-run")
    assert code == 1
    assert f"{bad}:4: Broken.ids: unsupported type set" in err


def test_cli_import_error(tmp_path):
    bad = tmp_path / "broken_import.py"
    bad.write_text("import no_such_module_for_thyme\n")
    code, _, err = run_cli("commit", str(bad), "--dry-run")
    assert code == 1
    assert "ModuleNotFoundError" in err and f"{bad}:1" in err


def test_cli_syntax_error(tmp_path):
    bad = tmp_path / "syntax.py"
    bad.write_text("def broken(:\n")
    code, _, err = run_cli("commit", str(bad), "--dry-run")
    assert code == 1 and f"{bad}:1: syntax error" in err


def test_cli_nothing_defined(tmp_path):
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    code, _, err = run_cli("commit", str(empty), "--dry-run")
    assert code == 1 and "defines no datasets or featuresets" in err
