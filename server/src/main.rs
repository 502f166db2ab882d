//! `thyme`: the Thyme server binary.
//!
//! `thyme serve --data DIR` opens the embedded store in `DIR` and
//! serves SQL over the Postgres wire protocol (`--pg-addr`, default
//! `127.0.0.1:5433`), the HTTP control plane (`--control-addr`, default
//! `127.0.0.1:8080`) and the HTTP query server (`--query-addr`, default
//! `127.0.0.1:8081`). Every flag can also come from the environment
//! (`THYME_DATA`, `THYME_PG_ADDR`, ...) or a config file (`--config`, lines of
//! `key = value` with the flag names). SIGTERM / SIGINT stop it cleanly.

mod control;
mod errors;
mod http;
mod offline;
mod pg;
mod pg_rows;
mod python;
mod query;
mod supervisor;

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
    /// Config file with `key = value` lines (keys as the flag names).
    #[arg(long, env = "THYME_CONFIG")]
    config: Option<PathBuf>,
}

/// Apply a config file: values there fill in flags not given on the command
/// line or in the environment.
fn apply_config(args: &mut ServeArgs, matches: &clap::ArgMatches) -> Result<(), String> {
    let Some(path) = &args.config else {
        return Ok(());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| format!("{}:{}: expected key = value", path.display(), n + 1))?;
        let (k, v) = (
            k.trim().replace('-', "_"),
            v.trim().trim_matches('"').to_string(),
        );
        let from_default = |id: &str| {
            matches!(
                matches.value_source(id),
                None | Some(clap::parser::ValueSource::DefaultValue)
            )
        };
        let bad = |e: String| format!("{}:{}: {k}: {e}", path.display(), n + 1);
        let boolean = |v: &str| match v {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(bad(format!("expected true or false, got {v:?}"))),
        };
        match k.as_str() {
            "data" if from_default("data") => args.data = PathBuf::from(v),
            "pg_addr" if from_default("pg_addr") => {
                args.pg_addr = v
                    .parse()
                    .map_err(|e: std::net::AddrParseError| bad(e.to_string()))?
            }
            "control_addr" if from_default("control_addr") => {
                args.control_addr = v
                    .parse()
                    .map_err(|e: std::net::AddrParseError| bad(e.to_string()))?
            }
            "query_addr" if from_default("query_addr") => {
                args.query_addr = v
                    .parse()
                    .map_err(|e: std::net::AddrParseError| bad(e.to_string()))?
            }
            "sync_writes" if from_default("sync_writes") => args.sync_writes = boolean(&v)?,
            "direct_io" if from_default("direct_io") => args.direct_io = boolean(&v)?,
            "extractor_timeout_ms" if from_default("extractor_timeout_ms") => {
                args.extractor_timeout_ms = v
                    .parse()
                    .map_err(|e: std::num::ParseIntError| bad(e.to_string()))?
            }
            "data"
            | "pg_addr"
            | "control_addr"
            | "query_addr"
            | "sync_writes"
            | "direct_io"
            | "extractor_timeout_ms" => {}
            other => {
                return Err(format!(
                    "{}:{}: unknown setting {other}",
                    path.display(),
                    n + 1
                ))
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("THYME_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    let cli =
        <Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match cli.command {
        Command::Serve(mut args) => {
            let sub = matches
                .subcommand_matches("serve")
                .expect("serve subcommand");
            if let Err(e) = apply_config(&mut args, sub) {
                eprintln!("thyme: {e}");
                return ExitCode::from(2);
            }
            let rt = tokio::runtime::Builder::new_multi_thread()
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
    let engine = Engine::new(store.clone(), pg::install_catalog).map_err(|e| e.to_string())?;

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
        engine.features().set_python(p.clone());
    }
    let pipelines = supervisor::PipelineSupervisor::start(engine.clone(), python);

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

    let pg_task = tokio::spawn(pg::serve(
        pg_listener,
        pg::PgHandlers::new(engine.clone()),
        stop_rx.clone(),
    ));
    let http_task = tokio::spawn(http::serve(
        control_listener,
        http::control_router(engine.clone(), pipelines.clone()),
        stop_rx.clone(),
    ));
    let query_task = tokio::spawn(http::serve(
        query_listener,
        http::query_router(engine.clone(), limit),
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

    /// Parse `thyme serve --config <file>` with `text` as the file.
    fn serve_with_config(text: &str) -> Result<ServeArgs, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("thyme.conf");
        std::fs::write(&path, text).unwrap();
        let matches = <Cli as clap::CommandFactory>::command()
            .try_get_matches_from(["thyme", "serve", "--config", path.to_str().unwrap()])
            .unwrap();
        let Command::Serve(mut args) = <Cli as clap::FromArgMatches>::from_arg_matches(&matches)
            .unwrap()
            .command;
        apply_config(&mut args, matches.subcommand_matches("serve").unwrap())?;
        Ok(args)
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
