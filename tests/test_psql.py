"""psql against the real server: DDL, INSERT, \\copy, AS OF, and catalog commands."""

import os

HERE = os.path.dirname(os.path.abspath(__file__))


def test_psql_script(thyme):
    out = thyme.psql("-A", "-t", "-f", os.path.join(HERE, "psql", "basic.sql")).stdout
    lines = [l for l in out.splitlines() if l.strip()]
    # The script prints labelled results; check each one.
    results = dict(l.split("|", 1) for l in lines if "|" in l and l.split("|", 1)[0].startswith("r_"))
    assert results["r_latest"] == "a|5", out
    assert results["r_as_of"] == "a|1", out
    assert results["r_copied"] == "4", out
    assert results["r_set_as_of"] == "2", out


def test_psql_catalog_commands(thyme):
    thyme.psql("-c", "CREATE TABLE user_stats (uid TEXT PRIMARY KEY, ts TIMESTAMPTZ, n BIGINT)")
    dt = thyme.psql("-c", "\\dt").stdout
    assert "user_stats" in dt, dt
    d = thyme.psql("-c", "\\d user_stats").stdout
    assert "uid" in d and "bigint" in d, d


def test_psql_reports_sqlstate(thyme):
    r = thyme.psql("-v", "VERBOSITY=verbose", "-c", "SELECT * FROM missing", check=False)
    assert r.returncode != 0
    assert "42P01" in r.stderr, r.stderr
