//! `thyme`: the Thyme server binary.
//!
//! `thyme serve --data DIR` opens the embedded store in `DIR` and
//! serves SQL over the Postgres wire protocol (`--pg-addr`, default
//! `127.0.0.1:5433`), the HTTP control plane (`--control-addr`, default
//! `127.0.0.1:8080`) and the HTTP query server (`--query-addr`, default
//! `127.0.0.1:8081`). Every flag can also come from the environment
//! (`THYME_DATA`, `THYME_PG_ADDR`, ...) or a TOML config file (`--config`,
//! keys as the flag names); the command line wins over the environment,
//! which wins over the file. SIGTERM / SIGINT stop it cleanly.

mod control;
mod errors;
mod exec;
mod http;
mod http_auth;
mod metrics;
mod offline;
mod pg;
mod pg_auth;
mod pg_conn;
mod pg_guard;
mod pg_rows;
mod python;
mod query;
mod sources;
mod supervisor;
mod tls;
mod workers;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use thyme_planner::Engine;
use thyme_storage::{StoreOptions, TemporalStore};
use tokio::net::TcpListener;

/// mimalloc serves the server's Rust allocations: many small, short-lived
/// ones per request (protocol messages, rows, plans) that glibc's malloc
/// spends a measurable share of a point lookup on.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(name = "thyme", version, about = "Thyme, a feature database")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server on the embedded store.
    Serve(ServeArgs),
}

#[derive(clap::Args, Debug, Clone)]
struct ServeArgs {
    /// Data directory (catalog, logs and the temporal store).
    #[arg(long, env = "THYME_DATA", default_value = "./thyme-data")]
    data: PathBuf,
    /// Postgres wire-protocol listener.
    #[arg(long, env = "THYME_PG_ADDR", default_value = "127.0.0.1:5433")]
    pg_addr: SocketAddr,
    /// HTTP control-plane listener.
    #[arg(long, env = "THYME_CONTROL_ADDR", default_value = "127.0.0.1:8080")]
    control_addr: SocketAddr,
    /// HTTP query-server listener (`GET /features`, `POST /api/v1/query`,
    /// `POST /api/v1/lookup`).
    #[arg(long, env = "THYME_QUERY_ADDR", default_value = "127.0.0.1:8081")]
    query_addr: SocketAddr,
    /// fsync the write-ahead log on every commit (survives power loss, not
    /// only process crashes).
    #[arg(long, env = "THYME_SYNC_WRITES")]
    sync_writes: bool,
    /// Write memtable flushes and compactions with direct I/O (`O_DIRECT`),
    /// bypassing the page cache: about a fifth less CPU under sustained
    /// pipeline writes, but files written that way start cold, so reads of
    /// older history are slower until the page cache warms up.
    #[arg(long, env = "THYME_DIRECT_IO")]
    direct_io: bool,
    /// Time limit of one Python extractor call, in milliseconds; a call that
    /// runs longer is interrupted and its request fails.
    #[arg(long, env = "THYME_EXTRACTOR_TIMEOUT_MS", default_value_t = 5000)]
    extractor_timeout_ms: u64,
    /// Default `statement_timeout` of every session, in milliseconds (0:
    /// none); a session changes its own with `SET statement_timeout`.
    #[arg(long, env = "THYME_STATEMENT_TIMEOUT_MS", default_value_t = 0)]
    statement_timeout_ms: u64,
    /// Deepest nesting of expressions, subqueries and set operations in a
    /// statement; deeper statements are refused (54001) before parsing.
    #[arg(long, env = "THYME_MAX_EXPRESSION_DEPTH", default_value_t = thyme_planner::sql::DEFAULT_MAX_DEPTH)]
    max_expression_depth: usize,
    /// Memory one statement may reserve for its operators (sorts, hash
    /// tables, join build sides), in MiB; more fails it (53200).
    #[arg(long, env = "THYME_WORK_MEM_MB", default_value_t = 1024)]
    work_mem_mb: usize,
    /// Memory all running statements together may reserve, in MiB.
    #[arg(long, env = "THYME_MAX_MEMORY_MB", default_value_t = 4096)]
    max_memory_mb: usize,
    /// Threads that parse, plan and execute SQL statements (0: one per CPU).
    #[arg(long, env = "THYME_QUERY_THREADS", default_value_t = 0)]
    query_threads: usize,
    /// CPU priority of those threads against the socket threads (which
    /// answer point lookups and HTTP): `idle` (Linux `SCHED_IDLE`), `low`
    /// (nice 10) or `normal`.
    #[arg(long, env = "THYME_QUERY_PRIORITY", value_enum, default_value = "idle")]
    query_priority: exec::Priority,
    /// Open Postgres-protocol connections at most; more are refused (53300).
    #[arg(long, env = "THYME_MAX_CONNECTIONS", default_value_t = 100)]
    max_connections: usize,
    /// Largest Postgres-protocol message a client may send, in bytes.
    #[arg(long, env = "THYME_MAX_MESSAGE_BYTES", default_value_t = 64 << 20)]
    max_message_bytes: usize,
    /// Time a Postgres-protocol message may take to arrive once it has
    /// begun, in milliseconds; a slower client is disconnected.
    #[arg(long, env = "THYME_MESSAGE_TIMEOUT_MS", default_value_t = 30_000)]
    message_timeout_ms: u64,
    /// Time from connecting to the end of authentication, in milliseconds.
    #[arg(long, env = "THYME_STARTUP_TIMEOUT_MS", default_value_t = 60_000)]
    startup_timeout_ms: u64,
    /// Time an HTTP client has to send a request's headers, in milliseconds.
    #[arg(long, env = "THYME_HTTP_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    http_header_timeout_ms: u64,
    /// Time an HTTP request may take, body and response included, in
    /// milliseconds.
    #[arg(long, env = "THYME_HTTP_REQUEST_TIMEOUT_MS", default_value_t = 120_000)]
    http_request_timeout_ms: u64,
    /// Largest HTTP request body (`POST /api/v1/log`, `/api/v1/commit`), in MiB.
    #[arg(long, env = "THYME_HTTP_MAX_BODY_MB", default_value_t = 32)]
    http_max_body_mb: usize,
    /// PEM certificate chain for TLS: the Postgres listener accepts TLS
    /// (`sslmode=require`), the HTTP listeners speak HTTPS only.
    #[arg(long, env = "THYME_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "THYME_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Refuse Postgres connections that do not use TLS.
    #[arg(long, env = "THYME_REQUIRE_TLS", requires = "tls_cert")]
    require_tls: bool,
    /// Create this superuser at start if it does not exist, with the
    /// password in `THYME_SUPERUSER_PASSWORD` (never a flag: flags show in
    /// `ps`). With a role that has a password, every client authenticates.
    #[arg(long, env = "THYME_SUPERUSER")]
    superuser: Option<String>,
    /// Listen beyond loopback with no role to authenticate against (every
    /// client is then trusted, and may commit code the server runs).
    #[arg(long, env = "THYME_ALLOW_UNAUTHENTICATED")]
    allow_unauthenticated: bool,
    /// TOML config file; its keys are the flag names (`pg_addr = "..."`,
    /// `sync_writes = true`).
    #[arg(long, env = "THYME_CONFIG")]
    config: Option<PathBuf>,
}

/// Apply a config file: a TOML table whose keys are the flag names
/// (`pg_addr` or `pg-addr`). Its values fill in the flags given neither on
/// the command line nor in the environment, through clap like any flag, so
/// each setting is declared once (in [`ServeArgs`]) and checked the same
/// way wherever it comes from. Returns the `serve` matches to use.
fn apply_config(
    argv: &[std::ffi::OsString],
    matches: &clap::ArgMatches,
) -> Result<Option<clap::ArgMatches>, String> {
    let Some(path) = matches.get_one::<PathBuf>("config") else {
        return Ok(None);
    };
    let shown = path.display();
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("cannot read config {shown}: {e}"))?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| format!("{shown}: {e}"))?;
    let cmd = <Cli as clap::CommandFactory>::command();
    let serve = cmd.find_subcommand("serve").expect("serve subcommand");
    let mut extra: Vec<std::ffi::OsString> = Vec::new();
    for (key, value) in &table {
        let id = key.replace('-', "_");
        let arg = serve
            .get_arguments()
            .find(|a| a.get_id() == id.as_str() && id != "config")
            .ok_or_else(|| format!("{shown}: unknown setting {key}"))?;
        if !matches!(
            matches.value_source(&id),
            None | Some(clap::parser::ValueSource::DefaultValue)
        ) {
            continue; // the command line or the environment wins
        }
        let long = arg.get_long().expect("every setting has a long flag");
        let flag = matches!(arg.get_action(), clap::ArgAction::SetTrue);
        match value {
            toml::Value::Boolean(b) if flag => {
                if *b {
                    extra.push(format!("--{long}").into());
                }
            }
            other if flag => {
                return Err(format!(
                    "{shown}: {key}: expected true or false, got {other}"
                ))
            }
            toml::Value::String(v) => extra.push(format!("--{long}={v}").into()),
            toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) => {
                extra.push(format!("--{long}={value}").into())
            }
            other => {
                return Err(format!(
                    "{shown}: {key}: expected a string or a number, got {other}"
                ))
            }
        }
    }
    let argv: Vec<std::ffi::OsString> = argv.iter().cloned().chain(extra).collect();
    let all = cmd
        .try_get_matches_from(argv)
        .map_err(|e| format!("{shown}: {}", e.render().to_string().trim_end()))?;
    Ok(all.subcommand_matches("serve").cloned())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("THYME_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let matches = <Cli as clap::CommandFactory>::command().get_matches_from(&argv);
    let cli =
        <Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match cli.command {
        Command::Serve(args) => {
            let sub = matches
                .subcommand_matches("serve")
                .expect("serve subcommand");
            let args = match apply_config(&argv, sub) {
                Ok(None) => args,
                Ok(Some(m)) => <ServeArgs as clap::FromArgMatches>::from_arg_matches(&m)
                    .unwrap_or_else(|e| e.exit()),
                Err(e) => {
                    eprintln!("thyme: {e}");
                    return ExitCode::from(2);
                }
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .thread_name("thyme-io")
                .thread_stack_size(8 << 20)
                .enable_all()
                .build()
                .expect("tokio runtime");
            match rt.block_on(serve(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("thyme: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `--superuser NAME`: create the role (superuser, login, the password in
/// `THYME_SUPERUSER_PASSWORD`) unless it exists.
fn bootstrap_superuser(engine: &Engine, name: Option<&str>) -> Result<(), String> {
    let Some(name) = name else {
        return Ok(());
    };
    if engine.roles().get(name).is_some() {
        return Ok(());
    }
    let password = std::env::var("THYME_SUPERUSER_PASSWORD")
        .map_err(|_| format!("--superuser {name}: set its password in THYME_SUPERUSER_PASSWORD"))?;
    let verifier =
        thyme_table::roles::verifier_for(&password).map_err(|e| format!("--superuser: {e}"))?;
    engine
        .roles()
        .create(
            thyme_table::roles::Role {
                name: name.to_string(),
                superuser: true,
                login: true,
                password: Some(verifier),
                ..Default::default()
            },
            true,
        )
        .map_err(|e| format!("--superuser: {e}"))?;
    tracing::info!(role = name, "superuser created");
    Ok(())
}

/// Refuse to listen beyond loopback while every client would be trusted.
fn check_exposure(engine: &Engine, args: &ServeArgs) -> Result<(), String> {
    if engine.roles().auth_required() || args.allow_unauthenticated {
        return Ok(());
    }
    for (flag, addr) in [
        ("--pg-addr", args.pg_addr),
        ("--control-addr", args.control_addr),
        ("--query-addr", args.query_addr),
    ] {
        if !addr.ip().is_loopback() {
            return Err(format!(
                "refusing to listen on {addr} ({flag}) without authentication: no role has a \
                 password, so every client would be trusted, and may commit code the server runs. \
                 Create one first (--superuser NAME with THYME_SUPERUSER_PASSWORD, or \
                 CREATE ROLE ... LOGIN PASSWORD over a loopback connection), or pass \
                 --allow-unauthenticated"
            ));
        }
    }
    Ok(())
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    let store: Arc<dyn TemporalStore> = thyme_storage::open_embedded(
        &args.data,
        StoreOptions {
            sync_writes: args.sync_writes,
            direct_io: args.direct_io,
            ..Default::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let limits = thyme_planner::Limits {
        max_expression_depth: args.max_expression_depth,
        statement_timeout_ms: args.statement_timeout_ms,
        work_mem: args.work_mem_mb.max(1) << 20,
        max_memory: args.max_memory_mb.max(1) << 20,
    };
    let engine = Engine::with_limits(store.clone(), limits, pg::install_catalog)
        .map_err(|e| e.to_string())?;
    bootstrap_superuser(&engine, args.superuser.as_deref())?;
    check_exposure(&engine, &args)?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => Some(tls::acceptor(c, k)?),
        _ => None,
    };
    let pg_auth = pg_auth::AuthConfig {
        require_tls: args.require_tls,
    };
    tracing::info!(
        authentication = if engine.roles().auth_required() {
            "scram-sha-256 / tokens"
        } else {
            "trust (no role has a password)"
        },
        tls = tls.is_some(),
        "clients"
    );
    let threads = match args.query_threads {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    let pool = exec::QueryPool::new(threads, args.query_priority)
        .map_err(|e| format!("query pool: {e}"))?;
    let conn_limits = pg_conn::ConnLimits {
        max_connections: args.max_connections,
        startup_timeout: std::time::Duration::from_millis(args.startup_timeout_ms.max(1)),
        wire: pg_guard::WireLimits {
            max_message_bytes: args.max_message_bytes.max(1024),
            message_timeout: std::time::Duration::from_millis(args.message_timeout_ms.max(1)),
        },
    };

    let limit = std::time::Duration::from_millis(args.extractor_timeout_ms.max(1));
    let python: Option<Arc<dyn thyme_table::udf::PythonRuntime>> = match python::Interpreter::new(
        limit,
    ) {
        Ok(i) => Some(i),
        Err(e) => {
            tracing::warn!(error = %e, "no embedded Python: pipelines and extractors with Python functions will not run");
            None
        }
    };
    if let Some(p) = &python {
        tracing::info!(python = %p.describe(), "shipped Python code runs in this interpreter");
        engine.features().set_python(p.clone());
    }
    let pipelines = supervisor::PipelineSupervisor::start(engine.clone(), python);
    let sources = sources::SourceSupervisor::start(engine.clone());

    let pg_listener = TcpListener::bind(args.pg_addr)
        .await
        .map_err(|e| format!("cannot listen on {} (--pg-addr): {e}", args.pg_addr))?;
    let control_listener = TcpListener::bind(args.control_addr).await.map_err(|e| {
        format!(
            "cannot listen on {} (--control-addr): {e}",
            args.control_addr
        )
    })?;
    let query_listener = TcpListener::bind(args.query_addr)
        .await
        .map_err(|e| format!("cannot listen on {} (--query-addr): {e}", args.query_addr))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let http_limits = http::HttpLimits {
        header_timeout: std::time::Duration::from_millis(args.http_header_timeout_ms.max(1)),
        request_timeout: std::time::Duration::from_millis(args.http_request_timeout_ms.max(1)),
        max_uri_bytes: 16 << 10,
    };
    let max_body = args.http_max_body_mb.max(1) << 20;

    let pg_task = tokio::spawn(pg::serve(
        pg_listener,
        pg::PgHandlers::new(engine.clone(), pool.clone(), pg_auth, tls.clone()),
        conn_limits,
        stop_rx.clone(),
    ));
    let http_task = tokio::spawn(http::serve(
        control_listener,
        http::control_router(engine.clone(), pipelines.clone(), sources.clone(), max_body),
        http_limits,
        tls.clone(),
        stop_rx.clone(),
    ));
    let query_task = tokio::spawn(http::serve(
        query_listener,
        http::query_router(engine.clone(), limit),
        http_limits,
        tls.clone(),
        stop_rx.clone(),
    ));
    tracing::info!(
        data = %args.data.display(),
        pg = %args.pg_addr,
        control = %args.control_addr,
        query = %args.query_addr,
        "thyme is ready"
    );

    wait_for_signal().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = pg_task.await;
    let _ = http_task.await;
    let _ = query_task.await;
    sources.shutdown();
    pipelines.shutdown();
    store.flush().map_err(|e| e.to_string())?;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parse `thyme serve --config <file> [flags]` with `text` as the file.
    fn serve_with(text: &str, flags: &[&str]) -> Result<ServeArgs, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("thyme.toml");
        std::fs::write(&path, text).unwrap();
        let mut argv: Vec<std::ffi::OsString> = vec![
            "thyme".into(),
            "serve".into(),
            "--config".into(),
            path.into(),
        ];
        argv.extend(flags.iter().map(|f| f.into()));
        let matches = <Cli as clap::CommandFactory>::command()
            .try_get_matches_from(&argv)
            .unwrap();
        let sub = matches.subcommand_matches("serve").unwrap();
        let sub = apply_config(&argv, sub)?.unwrap();
        Ok(<ServeArgs as clap::FromArgMatches>::from_arg_matches(&sub).unwrap())
    }

    fn serve_with_config(text: &str) -> Result<ServeArgs, String> {
        serve_with(text, &[])
    }

    #[test]
    fn config_file_is_toml_and_flags_win() {
        let args = serve_with_config(
            "data = \"/tmp/d\"\npg_addr = \"127.0.0.1:6543\"\nextractor-timeout-ms = 250\n",
        )
        .unwrap();
        assert_eq!(args.data, PathBuf::from("/tmp/d"));
        assert_eq!(args.pg_addr.port(), 6543);
        assert_eq!(args.extractor_timeout_ms, 250);
        // A flag on the command line wins over the file.
        let args = serve_with(
            "pg_addr = \"127.0.0.1:6543\"\n",
            &["--pg-addr", "127.0.0.1:7000"],
        )
        .unwrap();
        assert_eq!(args.pg_addr.port(), 7000);
        // Values are checked as the flag's: the file and the key are named.
        let e = serve_with_config("pg_addr = \"nowhere\"\n").err().unwrap();
        assert!(e.contains("thyme.toml") && e.contains("--pg-addr"), "{e}");
        let e = serve_with_config("extractor_timeout_ms = \"soon\"\n")
            .err()
            .unwrap();
        assert!(
            e.contains("--extractor-timeout-ms") && e.contains("soon"),
            "{e}"
        );
        let e = serve_with_config("direct_io = \"true\"\n").err().unwrap();
        assert!(
            e.contains("direct_io") && e.contains("expected true or false"),
            "{e}"
        );
        let e = serve_with_config("config = \"other.toml\"\n")
            .err()
            .unwrap();
        assert!(e.contains("unknown setting config"), "{e}");
    }

    #[test]
    fn config_file_sets_storage_options() {
        let args = serve_with_config("direct_io = true\nsync-writes = true\n").unwrap();
        assert!(args.direct_io && args.sync_writes);
        let args = serve_with_config("# nothing\n").unwrap();
        assert!(!args.direct_io && !args.sync_writes);
        let e = serve_with_config("direct_io = yes\n").err().unwrap();
        assert!(e.contains("direct_io") && e.contains("yes"), "{e}");
        let e = serve_with_config("sync_writes = yes\n").err().unwrap();
        assert!(e.contains("sync_writes") && e.contains("yes"), "{e}");
        let e = serve_with_config("directio = true\n").err().unwrap();
        assert!(e.contains("unknown setting directio"), "{e}");
    }
}
