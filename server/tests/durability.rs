//! Durability and process behaviour: writes survive `kill -9`; a second
//! server cannot open the same data directory; SIGTERM stops cleanly.

mod common;

use std::collections::BTreeMap;

use rand::Rng;

const DAY: i64 = 86_400_000_000;

fn ts_text(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_survive_kill_9() {
    let (seed, mut rng) = common::seeded_rng("durability");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let base = 1_704_067_200_000_000i64; // 2024-01-01

    // Model: every version written, in write order.
    let mut versions: Vec<(String, i64, i64)> = Vec::new();
    let mut events: Vec<(String, i64, i64)> = Vec::new();
    {
        let mut server = common::Server::start_on(&data);
        let c = server.connect().await;
        c.batch_execute(
            "CREATE TABLE s (k TEXT PRIMARY KEY, ts TIMESTAMPTZ, v BIGINT);
             CREATE TABLE e (k TEXT, ts TIMESTAMPTZ, v BIGINT);",
        )
        .await
        .unwrap();
        for _ in 0..40 {
            let mut values = Vec::new();
            let mut evalues = Vec::new();
            for _ in 0..rng.random_range(1..25) {
                let k = format!("k{}", rng.random_range(0..30));
                let t = base + rng.random_range(0..30) * DAY;
                let v: i64 = rng.random_range(-1000..1000);
                values.push(format!("('{k}', '{}', {v})", ts_text(t)));
                versions.push((k.clone(), t, v));
                evalues.push(format!("('{k}', '{}', {v})", ts_text(t)));
                events.push((k, t, v));
            }
            c.batch_execute(&format!("INSERT INTO s VALUES {}", values.join(",")))
                .await
                .unwrap();
            c.batch_execute(&format!("INSERT INTO e VALUES {}", evalues.join(",")))
                .await
                .unwrap();
        }
        server.kill9();
    }

    let server = common::Server::start_on(&data);
    let c = server.connect().await;
    // Latest as of several times, against the model.
    let mut mismatches = 0;
    for probe in 0..10 {
        let at = base + rng.random_range(-1..32) * DAY + rng.random_range(0..DAY);
        let mut want: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for (k, t, v) in &versions {
            if *t <= at {
                let e = want.entry(k.clone()).or_insert((*t, *v));
                if *t >= e.0 {
                    *e = (*t, *v);
                }
            }
        }
        let rows = c
            .query(
                "SELECT k, v FROM s ORDER BY k AS OF $1",
                &[&chrono::DateTime::from_timestamp_micros(at).unwrap()],
            )
            .await
            .unwrap();
        let got: BTreeMap<String, (i64, i64)> = rows
            .iter()
            .map(|r| (r.get::<_, String>(0), (0, r.get::<_, i64>(1))))
            .collect();
        let want_v: BTreeMap<String, i64> =
            want.iter().map(|(k, (_, v))| (k.clone(), *v)).collect();
        let got_v: BTreeMap<String, i64> = got.iter().map(|(k, (_, v))| (k.clone(), *v)).collect();
        if want_v != got_v {
            mismatches += 1;
            eprintln!(
                "probe {probe} at {}: got {got_v:?} want {want_v:?}",
                ts_text(at)
            );
        }
    }
    // Full history: every version survived.
    let n: i64 = c
        .query_one("SELECT count(*) FROM history.s", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n as usize, versions.len());
    let n: i64 = c
        .query_one("SELECT count(*) FROM e AS OF '2100-01-01T00:00:00Z'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n as usize, events.len());
    let sum: i64 = c
        .query_one(
            "SELECT CAST(sum(v) AS BIGINT) FROM e AS OF '2100-01-01T00:00:00Z'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(sum, events.iter().map(|e| e.2).sum::<i64>());
    assert_eq!(mismatches, 0, "replay with THYME_SEED={seed}");
}

#[test]
fn second_server_on_the_same_directory_is_refused() {
    let first = common::Server::start();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_thyme"))
        .args([
            "serve",
            "--data",
            first.data.to_str().unwrap(),
            "--pg-addr",
            &format!("127.0.0.1:{}", common::free_port()),
            "--control-addr",
            &format!("127.0.0.1:{}", common::free_port()),
            "--query-addr",
            &format!("127.0.0.1:{}", common::free_port()),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already in use"), "stderr: {err}");
}

#[test]
fn sigterm_stops_cleanly() {
    let mut s = common::Server::start();
    let st = s.terminate();
    assert!(st.success(), "exit status {st:?}");
}

#[test]
fn health_endpoints_answer() {
    let s = common::Server::start();
    for port in [s.control_port, s.query_port] {
        let (status, body) = common::http_get(port, "/health");
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"ok\""), "{body}");
        let (status, body) = common::http_get(port, "/no/such/thing");
        assert_eq!(status, 404);
        assert!(body.contains("\"error\""), "{body}");
    }
    let (status, body) = common::http_get(s.control_port, "/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("thyme_datasets 0"), "{body}");
}
