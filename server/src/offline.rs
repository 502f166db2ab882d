//! Offline queries over HTTP: point-in-time features for large spines.
//!
//! `POST /api/v1/query_offline?inputs=UserFeatures.uid&outputs=UserFeatures&timestamp_column=ts`
//! with an Arrow IPC stream as the body (the spine: one column per input,
//! by qualified or plain feature name, and the timestamp column) answers an
//! Arrow IPC stream: the output features (qualified names, output order)
//! and the timestamp column, one row per spine row, in spine order. Each
//! row's features are those serving would have returned at its time: the
//! same evaluation as `POST /api/v1/query` with timestamps, and as `ASOF
//! JOIN` with the featureset view in SQL.
//!
//! Both directions stream: spine batches are decoded as they arrive, cut
//! into chunks of [`CHUNK_ROWS`], evaluated (two chunks at a time when no
//! Python extractor runs) and written back in order as IPC batches. The
//! spine is read as fast as the client sends it (most HTTP clients send the
//! whole body before reading the answer, so it may be held in memory: 16
//! bytes a row for an integer key and a time); the answer is never held
//! beyond a few chunks.
//!
//! Progress: every offline query is a job, named by the `job` parameter
//! (or a generated id, returned in the `x-thyme-job` header). `GET
//! /api/v1/jobs` and `GET /api/v1/jobs/{id}` report rows read and written,
//! the rate and the state (a `rows` parameter with the spine's length adds
//! the total and a percentage); the server logs progress every few seconds.
//! Mistakes found before the first row (unknown features, a missing
//! column, a body that is not Arrow) are JSON errors with 4xx statuses; a
//! failure later (an extractor raising on some row) ends the stream early
//! and the job's state holds the error.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thyme_error::ErrorKind;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::buffer::Buffer;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType};
use arrow::ipc::reader::StreamDecoder;
use arrow::ipc::writer::StreamWriter;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use serde_json::{json, Value};
use thyme_features::{Features, QueryPlan};
use thyme_planner::{Engine, Error};

use crate::errors::{classify_http, error_response, HttpError};

/// Rows evaluated per chunk.
pub const CHUNK_ROWS: usize = 65_536;
/// Finished jobs kept for `GET /api/v1/jobs`.
const KEEP_JOBS: usize = 100;
/// Media type of the bodies.
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

#[derive(Debug, Clone)]
enum JobState {
    Running,
    Done,
    Failed { code: &'static str, message: String },
}

/// One offline query and its progress.
#[derive(Debug)]
pub struct Job {
    id: String,
    inputs: Vec<String>,
    outputs: Vec<String>,
    total: Option<u64>,
    started: Instant,
    started_at: chrono::DateTime<chrono::Utc>,
    rows_in: AtomicU64,
    rows_out: AtomicU64,
    state: Mutex<(JobState, Option<Duration>)>,
}

impl Job {
    fn finish(&self, state: JobState) {
        let mut s = self.state.lock().expect("job state");
        *s = (state, Some(self.started.elapsed()));
    }

    fn json(&self) -> Value {
        let (state, ended) = self.state.lock().expect("job state").clone();
        let elapsed = ended
            .unwrap_or_else(|| self.started.elapsed())
            .as_secs_f64();
        let rows_out = self.rows_out.load(Ordering::Relaxed);
        let mut v = json!({
            "id": self.id,
            "kind": "query_offline",
            "state": match state { JobState::Running => "running", JobState::Done => "done", JobState::Failed { .. } => "failed" },
            "inputs": self.inputs,
            "outputs": self.outputs,
            "started_at": self.started_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "elapsed_s": (elapsed * 1000.0).round() / 1000.0,
            "rows_in": self.rows_in.load(Ordering::Relaxed),
            "rows_out": rows_out,
            "rows_per_s": if elapsed > 0.0 { (rows_out as f64 / elapsed).round() } else { 0.0 },
        });
        if let Some(t) = self.total {
            v["rows_total"] = json!(t);
            v["percent"] = json!(if t == 0 {
                100.0
            } else {
                ((rows_out as f64 * 1000.0 / t as f64).round() / 10.0).min(100.0)
            });
        }
        if let JobState::Failed { code, message } = state {
            v["error"] = json!({"code": code, "message": message});
        }
        v
    }
}

/// The jobs of this server (running ones and the last finished ones).
#[derive(Debug, Default)]
pub struct Jobs {
    jobs: Mutex<VecDeque<Arc<Job>>>,
    next: AtomicU64,
}

impl Jobs {
    fn start(
        &self,
        id: Option<String>,
        plan: &QueryPlan,
        total: Option<u64>,
    ) -> Result<Arc<Job>, HttpError> {
        let mut jobs = self.jobs.lock().expect("jobs");
        let id = match id {
            Some(id) => {
                if jobs.iter().any(|j| {
                    j.id == id && matches!(j.state.lock().expect("job state").0, JobState::Running)
                }) {
                    return Err(HttpError::coded(
                        ErrorKind::Conflict,
                        "job_exists",
                        format!("job {id} is running"),
                    ));
                }
                jobs.retain(|j| j.id != id);
                id
            }
            None => format!(
                "offline-{}-{}",
                chrono::Utc::now().format("%Y%m%dT%H%M%S"),
                self.next.fetch_add(1, Ordering::Relaxed)
            ),
        };
        let job = Arc::new(Job {
            id,
            inputs: plan.inputs.clone(),
            outputs: plan.outputs.clone(),
            total,
            started: Instant::now(),
            started_at: chrono::Utc::now(),
            rows_in: AtomicU64::new(0),
            rows_out: AtomicU64::new(0),
            state: Mutex::new((JobState::Running, None)),
        });
        jobs.push_back(job.clone());
        // Forget the oldest finished jobs beyond the limit.
        while jobs.len() > KEEP_JOBS {
            match jobs
                .iter()
                .position(|j| !matches!(j.state.lock().expect("job state").0, JobState::Running))
            {
                Some(i) => {
                    jobs.remove(i);
                }
                None => break,
            }
        }
        Ok(job)
    }

    fn get(&self, id: &str) -> Option<Arc<Job>> {
        self.jobs
            .lock()
            .expect("jobs")
            .iter()
            .find(|j| j.id == id)
            .cloned()
    }

    fn list(&self) -> Vec<Arc<Job>> {
        self.jobs.lock().expect("jobs").iter().cloned().collect()
    }
}

#[derive(Clone)]
struct Ctx {
    engine: Arc<Engine>,
    jobs: Arc<Jobs>,
}

/// Routes of the offline query API (served by the query server).
pub fn routes(engine: Arc<Engine>) -> Router {
    Router::new()
        .route("/api/v1/query_offline", post(query_offline))
        .route("/api/v1/jobs", get(list_jobs))
        .route("/api/v1/jobs/{id}", get(get_job))
        .with_state(Ctx {
            engine,
            jobs: Arc::new(Jobs::default()),
        })
}

fn bad(code: &'static str, message: impl Into<String>) -> HttpError {
    HttpError::coded(ErrorKind::InvalidRequest, code, message)
}

async fn list_jobs(State(ctx): State<Ctx>) -> Response {
    let jobs: Vec<Value> = ctx.jobs.list().iter().map(|j| j.json()).collect();
    Json(json!({ "jobs": jobs })).into_response()
}

async fn get_job(State(ctx): State<Ctx>, Path(id): Path<String>) -> Response {
    match ctx.jobs.get(&id) {
        Some(j) => Json(j.json()).into_response(),
        None => error_response(HttpError::coded(ErrorKind::UnknownJob, "unknown_job",
            format!("no job {id} (jobs are kept while the server runs, the last {KEEP_JOBS} finished ones)"),
        )),
    }
}

/// Reads an Arrow IPC stream from a request body as it arrives.
struct SpineReader {
    body: axum::body::BodyDataStream,
    decoder: StreamDecoder,
    pending: Buffer,
    /// A batch decoded while looking for the schema.
    first: Option<RecordBatch>,
}

fn bad_arrow(e: impl std::fmt::Display) -> HttpError {
    bad(
        "invalid_arrow",
        format!("the body must be an Arrow IPC stream ({ARROW_STREAM}): {e}"),
    )
}

impl SpineReader {
    fn new(body: Body) -> Self {
        SpineReader {
            body: body.into_data_stream(),
            decoder: StreamDecoder::new(),
            pending: Buffer::from(Vec::<u8>::new()),
            first: None,
        }
    }

    async fn next(&mut self) -> Result<Option<RecordBatch>, HttpError> {
        if let Some(b) = self.first.take() {
            return Ok(Some(b));
        }
        loop {
            if !self.pending.is_empty() {
                if let Some(b) = self.decoder.decode(&mut self.pending).map_err(bad_arrow)? {
                    return Ok(Some(b));
                }
                continue;
            }
            match self.body.next().await {
                Some(Ok(bytes)) => self.pending = Buffer::from(bytes),
                Some(Err(e)) => {
                    return Err(bad("invalid_request", format!("reading the body: {e}")))
                }
                None => {
                    self.decoder.finish().map_err(bad_arrow)?;
                    return Ok(None);
                }
            }
        }
    }

    async fn schema(&mut self) -> Result<SchemaRef, HttpError> {
        loop {
            if let Some(s) = self.decoder.schema() {
                return Ok(s);
            }
            match self.next().await? {
                Some(b) => {
                    self.first = Some(b);
                }
                None => return Err(bad_arrow("no schema (empty body)")),
            }
        }
    }
}

/// Where each plan input and the time come from in the spine.
#[derive(Debug, Clone)]
struct Layout {
    inputs: Vec<usize>,
    ts: usize,
    ts_name: String,
    out_schema: SchemaRef,
}

fn layout(plan: &QueryPlan, spine: &Schema, ts_name: &str) -> Result<Layout, HttpError> {
    let mut inputs = Vec::with_capacity(plan.inputs.len());
    for q in &plan.inputs {
        let plain = q.rsplit('.').next().unwrap_or(q);
        let i = spine
            .index_of(q)
            .or_else(|_| spine.index_of(plain))
            .map_err(|_| {
                HttpError::coded(
                    ErrorKind::UnboundInputs,
                    "missing_inputs",
                    format!(
                        "the spine has no column {q} (or {plain}) for that input; its columns: {}",
                        spine
                            .fields()
                            .iter()
                            .map(|f| f.name().as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })?;
        inputs.push(i);
    }
    let ts = spine.index_of(ts_name).map_err(|_| {
        let mut e = bad(
            "invalid_request",
            format!("the spine has no timestamp column {ts_name}"),
        );
        e.details = Some(json!({"field": "timestamp_column"}));
        e
    })?;
    match spine.field(ts).data_type() {
        DataType::Timestamp(_, _)
        | DataType::Date32
        | DataType::Date64
        | DataType::Int64
        | DataType::Utf8
        | DataType::LargeUtf8 => {}
        other => {
            return Err(bad(
                "invalid_timestamp",
                format!("timestamp column {ts_name} has type {other}: use timestamps, dates, RFC 3339 strings or epoch numbers"),
            ))
        }
    }
    let mut fields: Vec<Field> = plan
        .output_schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new(
        ts_name,
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        false,
    ));
    Ok(Layout {
        inputs,
        ts,
        ts_name: ts_name.to_string(),
        out_schema: Arc::new(Schema::new(fields)),
    })
}

/// Read times (µs) of a chunk; `offset` is the chunk's first spine row.
fn times(a: &ArrayRef, name: &str, offset: u64) -> Result<Vec<i64>, HttpError> {
    let null_at = |i: usize| {
        let mut e = bad(
            "invalid_timestamp",
            format!(
                "timestamp column {name} is null at row {}",
                offset + i as u64
            ),
        );
        e.details = Some(json!({"field": name, "row": offset + i as u64}));
        e
    };
    if let Some(i) = (0..a.len()).find(|&i| a.is_null(i)) {
        return Err(null_at(i));
    }
    match a.data_type() {
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => {
            let c = arrow::compute::cast(a, &DataType::Timestamp(TimeUnit::Microsecond, None))
                .map_err(|e| bad("invalid_timestamp", format!("{name}: {e}")))?;
            Ok(c.as_primitive::<TimestampMicrosecondType>()
                .values()
                .to_vec())
        }
        _ => {
            // Epoch numbers and strings: read as the JSON APIs read them.
            let ints = matches!(a.data_type(), DataType::Int64)
                .then(|| a.as_primitive::<arrow::datatypes::Int64Type>());
            let strings = match ints {
                Some(_) => None,
                None => Some(
                    arrow::compute::cast(a, &DataType::Utf8)
                        .map_err(|e| bad("invalid_timestamp", format!("{name}: {e}")))?,
                ),
            };
            (0..a.len())
                .map(|i| {
                    let v = match (&ints, &strings) {
                        (Some(n), _) => Value::from(n.value(i)),
                        (None, Some(s)) => Value::String(s.as_string::<i32>().value(i).to_string()),
                        (None, None) => Value::Null,
                    };
                    thyme_model::values::parse_timestamp(&v).map_err(|m| {
                        let mut e = bad(
                            "invalid_timestamp",
                            format!("{name} at row {}: {m}", offset + i as u64),
                        );
                        e.details = Some(json!({"field": name, "row": offset + i as u64}));
                        e
                    })
                })
                .collect()
        }
    }
}

/// Evaluate one chunk of the spine.
fn run_chunk(
    features: &Features,
    plan: &QueryPlan,
    layout: &Layout,
    chunk: RecordBatch,
    offset: u64,
) -> Result<RecordBatch, HttpError> {
    let ts = times(chunk.column(layout.ts), &layout.ts_name, offset)?;
    let inputs: Vec<ArrayRef> = layout
        .inputs
        .iter()
        .map(|&i| chunk.column(i).clone())
        .collect();
    let out = features
        .evaluate(plan, inputs, &ts)
        .map_err(classify_http)?;
    let mut cols = out.columns().to_vec();
    cols.push(Arc::new(
        arrow::array::TimestampMicrosecondArray::from(ts).with_timezone("UTC"),
    ));
    let opts =
        arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(chunk.num_rows()));
    RecordBatch::try_new_with_options(layout.out_schema.clone(), cols, &opts)
        .map_err(|e| classify_http(Error::Internal(e.to_string())))
}

type Pending = tokio::task::JoinHandle<Result<RecordBatch, HttpError>>;

/// Decode, evaluate and write back the whole spine.
#[allow(clippy::too_many_arguments)]
async fn pump(
    mut reader: SpineReader,
    features: Arc<Features>,
    plan: QueryPlan,
    layout: Layout,
    job: Arc<Job>,
    tx: tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
) -> Result<(), HttpError> {
    let internal = |e: arrow::error::ArrowError| classify_http(Error::Internal(e.to_string()));
    let mut writer = StreamWriter::try_new(Vec::new(), &layout.out_schema).map_err(internal)?;
    let parallel = if plan.has_python() {
        1
    } else {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    };
    let plan = Arc::new(plan);
    let layout = Arc::new(layout);
    // The spine is read as fast as it arrives, whatever the evaluation's
    // pace: most HTTP clients send the whole body before they read the
    // answer, so waiting for the answer to drain before reading more would
    // stall both sides.
    let (in_tx, mut in_rx) =
        tokio::sync::mpsc::unbounded_channel::<Result<RecordBatch, HttpError>>();
    let reading = job.clone();
    tokio::spawn(async move {
        loop {
            match reader.next().await {
                Ok(Some(b)) => {
                    reading
                        .rows_in
                        .fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                    if in_tx.send(Ok(b)).is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    let _ = in_tx.send(Err(e));
                    return;
                }
            }
        }
    });
    let mut in_flight: VecDeque<Pending> = VecDeque::new();
    let mut offset = 0u64;
    let mut last_log = Instant::now();
    let flush =
        |writer: &mut StreamWriter<Vec<u8>>| bytes::Bytes::from(std::mem::take(writer.get_mut()));
    let mut out_bytes = flush(&mut writer);
    if tx.send(Ok(out_bytes)).await.is_err() {
        return Ok(());
    }
    let mut input_done = false;
    loop {
        // Keep `parallel` chunks in flight, then write the oldest.
        while !input_done && in_flight.len() < parallel {
            match in_rx.recv().await.transpose()? {
                None => input_done = true,
                Some(batch) => {
                    let mut start = 0;
                    while start < batch.num_rows() {
                        let len = CHUNK_ROWS.min(batch.num_rows() - start);
                        let chunk = batch.slice(start, len);
                        let (f, p, l) = (features.clone(), plan.clone(), layout.clone());
                        let at = offset;
                        in_flight.push_back(tokio::task::spawn_blocking(move || {
                            run_chunk(&f, &p, &l, chunk, at)
                        }));
                        offset += len as u64;
                        start += len;
                    }
                }
            }
        }
        let Some(next) = in_flight.pop_front() else {
            break;
        };
        let out = next
            .await
            .map_err(|e| classify_http(Error::Internal(e.to_string())))??;
        writer.write(&out).map_err(internal)?;
        out_bytes = flush(&mut writer);
        let done = job
            .rows_out
            .fetch_add(out.num_rows() as u64, Ordering::Relaxed)
            + out.num_rows() as u64;
        if tx.send(Ok(out_bytes)).await.is_err() {
            // The client went away.
            return Err(bad("client_gone", "the client closed the connection"));
        }
        if last_log.elapsed() > Duration::from_secs(5) {
            last_log = Instant::now();
            let secs = job.started.elapsed().as_secs_f64();
            tracing::info!(
                job = %job.id,
                rows = done,
                rows_per_s = (done as f64 / secs) as u64,
                "offline query progress"
            );
        }
    }
    writer.finish().map_err(internal)?;
    let _ = tx.send(Ok(flush(&mut writer))).await;
    Ok(())
}

fn list_param(params: &[(String, String)], name: &str) -> Vec<String> {
    params
        .iter()
        .filter(|(k, _)| k == name)
        .flat_map(|(_, v)| v.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

async fn query_offline(
    State(ctx): State<Ctx>,
    ext: Option<axum::Extension<crate::http_auth::Caller>>,
    Query(params): Query<Vec<(String, String)>>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Response {
    let outputs = list_param(&params, "outputs");
    if let Err(e) =
        crate::http_auth::require_outputs(&ctx.engine, &crate::http_auth::caller(ext), &outputs)
    {
        return error_response(e);
    }
    match start(ctx, params, headers, body).await {
        Ok(r) => r,
        Err(e) => error_response(e),
    }
}

async fn start(
    ctx: Ctx,
    params: Vec<(String, String)>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    for (k, _) in &params {
        if !["inputs", "outputs", "timestamp_column", "job", "rows"].contains(&k.as_str()) {
            return Err(bad(
                "invalid_request",
                format!("unknown parameter {k} (inputs, outputs, timestamp_column, job, rows)"),
            ));
        }
    }
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or_default();
        if !ct.starts_with(ARROW_STREAM) && !ct.starts_with("application/octet-stream") {
            return Err(HttpError::coded(
                ErrorKind::UnsupportedMediaType,
                "unsupported_media_type",
                format!("the spine is sent as an Arrow IPC stream ({ARROW_STREAM}), not {ct}"),
            ));
        }
    }
    let inputs = list_param(&params, "inputs");
    let outputs = list_param(&params, "outputs");
    let one = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let Some(ts_name) = one("timestamp_column") else {
        let mut e = bad(
            "invalid_request",
            "timestamp_column is required: the spine column with each row's time",
        );
        e.details = Some(json!({"field": "timestamp_column"}));
        return Err(e);
    };
    let total = match one("rows") {
        None => None,
        Some(r) => Some(r.parse::<u64>().map_err(|_| {
            let mut e = bad(
                "invalid_request",
                format!("rows must be a count, not {r:?}"),
            );
            e.details = Some(json!({"field": "rows"}));
            e
        })?),
    };
    let features = ctx.engine.features().clone();
    let plan = features.plan(&inputs, &outputs).map_err(classify_http)?;
    let mut reader = SpineReader::new(body);
    let spine = reader.schema().await?;
    let layout = layout(&plan, &spine, &ts_name)?;
    let job = ctx.jobs.start(one("job"), &plan, total)?;
    tracing::info!(job = %job.id, inputs = ?plan.inputs, outputs = ?plan.outputs, rows = ?total, "offline query started");
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    let job2 = job.clone();
    tokio::spawn(async move {
        let res = pump(reader, features, plan, layout, job2.clone(), tx.clone()).await;
        let secs = job2.started.elapsed().as_secs_f64();
        let rows = job2.rows_out.load(Ordering::Relaxed);
        match res {
            Ok(()) => {
                job2.finish(JobState::Done);
                tracing::info!(job = %job2.id, rows, secs, "offline query done");
            }
            Err(e) => {
                tracing::warn!(job = %job2.id, rows, code = e.code(), error = %e.message, "offline query failed");
                let msg = format!("{}: {}", e.code(), e.message);
                job2.finish(JobState::Failed {
                    code: e.code(),
                    message: e.message,
                });
                let _ = tx.send(Err(std::io::Error::other(msg))).await;
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok((
        [
            (header::CONTENT_TYPE, ARROW_STREAM.to_string()),
            (
                header::HeaderName::from_static("x-thyme-job"),
                job.id.clone(),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}
