//! The control plane's API (`--control-addr`, under `/api/v1`):
//!
//! - `POST /api/v1/commit`: validate and store definitions (the payload of
//!   `docs/commit-payload.md`), atomically;
//! - `GET /api/v1/datasets[/{name}]`, `/api/v1/featuresets[/{name}]`,
//!   `/api/v1/lineage`, `/api/v1/commits`: what is committed;
//! - `GET /api/v1/datasets/{name}/inspect?n=10`: the newest `n` rows (current
//!   rows of a keyed dataset, events of a keyless one), column-oriented;
//! - `POST /api/v1/log`: webhook ingestion, Fennel's shape
//!   `{"webhook", "endpoint", "data": {column: [values]}}`.
//!
//! Every error is JSON `{"error": {"code", "message"}}` with a 4xx status
//! for the caller's mistakes (see `errors::classify_http`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use thyme_planner::Engine;
use thyme_table::registry::{describe_dataset, describe_featureset};

use thyme_error::ErrorKind;

use crate::errors::{classify_http, error_response, HttpError};
use crate::http_auth::{caller, require, require_create, Caller};
use crate::metrics::Metrics;
use thyme_table::roles::Privilege;

#[derive(Clone)]
struct Ctx {
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
}

/// The `/api/v1` routes.
pub fn routes(engine: Arc<Engine>, metrics: Arc<Metrics>, max_body: usize) -> Router {
    Router::new()
        .route("/api/v1/commit", post(commit))
        .route("/api/v1/log", post(log))
        .route("/api/v1/datasets", get(datasets))
        .route("/api/v1/datasets/{name}", get(dataset))
        .route("/api/v1/datasets/{name}/inspect", get(inspect))
        .route("/api/v1/featuresets", get(featuresets))
        .route("/api/v1/featuresets/{name}", get(featureset))
        .route("/api/v1/lineage", get(lineage))
        .route("/api/v1/commits", get(commits))
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .with_state(Ctx { engine, metrics })
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, HttpError> {
    serde_json::from_slice(body).map_err(|e| {
        let code = if e.is_syntax() || e.is_eof() {
            "malformed_json"
        } else {
            "invalid_request"
        };
        HttpError::coded(ErrorKind::InvalidRequest, code, format!("{what}: {e}"))
    })
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> thyme_planner::Result<T> + Send + 'static,
) -> Result<T, HttpError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(classify_http(e)),
        Err(e) => {
            tracing::error!(error = %e, "request task failed");
            Err(HttpError::coded(
                ErrorKind::Internal,
                "internal",
                "internal error; see the server log",
            ))
        }
    }
}

async fn commit(
    State(ctx): State<Ctx>,
    ext: Option<axum::Extension<Caller>>,
    body: Bytes,
) -> Response {
    let who = caller(ext);
    if let Err(e) = require_create(&ctx.engine, &who, "committing definitions") {
        return error_response(e);
    }
    let payload: thyme_model::Commit = match parse_json(&body, "invalid commit payload") {
        Ok(p) => p,
        Err(e) => return error_response(e),
    };
    let python = ctx.engine.features().python().cloned();
    let (payload, checked) = match blocking(move || {
        let r = check_python(&payload, python.as_ref());
        Ok((payload, r))
    })
    .await
    {
        Ok(x) => x,
        Err(e) => return error_response(e),
    };
    if let Err(e) = checked {
        return error_response(e);
    }
    let registry = ctx.engine.registry().clone();
    match blocking(move || registry.commit(payload)).await {
        Ok(summary) => {
            ctx.metrics.committed();
            tracing::info!(
                commit = summary.commit,
                created = summary.created.len(),
                updated = summary.updated.len(),
                "commit applied"
            );
            Json(summary).into_response()
        }
        Err(e) => error_response(e),
    }
}

#[derive(serde::Deserialize)]
struct LogRequest {
    webhook: String,
    endpoint: String,
    data: Map<String, Value>,
}

async fn log(
    State(ctx): State<Ctx>,
    ext: Option<axum::Extension<Caller>>,
    body: Bytes,
) -> Response {
    let who = caller(ext);
    let req: LogRequest = match parse_json(
        &body,
        "invalid log request (expected {\"webhook\", \"endpoint\", \"data\": {column: [values]}})",
    ) {
        Ok(r) => r,
        Err(e) => {
            ctx.metrics.request_rejected();
            return error_response(e);
        }
    };
    let registry = ctx.engine.registry().clone();
    if !who.trusted {
        for (_, spec) in registry
            .routes(&req.webhook, &req.endpoint)
            .unwrap_or_default()
        {
            if let Err(e) = require(&ctx.engine, &who, Privilege::Insert, &spec.name) {
                ctx.metrics.request_rejected();
                return error_response(e);
            }
        }
    }
    match blocking(move || {
        thyme_table::webhook::ingest(&registry, &req.webhook, &req.endpoint, &req.data)
    })
    .await
    {
        Ok(done) => {
            ctx.metrics.request_stored();
            for d in &done {
                ctx.metrics.ingested(&d.dataset, d.rows as u64);
            }
            Json(json!({"datasets": done})).into_response()
        }
        Err(e) => {
            ctx.metrics.request_rejected();
            error_response(e)
        }
    }
}

async fn datasets(State(ctx): State<Ctx>) -> Json<Value> {
    let list: Vec<Value> = ctx
        .engine
        .registry()
        .datasets()
        .iter()
        .map(describe_dataset)
        .collect();
    Json(json!({ "datasets": list }))
}

async fn dataset(State(ctx): State<Ctx>, Path(name): Path<String>) -> Response {
    match ctx.engine.registry().dataset(&name) {
        Some(d) => Json(describe_dataset(&d)).into_response(),
        None => error_response(HttpError::coded(
            ErrorKind::UnknownTable,
            "unknown_dataset",
            format!("no committed dataset named {name}"),
        )),
    }
}

#[derive(serde::Deserialize)]
struct InspectParams {
    n: Option<usize>,
}

/// Most rows `inspect` returns.
const INSPECT_MAX: usize = 10_000;

async fn inspect(
    State(ctx): State<Ctx>,
    ext: Option<axum::Extension<Caller>>,
    Path(name): Path<String>,
    axum::extract::Query(params): axum::extract::Query<InspectParams>,
) -> Response {
    if let Err(e) = require(&ctx.engine, &caller(ext), Privilege::Select, &name) {
        return error_response(e);
    }
    let Some(stored) = ctx.engine.registry().dataset(&name) else {
        return error_response(HttpError::coded(
            ErrorKind::UnknownTable,
            "unknown_dataset",
            format!("no committed dataset named {name}"),
        ));
    };
    let def = &stored.definition;
    let n = params.n.unwrap_or(10).min(INSPECT_MAX);
    let ts = thyme_model::validate::timestamp_field(def)
        .map(|f| f.name.clone())
        .unwrap_or_default();
    // Names are validated identifiers, so quoting them is enough.
    let sql = format!(
        "SELECT * FROM \"{}\" ORDER BY \"{ts}\" DESC LIMIT {n}",
        thyme_model::snake_case(&def.name)
    );
    match ctx.engine.session().query(&sql).await {
        Ok(batches) => {
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            Json(json!({
                "dataset": def.name,
                "rows": rows,
                "data": thyme_table::json_out::columns(&batches),
            }))
            .into_response()
        }
        Err(e) => error_response(classify_http(e)),
    }
}

async fn featuresets(State(ctx): State<Ctx>) -> Json<Value> {
    let list: Vec<Value> = ctx
        .engine
        .registry()
        .featuresets()
        .iter()
        .map(describe_featureset)
        .collect();
    Json(json!({ "featuresets": list }))
}

async fn featureset(State(ctx): State<Ctx>, Path(name): Path<String>) -> Response {
    let found = ctx.engine.registry().featureset(&name);
    match found {
        Some(f) => Json(describe_featureset(&f)).into_response(),
        None => error_response(HttpError::coded(
            ErrorKind::UnknownFeature,
            "unknown_featureset",
            format!("no committed featureset named {name}"),
        )),
    }
}

async fn lineage(State(ctx): State<Ctx>) -> Json<Value> {
    Json(ctx.engine.registry().lineage())
}

async fn commits(State(ctx): State<Ctx>) -> Response {
    let registry = ctx.engine.registry().clone();
    match blocking(move || registry.commits()).await {
        Ok(list) => Json(json!({ "commits": list })).into_response(),
        Err(e) => error_response(e),
    }
}

/// Refuse shipped Python that would fail in the server: code that does not
/// compile, or whose module imports do not resolve in the server's
/// interpreter (checked here, before anything is stored).
fn check_python(
    payload: &thyme_model::Commit,
    python: Option<&Arc<dyn thyme_table::udf::PythonRuntime>>,
) -> Result<(), HttpError> {
    use thyme_model::payload::{ExprOrFunc, ExtractorKind, Func, Node};
    let mut funcs: Vec<(String, Func, String)> = Vec::new();
    for d in &payload.datasets {
        for p in &d.pipelines {
            let imports = p
                .env
                .as_ref()
                .and_then(|e| e.imports.clone())
                .unwrap_or_default();
            let what = |f: &Func| {
                format!(
                    "pipeline {} (dataset {}), function {}",
                    p.name, d.name, f.name
                )
            };
            for n in &p.nodes {
                let mut found: Vec<&Func> = Vec::new();
                match n {
                    Node::Filter {
                        predicate: ExprOrFunc::Func { func },
                        ..
                    } => found.push(func),
                    Node::Assign { columns, .. } => {
                        for c in columns.values() {
                            if let ExprOrFunc::Func { func } = &c.value {
                                found.push(func);
                            }
                        }
                    }
                    Node::Transform { func, .. } => found.push(func),
                    _ => {}
                }
                for f in found {
                    funcs.push((what(f), f.clone(), imports.clone()));
                }
            }
        }
    }
    for fs in &payload.featuresets {
        for e in &fs.extractors {
            if e.kind != ExtractorKind::Python {
                continue;
            }
            let Some(source) = &e.source else { continue };
            let imports = e
                .env
                .as_ref()
                .and_then(|e| e.imports.clone())
                .unwrap_or_default();
            let f = Func {
                name: e.name.clone(),
                source: source.clone(),
                kind: "def".into(),
            };
            funcs.push((format!("extractor {}.{}", fs.name, e.name), f, imports));
        }
    }
    if funcs.is_empty() {
        return Ok(());
    }
    let Some(python) = python else {
        return Err(HttpError::new(
            ErrorKind::InvalidDefinition,
            format!(
                "{} ships Python code, and this server has no embedded Python (see its log at start)",
                funcs[0].0
            ),
        ));
    };
    for (what, f, imports) in &funcs {
        if let Err(problem) = python.check(f, imports) {
            return Err(HttpError::new(
                ErrorKind::InvalidDefinition,
                format!(
                    "{what}: {problem}. The server runs shipped code with {}: install the package \
                     there, or start the server with VIRTUAL_ENV set to an environment that has it \
                     (THYME_PYTHONPATH adds directories)",
                    python.describe()
                ),
            )
            .with_details(serde_json::json!({"definition": what})));
        }
    }
    Ok(())
}
