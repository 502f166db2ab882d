//! Runs every `sql/*.slt` file against a fresh real server over pgwire
//! (simple query protocol). Errors are reported as `SQLSTATE: message`, so
//! `statement error 42P01` checks the code. `system` records run shell
//! commands (psql, for `COPY ... FROM STDIN`; curl, to commit definitions)
//! with `PGHOST`/`PGPORT` and `THYME_CONTROL_URL` set.

mod common;

use async_trait::async_trait;
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType};

#[derive(Debug)]
struct PgError(String);

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for PgError {}

struct Thyme {
    client: tokio_postgres::Client,
}

fn describe(e: tokio_postgres::Error) -> PgError {
    match e.as_db_error() {
        Some(db) => PgError(format!("{}: {}", db.code().code(), db.message())),
        None => PgError(format!("connection error: {e}")),
    }
}

#[async_trait]
impl AsyncDB for Thyme {
    type Error = PgError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, PgError> {
        use tokio_postgres::SimpleQueryMessage as M;
        let msgs = self.client.simple_query(sql).await.map_err(describe)?;
        let mut rows = Vec::new();
        let mut width = None;
        let mut affected = 0;
        for m in msgs {
            match m {
                M::RowDescription(cols) => width = Some(cols.len()),
                M::Row(r) => {
                    width = Some(r.len());
                    rows.push(
                        (0..r.len())
                            .map(|i| match r.get(i) {
                                None => "NULL".to_string(),
                                Some("") => "(empty)".to_string(),
                                Some(v) => v.to_string(),
                            })
                            .collect(),
                    );
                }
                M::CommandComplete(n) => affected = n,
                _ => {}
            }
        }
        match width {
            Some(w) => Ok(DBOutput::Rows {
                types: vec![DefaultColumnType::Any; w],
                rows,
            }),
            None => Ok(DBOutput::StatementComplete(affected)),
        }
    }

    async fn shutdown(&mut self) {}

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqllogictest_files() {
    // At run time, not `env!`: a build cached from a checkout elsewhere
    // would bake in that checkout's path.
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo test");
    let dir = std::path::Path::new(&manifest).join("../sql");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        // THYME_SLT=name runs only the files whose path contains it.
        .filter(|p| std::env::var("THYME_SLT").map_or(true, |f| p.to_string_lossy().contains(&f)))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    let mut failures = Vec::new();
    for f in &files {
        let server = common::Server::start();
        let conn = server.conn_str();
        let mut runner = sqllogictest::Runner::new(move || {
            let conn = conn.clone();
            async move {
                let (client, c) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
                    .await
                    .map_err(describe)?;
                tokio::spawn(async move {
                    let _ = c.await;
                });
                Ok(Thyme { client })
            }
        });
        runner.with_column_validator(|_, _| true);
        // `system` records (COPY through psql) find the server through the
        // standard libpq environment variables.
        std::env::set_var("PGHOST", "127.0.0.1");
        std::env::set_var("PGPORT", server.pg_port.to_string());
        std::env::set_var("PGUSER", "thyme");
        std::env::set_var("PGDATABASE", "thyme");
        // ... and the control plane (commits of definitions) through this.
        std::env::set_var(
            "THYME_CONTROL_URL",
            format!("http://127.0.0.1:{}", server.control_port),
        );
        match runner.run_file_async(f).await {
            Ok(()) => println!("ok   {}", f.display()),
            Err(e) => {
                println!("FAIL {}\n{e}", f.display());
                failures.push(format!("{}: {e}", f.display()));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} slt file(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
