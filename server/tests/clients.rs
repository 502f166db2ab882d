//! The extended query protocol through a real driver (tokio-postgres):
//! prepared statements with parameters, `AS OF $1`, `COPY FROM STDIN`, and
//! a malformed message that closes only its own connection.

mod common;

use std::io::Write;

use chrono::{DateTime, Utc};
use futures::SinkExt;

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_and_as_of_placeholders() {
    let server = common::Server::start();
    let c = server.connect().await;
    c.batch_execute(
        "CREATE TABLE us (uid TEXT PRIMARY KEY, ts TIMESTAMPTZ, n BIGINT, score DOUBLE PRECISION)",
    )
    .await
    .unwrap();
    let ins = c
        .prepare("INSERT INTO us VALUES ($1, $2, $3, $4)")
        .await
        .unwrap();
    c.execute(&ins, &[&"a", &t("2024-01-01T00:00:00Z"), &1i64, &0.5f64])
        .await
        .unwrap();
    c.execute(&ins, &[&"a", &t("2024-01-03T00:00:00Z"), &3i64, &1.5f64])
        .await
        .unwrap();
    let n = c
        .execute(&ins, &[&"b", &t("2024-01-02T00:00:00Z"), &2i64, &2.5f64])
        .await
        .unwrap();
    assert_eq!(n, 1);

    let q = c
        .prepare("SELECT n, score FROM us WHERE uid = $1")
        .await
        .unwrap();
    let row = c.query_one(&q, &[&"a"]).await.unwrap();
    assert_eq!(row.get::<_, i64>(0), 3);
    assert_eq!(row.get::<_, f64>(1), 1.5);

    let q = c
        .prepare("SELECT n FROM us WHERE uid = $1 AS OF $2")
        .await
        .unwrap();
    for (at, want) in [
        ("2023-12-31T00:00:00Z", None),
        ("2024-01-01T00:00:00Z", Some(1i64)),
        ("2024-01-02T23:59:59Z", Some(1)),
        ("2024-01-03T00:00:00Z", Some(3)),
    ] {
        let rows = c.query(&q, &[&"a", &t(at)]).await.unwrap();
        assert_eq!(rows.first().map(|r| r.get::<_, i64>(0)), want, "as of {at}");
    }
    // FOR SYSTEM_TIME AS OF with a parameter.
    let rows = c
        .query(
            "SELECT uid FROM us FOR SYSTEM_TIME AS OF $1 ORDER BY uid",
            &[&t("2024-01-02T00:00:00Z")],
        )
        .await
        .unwrap();
    let uids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(uids, vec!["a", "b"]);
    // Timestamps come back as timestamptz.
    let ts: DateTime<Utc> = c
        .query_one("SELECT ts FROM us WHERE uid = 'b'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(ts, t("2024-01-02T00:00:00Z"));
    // Errors carry SQLSTATE in the extended protocol too.
    let err = c.prepare("SELECT * FROM nowhere").await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42P01");
    let err = c.query("SELECT n FROM us AS OF $1", &[&"garbage"]).await;
    assert!(err.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_from_stdin_text_and_csv() {
    let server = common::Server::start();
    let c = server.connect().await;
    c.batch_execute(
        "CREATE TABLE ev (uid TEXT, ts TIMESTAMPTZ, amount DOUBLE PRECISION, note TEXT)",
    )
    .await
    .unwrap();
    let sink = c.copy_in("COPY ev FROM STDIN").await.unwrap();
    futures::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(
        b"a\t2024-01-01 00:00:00+00\t1.5\thello\\tworld\nb\t2024-01-02T00:00:00Z\t2\t\\N\n",
    ))
    .await
    .unwrap();
    let n = sink.finish().await.unwrap();
    assert_eq!(n, 2);

    let sink = c
        .copy_in("COPY ev (uid, ts, amount) FROM STDIN WITH (FORMAT csv, HEADER true)")
        .await
        .unwrap();
    futures::pin_mut!(sink);
    let mut payload = Vec::new();
    writeln!(payload, "uid,ts,amount").unwrap();
    for i in 0..1000 {
        writeln!(payload, "\"u{i}\",2024-02-01T00:00:00Z,{i}").unwrap();
    }
    sink.send(bytes::Bytes::from(payload)).await.unwrap();
    assert_eq!(sink.finish().await.unwrap(), 1000);

    let row = c
        .query_one("SELECT count(*), sum(amount) FROM ev", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1002);
    assert_eq!(row.get::<_, f64>(1), 3.5 + 499_500.0);
    let note: String = c
        .query_one("SELECT note FROM ev WHERE uid = 'a'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(note, "hello\tworld");

    // A bad row fails the whole COPY, naming the column; nothing is stored.
    let sink = c
        .copy_in("COPY ev FROM STDIN WITH (FORMAT csv)")
        .await
        .unwrap();
    futures::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(
        b"x,2024-03-01T00:00:00Z,1,ok\ny,2024-03-01T00:00:00Z,notanumber,bad\n",
    ))
    .await
    .unwrap();
    let err = sink.finish().await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "22P02", "{err:?}");
    assert!(err.as_db_error().unwrap().message().contains("amount"));
    let n: i64 = c
        .query_one("SELECT count(*) FROM ev", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1002);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_message_closes_only_that_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = common::Server::start();
    let good = server.connect().await;
    good.batch_execute("CREATE TABLE k (id BIGINT PRIMARY KEY, ts TIMESTAMPTZ)")
        .await
        .unwrap();

    // A startup packet claiming a 2 GB length, then garbage.
    let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", server.pg_port))
        .await
        .unwrap();
    raw.write_all(&[0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0])
        .await
        .unwrap();
    raw.write_all(&[0xAB; 64]).await.unwrap();
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match raw.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => continue,
            }
        }
    })
    .await
    .unwrap_or(false);
    assert!(
        closed,
        "the server must close a connection that sends a malformed message"
    );

    // Other connections keep working.
    let n: i64 = good
        .query_one("SELECT count(*) FROM k", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    let fresh = server.connect().await;
    fresh.batch_execute("SELECT 1").await.unwrap();
}

/// Point lookups through the fast path, the general DataFusion path and
/// `FOR SYSTEM_TIME AS OF`, against a brute-force oracle over random
/// versions (out-of-order times, equal times, deletes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn point_lookups_match_the_oracle() {
    use rand::Rng;
    let (seed, mut rng) = common::seeded_rng("point lookups");
    let server = common::Server::start();
    let c = server.connect().await;
    c.batch_execute("CREATE TABLE s (k BIGINT, ts TIMESTAMPTZ, v BIGINT, PRIMARY KEY (k))")
        .await
        .unwrap();
    let base = t("2024-01-01T00:00:00Z").timestamp_micros();
    let hour = 3_600_000_000i64;
    // (key, time, Some(value) | None for a delete), in write order.
    let mut writes: Vec<(i64, i64, Option<i64>)> = Vec::new();
    fn oracle(writes: &[(i64, i64, Option<i64>)], k: i64, at: i64) -> Option<i64> {
        // The newest time <= at; equal times: the later write.
        let mut best: Option<(i64, usize, Option<i64>)> = None;
        for (i, w) in writes.iter().enumerate() {
            if w.0 == k && w.1 <= at && best.is_none_or(|b| (w.1, i) >= (b.0, b.1)) {
                best = Some((w.1, i, w.2));
            }
        }
        best.and_then(|b| b.2)
    }
    let ins = c
        .prepare("INSERT INTO s VALUES ($1, $2, $3)")
        .await
        .unwrap();
    let del = c
        .prepare("DELETE FROM s WHERE k = $1 AS OF $2")
        .await
        .unwrap();
    for _ in 0..300 {
        let k = rng.random_range(0..12i64);
        let at = base + rng.random_range(0..48) * hour;
        let when = DateTime::from_timestamp_micros(at).unwrap();
        if rng.random_bool(0.15) {
            // A delete removes the key's row current at that time, if any.
            let n = c.execute(&del, &[&k, &when]).await.unwrap();
            let existed = oracle(&writes, k, at).is_some();
            assert_eq!(n, existed as u64, "DELETE count for k={k} at {when}");
            if existed {
                writes.push((k, at, None));
            }
        } else {
            let v: i64 = rng.random_range(-100..100);
            c.execute(&ins, &[&k, &when, &v]).await.unwrap();
            writes.push((k, at, Some(v)));
        }
    }
    let oracle = |k: i64, at: i64| oracle(&writes, k, at);
    let fast = c
        .prepare("SELECT v FROM s WHERE k = $1 AS OF $2")
        .await
        .unwrap();
    let general = c
        .prepare("SELECT v FROM s WHERE k = $1 AND ts IS NOT NULL AS OF $2")
        .await
        .unwrap();
    let pinned = c
        .prepare("SELECT v FROM s FOR SYSTEM_TIME AS OF $2 WHERE k = $1")
        .await
        .unwrap();
    let mut mismatches = 0;
    for _ in 0..300 {
        let k = rng.random_range(0..13i64);
        let at = base
            + rng.random_range(-2..50) * hour
            + if rng.random_bool(0.5) {
                0
            } else {
                rng.random_range(-1..2)
            };
        let when = DateTime::from_timestamp_micros(at).unwrap();
        let want = oracle(k, at);
        for (name, stmt) in [("fast", &fast), ("general", &general), ("pinned", &pinned)] {
            let got = c
                .query(stmt, &[&k, &when])
                .await
                .unwrap()
                .first()
                .map(|r| r.get::<_, i64>(0));
            if got != want {
                mismatches += 1;
                eprintln!("{name}: k={k} at={when}: got {got:?}, want {want:?}");
            }
        }
    }
    assert_eq!(mismatches, 0, "replay with THYME_SEED={seed}");
}

/// The extended protocol at the message level, as Postgres answers it:
/// `Describe` of a statement gives its parameter types then a
/// `RowDescription` (queries) or `NoData` (commands); a prepared point
/// lookup's Bind / Describe / Execute / Sync gets BindComplete,
/// RowDescription, DataRow, CommandComplete, ReadyForQuery; a portal that
/// has run once gives no more rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_messages() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = common::Server::start();
    let c = server.connect().await;
    c.batch_execute(
        "CREATE TABLE kv (k BIGINT PRIMARY KEY, ts TIMESTAMPTZ, v TEXT); \
         INSERT INTO kv VALUES (1, '2024-01-01T00:00:00Z', 'one')",
    )
    .await
    .unwrap();

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    }
    fn cstr(s: &str) -> Vec<u8> {
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        b
    }
    let parse = |name: &str, sql: &str| msg(b'P', &[cstr(name), cstr(sql), vec![0, 0]].concat());
    let describe = |kind: u8, name: &str| msg(b'D', &[vec![kind], cstr(name)].concat());
    let sync = msg(b'S', &[]);
    // Bind portal `portal` of statement `stmt` with one text parameter.
    let bind = |portal: &str, stmt: &str, param: &str| {
        let mut b = [cstr(portal), cstr(stmt)].concat();
        b.extend_from_slice(&[0, 0, 0, 1]);
        b.extend_from_slice(&(param.len() as i32).to_be_bytes());
        b.extend_from_slice(param.as_bytes());
        b.extend_from_slice(&[0, 0]);
        msg(b'B', &b)
    };
    let execute = |portal: &str| msg(b'E', &[cstr(portal), vec![0, 0, 0, 0]].concat());

    let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", server.pg_port))
        .await
        .unwrap();
    let mut startup = vec![0, 3, 0, 0];
    startup.extend_from_slice(
        &[
            cstr("user"),
            cstr("thyme"),
            cstr("database"),
            cstr("thyme"),
            vec![0],
        ]
        .concat(),
    );
    let mut packet = ((startup.len() + 4) as i32).to_be_bytes().to_vec();
    packet.extend_from_slice(&startup);
    raw.write_all(&packet).await.unwrap();

    // Read messages up to and including ReadyForQuery; return their tags
    // and the bodies.
    async fn until_ready(raw: &mut tokio::net::TcpStream) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        loop {
            let mut head = [0u8; 5];
            tokio::time::timeout(
                std::time::Duration::from_secs(10),
                raw.read_exact(&mut head),
            )
            .await
            .expect("the server answers")
            .unwrap();
            let len = i32::from_be_bytes(head[1..5].try_into().unwrap()) as usize - 4;
            let mut body = vec![0u8; len];
            raw.read_exact(&mut body).await.unwrap();
            out.push((head[0], body));
            if head[0] == b'Z' {
                return out;
            }
        }
    }
    let tags = |m: &[(u8, Vec<u8>)]| m.iter().map(|(t, _)| *t as char).collect::<String>();
    let startup_reply = until_ready(&mut raw).await;
    assert_eq!(startup_reply[0].0, b'R', "authentication first");
    // Send the messages in one write; read the answer up to ReadyForQuery.
    async fn round_trip(
        raw: &mut tokio::net::TcpStream,
        messages: &[Vec<u8>],
    ) -> Vec<(u8, Vec<u8>)> {
        raw.write_all(&messages.concat()).await.unwrap();
        until_ready(raw).await
    }

    // A query: parameters, then its columns.
    let q = parse("q", "SELECT v FROM kv WHERE k = $1");
    let reply = round_trip(&mut raw, &[q, describe(b'S', "q"), sync.clone()]).await;
    assert_eq!(tags(&reply), "1tTZ");
    // A command: parameters, then NoData.
    let i = parse("i", "INSERT INTO kv VALUES ($1, $2, $3)");
    let reply = round_trip(&mut raw, &[i, describe(b'S', "i"), sync.clone()]).await;
    assert_eq!(tags(&reply), "1tnZ");
    assert_eq!(&reply[1].1[..2], &[0, 3], "three parameters");

    // A point lookup round trip, as pgbench -M prepared sends it.
    let lookup = [
        bind("", "q", "1"),
        describe(b'P', ""),
        execute(""),
        sync.clone(),
    ];
    let reply = round_trip(&mut raw, &lookup).await;
    assert_eq!(tags(&reply), "2TDCZ");
    assert!(reply[2].1.ends_with(b"one"), "the row's value");
    assert_eq!(reply[3].1, cstr("SELECT 1"));
    // An unknown key: no row.
    let reply = round_trip(&mut raw, &[bind("", "q", "2"), execute(""), sync.clone()]).await;
    assert_eq!(tags(&reply), "2CZ");
    // A named portal executed twice in one transaction: the second
    // execution returns no more rows.
    round_trip(&mut raw, &[msg(b'Q', &cstr("BEGIN"))]).await;
    let twice = [bind("p", "q", "1"), execute("p"), execute("p"), sync];
    let reply = round_trip(&mut raw, &twice).await;
    assert_eq!(tags(&reply), "2DCCZ");
    assert_eq!(reply[3].1, cstr("SELECT 0"));
}

/// SCRAM-SHA-256 through tokio-postgres (its own SCRAM client, not
/// libpq's): the SQLSTATE of a wrong password, an unknown role and a
/// missing privilege, which libpq-based drivers do not expose at connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_login_sqlstates() {
    use tokio_postgres::error::SqlState;
    let server = common::Server::start_with(
        &["--superuser", "admin"],
        &[("THYME_SUPERUSER_PASSWORD", "top-secret")],
    );
    let dsn = |user: &str, pw: &str| {
        format!(
            "host=127.0.0.1 port={} dbname=thyme user={user} password='{pw}'",
            server.pg_port
        )
    };
    let connect = |s: String| async move {
        let (c, conn) = tokio_postgres::connect(&s, tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok::<_, tokio_postgres::Error>(c)
    };
    for (user, pw) in [("admin", "wrong"), ("nobody", "x"), ("admin", "x y")] {
        let Err(e) = connect(dsn(user, pw)).await else {
            panic!("{user}/{pw} was let in");
        };
        assert_eq!(
            e.code(),
            Some(&SqlState::INVALID_PASSWORD),
            "{user}/{pw}: {e:?}"
        );
    }
    let admin = connect(dsn("admin", "top-secret")).await.unwrap();
    let who: String = admin
        .query_one("SELECT current_user", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, "admin");
    admin
        .batch_execute(
            "CREATE TABLE t (k BIGINT PRIMARY KEY, ts TIMESTAMPTZ, v TEXT);
             CREATE ROLE r LOGIN PASSWORD 'r-pw'",
        )
        .await
        .unwrap();
    let r = connect(dsn("r", "r-pw")).await.unwrap();
    let e = r.query("SELECT * FROM t", &[]).await.unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{e:?}");
    // A prepared statement is checked again at each execution.
    admin.batch_execute("GRANT SELECT ON t TO r").await.unwrap();
    let stmt = r.prepare("SELECT count(*) FROM t").await.unwrap();
    r.query_one(&stmt, &[]).await.unwrap();
    admin
        .batch_execute("REVOKE SELECT ON t FROM r")
        .await
        .unwrap();
    let e = r.query_one(&stmt, &[]).await.unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{e:?}");
}
