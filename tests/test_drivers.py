"""Python drivers: psycopg 3 (server-side binding: the extended protocol) and
psycopg2 (client-side binding, implicit transactions)."""

from datetime import datetime, timezone

import psycopg
import psycopg2


def dt(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def test_psycopg3_extended_protocol(thyme):
    with psycopg.connect(thyme.dsn, autocommit=True) as conn:
        cur = conn.cursor()
        cur.execute("CREATE TABLE user_stats (uid TEXT PRIMARY KEY, ts TIMESTAMPTZ, n BIGINT, score DOUBLE PRECISION)")
        cur.executemany(
            "INSERT INTO user_stats VALUES (%s, %s, %s, %s)",
            [
                ("a", dt("2024-01-01T00:00:00Z"), 1, 0.5),
                ("a", dt("2024-01-03T00:00:00Z"), 3, 1.5),
                ("b", dt("2024-01-02T00:00:00Z"), 2, 2.5),
            ],
        )
        cur.execute("SELECT n FROM user_stats WHERE uid = %s", ("a",))
        assert cur.fetchall() == [(3,)]
        for at, want in [
            ("2023-12-31T00:00:00Z", []),
            ("2024-01-01T00:00:00Z", [(1,)]),
            ("2024-01-02T12:00:00Z", [(1,)]),
            ("2024-01-03T00:00:00Z", [(3,)]),
        ]:
            cur.execute("SELECT n FROM user_stats WHERE uid = %s AS OF %s", ("a", dt(at)))
            assert cur.fetchall() == want, at
        cur.execute("SELECT uid, ts, score FROM user_stats ORDER BY uid")
        rows = cur.fetchall()
        assert rows[0] == ("a", dt("2024-01-03T00:00:00Z"), 1.5)
        assert rows[1][0] == "b"
        # Prepared explicitly and reused.
        cur.execute("SELECT count(*) FROM user_stats AS OF %s", (dt("2024-01-02T00:00:00Z"),), prepare=True)
        assert cur.fetchone() == (2,)
        cur.execute("SELECT count(*) FROM user_stats AS OF %s", (dt("2024-01-01T00:00:00Z"),), prepare=True)
        assert cur.fetchone() == (1,)
        # COPY through psycopg.
        cur.execute("CREATE TABLE ev (uid TEXT, ts TIMESTAMPTZ, amount DOUBLE PRECISION)")
        with cur.copy("COPY ev FROM STDIN") as copy:
            for i in range(100):
                copy.write_row((f"u{i % 7}", dt("2024-01-01T00:00:00Z"), float(i)))
        cur.execute("SELECT count(*), sum(amount) FROM ev")
        assert cur.fetchone() == (100, 4950.0)
        # Errors carry SQLSTATE; the connection survives.
        try:
            cur.execute("SELECT * FROM nope")
            raise AssertionError("expected an error")
        except psycopg.errors.UndefinedTable:
            pass
        try:
            cur.execute("INSERT INTO user_stats VALUES (%s, %s, %s, %s)", ("c", "not a time", 1, 1.0))
            raise AssertionError("expected an error")
        except psycopg.errors.InvalidDatetimeFormat as e:
            assert '"ts"' in str(e), str(e)
        cur.execute("SELECT count(*) FROM user_stats")
        assert cur.fetchone() == (2,)


def test_psycopg2_client_side_binding(thyme):
    conn = psycopg2.connect(thyme.dsn)  # not autocommit: psycopg2 sends BEGIN
    cur = conn.cursor()
    cur.execute("CREATE TABLE s (k BIGINT PRIMARY KEY, ts TIMESTAMPTZ, v TEXT)")
    cur.executemany(
        "INSERT INTO s VALUES (%s, %s, %s)",
        [(1, dt("2024-01-01T00:00:00Z"), "x"), (2, dt("2024-01-02T00:00:00Z"), None), (1, dt("2024-01-05T00:00:00Z"), "y")],
    )
    conn.commit()
    cur.execute("SELECT k, v FROM s ORDER BY k")
    assert cur.fetchall() == [(1, "y"), (2, None)]
    cur.execute("SELECT v FROM s WHERE k = %s AS OF %s", (1, dt("2024-01-04T00:00:00Z")))
    assert cur.fetchall() == [("x",)]
    cur.execute("SELECT version()")
    assert cur.fetchone()[0].startswith("PostgreSQL 15")
    conn.rollback()
    try:
        cur.execute("SELEC 1")
        raise AssertionError("expected a syntax error")
    except psycopg2.errors.SyntaxError:
        conn.rollback()
    cur.execute("SELECT count(*) FROM s")
    assert cur.fetchone() == (2,)
    conn.close()
