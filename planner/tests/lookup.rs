//! Which statements take the point-lookup fast path (the results of both
//! paths are compared in `server/tests/clients.rs` and `sql/keyed.slt`).

use thyme_planner::Engine;

#[tokio::test]
async fn only_complete_key_lookups_take_the_fast_path() {
    let dir = tempfile::tempdir().unwrap();
    let store = thyme_storage::open_embedded(dir.path(), Default::default()).unwrap();
    let engine = Engine::new(store, |_| Ok(())).unwrap();
    let mut session = engine.session();
    for sql in [
        "CREATE TABLE t (a BIGINT, b TEXT, ts TIMESTAMPTZ, v TEXT, PRIMARY KEY (a, b))",
        "CREATE TABLE e (a BIGINT, ts TIMESTAMPTZ)",
    ] {
        let p = session
            .prepare(engine.parse(sql).unwrap().remove(0))
            .await
            .unwrap();
        session.execute(&p, None).await.unwrap();
    }
    let cases = [
        ("SELECT * FROM t WHERE a = $1 AND b = $2", true),
        ("SELECT v FROM t WHERE b = 'x' AND a = 1 AS OF $1", true),
        (
            "SELECT v, a FROM t WHERE a = CAST($1 AS BIGINT) AND b = $2",
            true,
        ),
        ("SELECT v FROM t WHERE a = 1", false),
        ("SELECT v FROM t WHERE a = 1 AND b = 'x' AND v = 'y'", false),
        ("SELECT upper(v) FROM t WHERE a = 1 AND b = 'x'", false),
        ("SELECT v FROM t x WHERE a = 1 AND b = 'x'", false),
        ("SELECT v FROM history.t WHERE a = 1 AND b = 'x'", false),
        (
            "SELECT v FROM t FOR SYSTEM_TIME AS OF '2024-01-01' WHERE a = 1 AND b = 'x'",
            false,
        ),
        ("SELECT * FROM e WHERE a = 1", false),
        ("SELECT v FROM t WHERE a = 1 OR b = 'x'", false),
    ];
    for (sql, fast) in cases {
        let p = session
            .prepare(engine.parse(sql).unwrap().remove(0))
            .await
            .unwrap();
        assert_eq!(p.is_point_lookup(), fast, "{sql}");
    }
}
