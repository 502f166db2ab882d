"""SQLAlchemy (psycopg 3 and psycopg2 dialects) and pandas.read_sql."""

from datetime import datetime, timezone

import pandas as pd
import sqlalchemy as sa


def test_sqlalchemy_and_pandas(thyme):
    for driver in ("psycopg", "psycopg2"):
        engine = sa.create_engine(f"postgresql+{driver}://thyme@127.0.0.1:{thyme.pg_port}/thyme")
        table = f"scores_{driver}"
        with engine.connect() as conn:
            conn.execute(sa.text(f"CREATE TABLE {table} (uid TEXT PRIMARY KEY, ts TIMESTAMPTZ, score DOUBLE PRECISION)"))
            conn.execute(
                sa.text(f"INSERT INTO {table} VALUES (:uid, :ts, :score)"),
                [
                    {"uid": "a", "ts": datetime(2024, 1, 1, tzinfo=timezone.utc), "score": 1.0},
                    {"uid": "a", "ts": datetime(2024, 1, 3, tzinfo=timezone.utc), "score": 3.0},
                    {"uid": "b", "ts": datetime(2024, 1, 2, tzinfo=timezone.utc), "score": 2.0},
                ],
            )
            conn.commit()
            rows = conn.execute(sa.text(f"SELECT uid, score FROM {table} ORDER BY uid")).all()
            assert [tuple(r) for r in rows] == [("a", 3.0), ("b", 2.0)]
            rows = conn.execute(
                sa.text(f"SELECT uid, score FROM {table} ORDER BY uid AS OF :t"),
                {"t": datetime(2024, 1, 2, 12, tzinfo=timezone.utc)},
            ).all()
            assert [tuple(r) for r in rows] == [("a", 1.0), ("b", 2.0)]
        df = pd.read_sql(f"SELECT uid, ts, score FROM {table} ORDER BY uid", engine)
        assert list(df["uid"]) == ["a", "b"]
        assert list(df["score"]) == [3.0, 2.0]
        assert str(df["ts"].dt.tz) == "UTC"
        engine.dispose()
