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


def test_transactions_with_drivers(thyme):
    """psycopg 3 without autocommit (its default): commit applies every
    statement, rollback none; COPY inside a block is rolled back too; an
    error while rows stream aborts the block (25P02 until rollback)."""
    with psycopg.connect(thyme.dsn, autocommit=True) as admin:
        admin.execute("CREATE TABLE tx (k BIGINT PRIMARY KEY, ts TIMESTAMPTZ, v BIGINT)")
        admin.execute("CREATE TABLE other_tx (k BIGINT PRIMARY KEY, ts TIMESTAMPTZ, v BIGINT)")
        admin.execute("INSERT INTO other_tx VALUES (1, '2024-01-01T00:00:00Z', 0)")

    def count(where="true"):
        with psycopg.connect(thyme.dsn, autocommit=True) as c:
            return c.execute(f"SELECT count(*) FROM tx WHERE {where}").fetchone()[0]

    conn = psycopg.connect(thyme.dsn)
    cur = conn.cursor()
    cur.executemany(
        "INSERT INTO tx VALUES (%s, %s, %s)",
        [(i, dt("2024-01-01T00:00:00Z"), i) for i in range(50)],
    )
    with cur.copy("COPY tx (k, ts, v) FROM STDIN") as cp:
        for i in range(50, 80):
            cp.write_row((i, "2024-01-01T00:00:00Z", i))
    assert count() == 0  # nothing visible before COMMIT
    conn.commit()
    assert count() == 80

    cur.execute("INSERT INTO tx VALUES (100, '2024-01-01T00:00:00Z', 1)")
    with cur.copy("COPY tx (k, ts, v) FROM STDIN") as cp:
        cp.write_row((101, "2024-01-01T00:00:00Z", 1))
    conn.rollback()
    assert count("k >= 100") == 0

    # A runtime error in a query of the block (division by zero while rows
    # are produced) aborts it.
    cur.execute("INSERT INTO tx VALUES (200, '2024-01-01T00:00:00Z', 1)")
    try:
        cur.execute("SELECT 1 / (v - v) FROM other_tx")
        cur.fetchall()
        raise AssertionError("expected division by zero")
    except psycopg.errors.DivisionByZero:
        pass
    try:
        cur.execute("INSERT INTO tx VALUES (201, '2024-01-01T00:00:00Z', 1)")
        raise AssertionError("expected 25P02")
    except psycopg.errors.InFailedSqlTransaction:
        pass
    conn.rollback()
    assert count("k >= 200") == 0
    conn.close()

    # psycopg2: the same through client-side binding.
    conn2 = psycopg2.connect(thyme.dsn)
    c2 = conn2.cursor()
    c2.execute("INSERT INTO tx VALUES (300, '2024-01-01T00:00:00Z', 1)")
    c2.execute("INSERT INTO tx VALUES (301, '2024-01-01T00:00:00Z', 1)")
    try:
        c2.execute("SELECT count(*) FROM tx")
        raise AssertionError("expected a refused read")
    except psycopg2.errors.FeatureNotSupported as e:
        assert "COMMIT" in str(e)
    conn2.rollback()
    c2.execute("INSERT INTO tx VALUES (302, '2024-01-01T00:00:00Z', 1)")
    conn2.commit()
    assert count("k >= 300") == 1
    conn2.close()
