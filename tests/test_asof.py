"""ASOF joins through the real server: against DuckDB's ASOF JOIN on the
same random data, and the seed example's training set (labels joined to
the per-user aggregated dataset) against a brute-force recomputation."""

import os
import random
import sys

import duckdb
import psycopg

from test_featuresets import DAY, FEATURES, T0, probes, same, setup_example

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def ts_text(us):
    import datetime as dt
    return (dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=us)).isoformat()


def from_us(us):
    import datetime as dt
    return dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=us)


def test_asof_join_matches_duckdb(thyme):
    seed = int(os.environ.get("THYME_SEED", random.randrange(1 << 30)))
    print(f"test_asof_join_matches_duckdb: THYME_SEED={seed}")
    rng = random.Random(seed)
    keys = 40
    labels = [(i, rng.randrange(keys) if rng.random() > 0.05 else None, T0 + rng.randrange(100) * DAY // 10)
              for i in range(2000)]
    # Right times distinct per key (DuckDB and Thyme break ties differently).
    facts = []
    for k in range(keys):
        for j, t in enumerate(rng.sample(range(120), rng.randrange(0, 12))):
            facts.append((len(facts), k, T0 + t * DAY // 10 - DAY, rng.randrange(1000)))
    rng.shuffle(facts)
    with psycopg.connect(thyme.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE lbl (id BIGINT, uid BIGINT, ts TIMESTAMPTZ)")
        conn.execute("CREATE TABLE fct (rid BIGINT, uid BIGINT, ts TIMESTAMPTZ, v BIGINT)")
        with conn.cursor() as cur:
            with cur.copy("COPY lbl (id, uid, ts) FROM STDIN") as cp:
                for r in labels:
                    cp.write_row((r[0], r[1], ts_text(r[2])))
            with cur.copy("COPY fct (rid, uid, ts, v) FROM STDIN") as cp:
                for r in facts:
                    cp.write_row((r[0], r[1], ts_text(r[2]), r[3]))
        db = duckdb.connect()
        db.execute("CREATE TABLE lbl (id BIGINT, uid BIGINT, ts TIMESTAMPTZ)")
        db.execute("CREATE TABLE fct (rid BIGINT, uid BIGINT, ts TIMESTAMPTZ, v BIGINT)")
        db.executemany("INSERT INTO lbl VALUES (?, ?, ?::TIMESTAMPTZ)", [(r[0], r[1], ts_text(r[2])) for r in labels])
        db.executemany("INSERT INTO fct VALUES (?, ?, ?::TIMESTAMPTZ, ?)", [(r[0], r[1], ts_text(r[2]), r[3]) for r in facts])
        for strategy in ("hash", "merge"):
            conn.execute(f"SET thyme.asof_strategy = '{strategy}'")
            for op in (">=", ">", "<=", "<"):
                for join in ("ASOF JOIN", "ASOF LEFT JOIN"):
                    sql = (f"SELECT l.id, f.rid, f.v FROM lbl l {join} fct f "
                           f"ON l.uid = f.uid AND l.ts {op} f.ts ORDER BY l.id")
                    got = [tuple(r) for r in conn.execute(sql).fetchall()]
                    want = [tuple(r) for r in db.execute(sql).fetchall()]
                    assert got == want, (strategy, sql, seed, [x for x in zip(got, want) if x[0] != x[1]][:5])
                    assert any(r[1] is not None for r in got), sql
        # The same facts as a keyed dataset (one version per fact), read by
        # seeks, by an in-memory index of its history and by a merge with
        # it: each equals DuckDB's join on the plain table.
        conn.execute("CREATE TABLE fctk (uid BIGINT PRIMARY KEY, ts TIMESTAMPTZ, rid BIGINT, v BIGINT) "
                     "WITH (timestamp = 'ts')")
        with conn.cursor() as cur:
            with cur.copy("COPY fctk (uid, ts, rid, v) FROM STDIN") as cp:
                for r in facts:
                    cp.write_row((r[1], ts_text(r[2]), r[0], r[3]))
        for strategy in ("seek", "hash", "merge"):
            conn.execute(f"SET thyme.asof_strategy = '{strategy}'")
            for op in (">=", ">"):
                for join in ("ASOF JOIN", "ASOF LEFT JOIN"):
                    sql = (f"SELECT l.id, f.rid, f.v FROM lbl l {join} fctk f "
                           f"ON l.uid = f.uid AND l.ts {op} f.ts ORDER BY l.id")
                    plan = "\n".join(r[1] for r in conn.execute("EXPLAIN " + sql).fetchall())
                    operator = {"seek": "AsOfLookupExec", "hash": "AsOfHashJoinExec", "merge": "AsOfJoinExec"}
                    assert f"{operator[strategy]}: " in plan, (strategy, plan)
                    got = [tuple(r) for r in conn.execute(sql).fetchall()]
                    want = [tuple(r) for r in db.execute(sql.replace("fctk", "fct")).fetchall()]
                    assert got == want, (strategy, sql, seed, [x for x in zip(got, want) if x[0] != x[1]][:5])


def test_training_set_from_the_aggregated_dataset_matches_brute_force(thyme):
    seed = int(os.environ.get("THYME_SEED", random.randrange(1 << 30)))
    print(f"test_training_set_from_the_aggregated_dataset_matches_brute_force: THYME_SEED={seed}")
    rng = random.Random(seed)
    client, oracle, txns, uids = setup_example(thyme, rng)
    labels = [(i, uid, t) for i, (uid, t) in enumerate(probes(rng, txns, uids, 300))]
    with psycopg.connect(thyme.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE labels (lid BIGINT PRIMARY KEY, uid BIGINT, ts TIMESTAMPTZ) WITH (timestamp = 'ts')")
        with conn.cursor() as cur:
            with cur.copy("COPY labels (lid, uid, ts) FROM STDIN") as cp:
                for r in labels:
                    cp.write_row((r[0], r[1], ts_text(r[2])))
        by_strategy = {}
        for strategy in ("merge", "hash", "seek"):
            conn.execute(f"SET thyme.asof_strategy = '{strategy}'")
            by_strategy[strategy] = conn.execute(
                "SELECT l.lid, s.txn_count_7d, s.total_7d, s.avg_7d FROM labels l "
                "ASOF LEFT JOIN user_stats s ON l.uid = s.uid AND l.ts >= s.ts ORDER BY l.lid").fetchall()
        conn.execute("RESET thyme.asof_strategy")
        # The featureset view, evaluated at each label's time.
        view_rows = conn.execute(
            "SELECT l.lid, f.* FROM labels l "
            "ASOF LEFT JOIN user_features f MATCH_CONDITION (l.ts >= f.ts) ON l.uid = f.uid "
            "ORDER BY l.lid").fetchall()
        view_cols = [d.name for d in conn.execute(
            "SELECT f.* FROM labels l ASOF JOIN user_features f MATCH_CONDITION (l.ts >= f.ts) "
            "ON l.uid = f.uid LIMIT 0").description]
    assert view_cols == FEATURES + ["ts"], view_cols
    rows = by_strategy["merge"]
    assert rows == by_strategy["seek"]
    assert rows == by_strategy["hash"]
    assert len(rows) == len(labels)
    bad = []
    for (lid, count, total, avg), (_, uid, t) in zip(rows, labels):
        first = min((e["ts"] for e in oracle.txns if e["uid"] == uid), default=None)
        if first is None or first > t:
            want = (None, None, None)  # the user has no aggregate row yet
        else:
            f = oracle.features(uid, t)
            want = (f["txn_count_7d"], f["total_7d"], f["avg_7d"])
        ok = count == want[0] and (total is None) == (want[1] is None) and (
            total is None or abs(total - want[1]) < 1e-6 and abs(avg - want[2]) < 1e-6)
        if not ok:
            bad.append((lid, uid, t, (count, total, avg), want))
    assert not bad, f"{len(bad)} mismatches: {bad[:5]} (THYME_SEED={seed})"
    assert len(view_rows) == len(labels)
    for row, (lid, uid, t) in zip(view_rows, labels):
        got = dict(zip(FEATURES + ["ts"], row[1:]))
        assert got["ts"] == from_us(t), (lid, got["ts"], t)
        if not same(got, oracle.features(uid, t)):
            bad.append(("view", lid, uid, t, got, oracle.features(uid, t)))
    assert not bad, f"{len(bad)} mismatches: {bad[:5]} (THYME_SEED={seed})"
