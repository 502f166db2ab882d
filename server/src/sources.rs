//! The source supervisor ([`SourceSupervisor`]): one thread per committed
//! source that is not a webhook (see [`thyme_sources`]).
//!
//! A worker loads its source's stored position, then reads and applies
//! chunks until the connector has nothing new, and sleeps for the source's
//! `every` (default [`DEFAULT_EVERY`]; a Kafka source waits in its poll
//! instead and does not sleep unless `every` is given). An error (the system unreachable, a
//! write failing) shows in the status and is retried with a backoff that
//! doubles up to [`MAX_BACKOFF`]; the server keeps serving everything
//! else. A recommitted dataset (a new table) gets new workers that start
//! its sources over; a source no longer committed stops.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::workers::sleep_unless;

use serde::Serialize;
use serde_json::Value;
use thyme_model::payload::{Connector, Dataset as DatasetSpec, Source};
use thyme_planner::Engine;
use thyme_sources::files::FilesSource;
use thyme_sources::iceberg::IcebergSource;
use thyme_sources::kafka::KafkaSource;
use thyme_sources::postgres::PostgresSource;
use thyme_sources::postgres_cdc::PostgresCdcSource;
use thyme_sources::{apply, SourceState};

/// Poll period of a source that gives no `every`.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(1);
/// Longest wait between retries of a failing source.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What `GET /api/v1/sources` shows for one source.
#[derive(Debug, Clone, Serialize)]
pub struct SourceStatus {
    pub dataset: String,
    /// The connector's name (`Files("name")`) and kind.
    pub source: String,
    pub connector: &'static str,
    /// `starting`, `running` (reading), `idle` (caught up), `error`.
    pub status: &'static str,
    /// Where the source is (connector-specific, never secrets).
    pub position: Value,
    pub rows: u64,
    pub skipped: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_poll: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl SourceStatus {
    /// A committed source whose worker has not reported yet.
    fn starting(spec: &DatasetSpec, n: usize) -> SourceStatus {
        let s = &spec.sources[n];
        SourceStatus {
            dataset: spec.name.clone(),
            source: s.connector.name().to_string(),
            connector: s.connector.kind(),
            status: "starting",
            position: Value::Null,
            rows: 0,
            skipped: 0,
            last_poll: None,
            error: None,
        }
    }
}

/// Every committed source that is not a webhook: (worker id, dataset,
/// source index).
fn committed(engine: &Engine) -> Vec<(String, DatasetSpec, usize)> {
    let mut out = Vec::new();
    for d in engine.registry().datasets() {
        let spec = d.definition;
        let Some(table) = engine.catalog().get(&thyme_model::snake_case(&spec.name)) else {
            continue;
        };
        for (n, s) in spec.sources.iter().enumerate() {
            if matches!(s.connector, Connector::Webhook { .. }) {
                continue;
            }
            out.push((format!("{}/{}/{n}", table.id, spec.name), spec.clone(), n));
        }
    }
    out
}

/// A connector that reads.
enum Reader {
    Files(FilesSource),
    Kafka(Box<KafkaSource>),
    Iceberg(Box<IcebergSource>),
    PostgresCdc(Box<PostgresCdcSource>),
    Postgres(Box<PostgresSource>),
}

impl Reader {
    fn open(
        spec: &DatasetSpec,
        n: usize,
        table_id: u64,
        source: &Source,
    ) -> thyme_planner::Result<Reader> {
        match &source.connector {
            Connector::Files { .. } => Ok(Reader::Files(FilesSource::new(
                &source.connector,
                spec,
                source,
            )?)),
            Connector::Kafka { .. } => Ok(Reader::Kafka(Box::new(KafkaSource::new(
                &source.connector,
                spec,
                source,
            )?))),
            Connector::Iceberg { .. } => Ok(Reader::Iceberg(Box::new(IcebergSource::new(
                &source.connector,
                spec,
                source,
            )?))),
            Connector::Postgres { .. } if source.cdc != thyme_model::payload::Cdc::Native => {
                Ok(Reader::Postgres(Box::new(PostgresSource::new(
                    &source.connector,
                    spec,
                    source,
                )?)))
            }
            Connector::Postgres { .. } => Ok(Reader::PostgresCdc(Box::new(
                PostgresCdcSource::new(&source.connector, spec, n, table_id, source)?,
            ))),
            other => Err(thyme_planner::Error::Unsupported(format!(
                "the {} connector in this build",
                other.kind()
            ))),
        }
    }

    fn next(&self, position: &Value) -> thyme_planner::Result<Option<thyme_sources::Chunk>> {
        match self {
            Reader::Files(f) => f.next(position),
            Reader::Kafka(k) => k.next(position),
            Reader::Iceberg(i) => i.next(position),
            Reader::PostgresCdc(p) => p.next(position),
            Reader::Postgres(p) => p.next(position),
        }
    }

    /// Whether the next chunk may be read before the last one is stored:
    /// not for logical replication, whose read confirms the stored position
    /// to the slot.
    fn prefetches(&self) -> bool {
        !matches!(self, Reader::PostgresCdc(_))
    }

    /// The position as the status shows it.
    fn summary(&self, position: &Value) -> Value {
        match self {
            Reader::Files(f) => {
                let files = position.get("files").and_then(Value::as_array);
                serde_json::json!({
                    "directory": f.describe(),
                    "files_read": files.map_or(0, Vec::len),
                    "last_file": files.and_then(|a| a.last()).cloned().unwrap_or(Value::Null),
                })
            }
            Reader::Kafka(k) => k.summary(position),
            Reader::Iceberg(i) => i.summary(position),
            Reader::PostgresCdc(p) => p.summary(position),
            Reader::Postgres(p) => serde_json::json!({
                "table": p.describe(),
                "cursor": position.get("high").cloned().unwrap_or(Value::Null),
            }),
        }
    }
}

/// The running sources.
pub struct SourceSupervisor {
    engine: Arc<Engine>,
    status: Mutex<BTreeMap<String, SourceStatus>>,
    stop: AtomicBool,
    supervisor: Mutex<Option<JoinHandle<()>>>,
}

impl SourceSupervisor {
    pub fn start(engine: Arc<Engine>) -> Arc<SourceSupervisor> {
        let s = Arc::new(SourceSupervisor {
            engine: engine.clone(),
            status: Mutex::new(BTreeMap::new()),
            stop: AtomicBool::new(false),
            supervisor: Mutex::new(None),
        });
        let me = s.clone();
        let h = std::thread::Builder::new()
            .name("sources".into())
            .spawn(move || me.supervise())
            .expect("spawn source supervisor");
        *s.supervisor.lock().expect("lock") = Some(h);
        s
    }

    /// Every committed source's status (`starting` until its worker reports).
    pub fn status(&self) -> Vec<SourceStatus> {
        let mut all = self.status.lock().expect("lock").clone();
        for (id, spec, n) in committed(&self.engine) {
            all.entry(id)
                .or_insert_with(|| SourceStatus::starting(&spec, n));
        }
        all.into_values().collect()
    }

    /// Stop every worker (each finishes the chunk it is applying) and wait.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.supervisor.lock().expect("lock").take() {
            let _ = h.join();
        }
    }

    fn supervise(self: Arc<Self>) {
        let mut workers = crate::workers::Workers::default();
        while !self.stop.load(Ordering::SeqCst) {
            let wanted: BTreeMap<_, _> = committed(&self.engine)
                .into_iter()
                .map(|(id, spec, n)| (id, (spec, n)))
                .collect();
            let gone = workers.reconcile(wanted, |id, (spec, n), stop| {
                let (me, key) = (self.clone(), id.to_string());
                std::thread::Builder::new()
                    .name(format!("source {}", spec.name))
                    .spawn(move || me.run(key, spec, n, stop))
                    .expect("spawn source worker")
            });
            for id in gone {
                self.status.lock().expect("lock").remove(&id);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        workers.stop_all();
    }

    fn run(&self, id: String, spec: DatasetSpec, n: usize, stop: Arc<AtomicBool>) {
        let stopped = || stop.load(Ordering::SeqCst) || self.stop.load(Ordering::SeqCst);
        let source = spec.sources[n].clone();
        let every = source
            .every
            .as_deref()
            .and_then(|e| thyme_model::duration::parse(e).ok())
            .and_then(|d| d.micros())
            .map_or(
                // A stream waits in its own poll; it does not sleep.
                if matches!(source.connector, Connector::Kafka { .. }) {
                    Duration::ZERO
                } else {
                    DEFAULT_EVERY
                },
                |us| Duration::from_micros(us.max(1) as u64),
            );
        let mut status = SourceStatus::starting(&spec, n);
        let table_id = id
            .split('/')
            .next()
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        let reader = match Reader::open(&spec, n, table_id, &source) {
            Ok(r) => r,
            Err(e) => {
                status.status = "error";
                status.error = Some(e.to_string());
                self.set(&id, status);
                return;
            }
        };
        let mut backoff = Duration::from_millis(500);
        let mut state: Option<SourceState> = None;
        while !stopped() {
            let r = self.poll(
                &spec,
                n,
                &source,
                &reader,
                &mut state,
                &mut status,
                &stopped,
            );
            status.last_poll = Some(chrono::Utc::now().to_rfc3339());
            match r {
                Ok(()) => {
                    backoff = Duration::from_millis(500);
                    status.status = "idle";
                    status.error = None;
                    self.set(&id, status.clone());
                    sleep_unless(&stopped, every);
                }
                Err(e) => {
                    tracing::warn!(dataset = %spec.name, source = %status.source, error = %e, "source failed; retrying");
                    state = None; // reload what was stored
                    status.status = "error";
                    status.error = Some(e.to_string());
                    self.set(&id, status.clone());
                    sleep_unless(&stopped, backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Read and apply chunks until the connector has nothing new.
    #[allow(clippy::too_many_arguments)]
    fn poll(
        &self,
        spec: &DatasetSpec,
        n: usize,
        source: &Source,
        reader: &Reader,
        state: &mut Option<SourceState>,
        status: &mut SourceStatus,
        stopped: &dyn Fn() -> bool,
    ) -> thyme_planner::Result<()> {
        let catalog = self.engine.catalog();
        let table = catalog
            .get(&thyme_model::snake_case(&spec.name))
            .ok_or_else(|| thyme_planner::Error::UnknownTable(spec.name.clone()))?;
        if state.is_none() {
            *state = Some(SourceState::load(
                catalog.store().as_ref(),
                &spec.name,
                n,
                table.id,
            )?);
        }
        let st = state.as_mut().expect("loaded");
        status.rows = st.rows;
        status.skipped = st.skipped;
        status.position = reader.summary(&st.position);
        let started = std::time::Instant::now();
        let rows_before = st.rows;
        let mut last_report = started;
        // While a chunk is applied the next one is read (connectors whose
        // read does not depend on the last write having happened).
        let prefetch = reader.prefetches();
        std::thread::scope(|scope| -> thyme_planner::Result<()> {
            let mut next_chunk = reader.next(&st.position)?;
            while let Some(chunk) = next_chunk.take() {
                if stopped() {
                    break;
                }
                let ahead = prefetch.then(|| {
                    let position = chunk.position.clone();
                    scope.spawn(move || reader.next(&position))
                });
                status.status = "running";
                let now = chrono::Utc::now().timestamp_micros();
                let mut next = st.clone();
                let applied = apply(catalog, spec, n, source, &mut next, chunk, now);
                let read = match ahead {
                    Some(h) => h.join().unwrap_or_else(|_| {
                        Err(thyme_planner::Error::Internal(
                            "the source reader panicked".into(),
                        ))
                    }),
                    None => Ok(None),
                };
                // A failed write drops what was read ahead; the caller
                // reloads the stored position.
                let done = applied?;
                *st = next;
                if done.skipped > 0 {
                    tracing::info!(dataset = %spec.name, skipped = done.skipped, "source rows skipped (see thyme_rejected_rows)");
                }
                status.rows = st.rows;
                status.skipped = st.skipped;
                status.position = reader.summary(&st.position);
                // Progress lines during a long read (a first read of a table).
                if last_report.elapsed() >= Duration::from_secs(5) {
                    last_report = std::time::Instant::now();
                    let read = st.rows - rows_before;
                    tracing::info!(
                        dataset = %spec.name,
                        source = %status.source,
                        rows = read,
                        rows_per_sec = (read as f64 / started.elapsed().as_secs_f64()) as u64,
                        "source reading"
                    );
                }
                next_chunk = if prefetch {
                    read?
                } else {
                    reader.next(&st.position)?
                };
            }
            Ok(())
        })
    }

    fn set(&self, id: &str, s: SourceStatus) {
        self.status.lock().expect("lock").insert(id.to_string(), s);
    }
}

/// `GET /api/v1/sources` (every source's status) and
/// `GET /api/v1/sources/{dataset}/rejected?limit=N` (the rows its sources
/// skipped, newest first; `SELECT` on the dataset).
pub fn routes(engine: Arc<Engine>, sources: Arc<SourceSupervisor>) -> axum::Router {
    use axum::extract::{Path, Query, State};
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use axum::Json;

    use crate::errors::{classify_http, error_response};
    use crate::http_auth::{caller, require, Caller};

    type Ctx = (Arc<Engine>, Arc<SourceSupervisor>);

    async fn list(State((_, s)): State<Ctx>) -> Response {
        Json(serde_json::json!({ "sources": s.status() })).into_response()
    }

    #[derive(serde::Deserialize)]
    struct Limit {
        limit: Option<usize>,
    }

    async fn rejected(
        State((engine, s)): State<Ctx>,
        ext: Option<axum::Extension<Caller>>,
        Path(dataset): Path<String>,
        Query(q): Query<Limit>,
    ) -> Response {
        if let Err(e) = require(
            &engine,
            &caller(ext),
            thyme_table::roles::Privilege::Select,
            &dataset,
        ) {
            return error_response(e);
        }
        let Some(st) = s.status().into_iter().find(|x| x.dataset == dataset) else {
            return error_response(crate::errors::HttpError::coded(
                thyme_error::ErrorKind::UnknownTable,
                "unknown_dataset",
                format!("dataset {dataset} has no source that is not a webhook"),
            ));
        };
        let limit = q.limit.unwrap_or(100).min(10_000);
        let rows = if engine
            .catalog()
            .get(thyme_sources::rejected::REJECTED_TABLE)
            .is_none()
        {
            Vec::new()
        } else {
            let name = dataset.replace('\'', "''");
            let sql = format!(
                "SELECT source, location, field, value, error, CAST(ts AS TEXT) AS seen \
                 FROM {} WHERE dataset = '{name}' ORDER BY ts DESC LIMIT {limit}",
                thyme_sources::rejected::REJECTED_TABLE
            );
            match engine.session().query(&sql).await {
                Ok(b) => b,
                Err(e) => return error_response(classify_http(e)),
            }
        };
        let refs: Vec<&arrow::record_batch::RecordBatch> = rows.iter().collect();
        let mut w = arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow::json::writer::JsonArray>(Vec::new());
        if w.write_batches(&refs).is_err() || w.finish().is_err() {
            return error_response(classify_http(thyme_planner::Error::Internal(
                "encoding rejected rows".into(),
            )));
        }
        let listed: Value = serde_json::from_slice(&w.into_inner()).unwrap_or(Value::Array(vec![]));
        Json(serde_json::json!({
            "dataset": dataset,
            "skipped": st.skipped,
            "rows": if listed.is_null() { Value::Array(vec![]) } else { listed },
        }))
        .into_response()
    }

    axum::Router::new()
        .route("/api/v1/sources", get(list))
        .route("/api/v1/sources/{dataset}/rejected", get(rejected))
        .with_state((engine, sources))
}
