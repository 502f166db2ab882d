//! The query server (`--query-addr`): features and dataset rows over HTTP.
//!
//! - `GET /features?featureset=UserFeatures&uid=42[&ts=...]`: one row of a
//!   featureset, every feature, as one JSON object (`{"uid": 42,
//!   "txn_count_7d": 3, ...}`); query parameters other than `featureset`
//!   and `ts` bind the featureset's input features by name. Without `ts`
//!   the values are as of now.
//! - `POST /api/v1/query`: `{"inputs": ["UserFeatures.uid"], "outputs":
//!   ["UserFeatures"], "data": {"UserFeatures.uid": [...]}, "timestamps":
//!   [...]}` (timestamps optional: now) answers column-oriented JSON keyed
//!   by qualified feature name.
//! - `POST /api/v1/lookup`: `{"dataset": "UserInfo", "keys": {"uid": [...]},
//!   "fields": [...], "timestamps": [...]}` answers `{"data": {...},
//!   "found": [...]}`.
//! - `POST /api/v1/query_offline` (Arrow IPC in and out, streamed) and
//!   `GET /api/v1/jobs[/{id}]`: see [`crate::offline`].
//!
//! Timestamps are RFC 3339 strings or epoch numbers (s, ms or µs, as the
//! log API reads them). Evaluation that runs Python extractors happens on
//! the blocking pool, bounded by the extractor time limit, so a slow
//! extractor delays only the requests that use it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use thyme_error::ErrorKind;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use thyme_features::{json_to_array, Features, QueryPlan};
use thyme_model::values;
use thyme_planner::{Engine, Error};

use crate::errors::{classify_http, error_response, HttpError};
use crate::http_auth::{caller, require, require_outputs, Caller};
use thyme_table::roles::Privilege;

#[derive(Clone)]
struct Ctx {
    engine: Arc<Engine>,
    /// Longest a request waits for its evaluation.
    deadline: Duration,
    limit: Duration,
}

/// A JSON object with its members in the given order (the request's or
/// the declaration's), which `serde_json::Map` would sort.
fn ordered(members: impl IntoIterator<Item = (String, Value)>) -> String {
    let mut out = String::with_capacity(256);
    out.push('{');
    for (i, (k, v)) in members.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&Value::String(k).to_string());
        out.push(':');
        out.push_str(&v.to_string());
    }
    out.push('}');
    out
}

fn json_response(body: String) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// Column-oriented JSON of a batch, columns in schema order.
fn columns_json(batch: &arrow::record_batch::RecordBatch) -> String {
    let mut map = thyme_table::json_out::columns(std::slice::from_ref(batch));
    ordered(
        batch
            .schema()
            .fields()
            .iter()
            .map(|f| {
                let v = map.remove(f.name()).unwrap_or(Value::Array(vec![]));
                (f.name().clone(), v)
            })
            .collect::<Vec<_>>(),
    )
}

fn bad(code: &'static str, message: impl Into<String>) -> Response {
    error_response(HttpError::coded(ErrorKind::InvalidRequest, code, message))
}

/// Routes of the query server.
pub fn routes(engine: Arc<Engine>, limit: Duration) -> Router {
    let ctx = Ctx {
        engine: engine.clone(),
        deadline: limit + Duration::from_secs(2),
        limit,
    };
    Router::new()
        .route("/features", get(features))
        .route("/api/v1/query", post(query))
        .route("/api/v1/lookup", post(lookup))
        .with_state(ctx)
        .merge(crate::offline::routes(engine))
}

/// Run `plan` for `inputs` at `ts`: inline when only native extractors run,
/// otherwise on the blocking pool under the deadline.
async fn evaluate(
    ctx: &Ctx,
    plan: QueryPlan,
    inputs: Vec<arrow::array::ArrayRef>,
    ts: Vec<i64>,
) -> Result<arrow::record_batch::RecordBatch, HttpError> {
    let features: Arc<Features> = ctx.engine.features().clone();
    if !plan.has_python() {
        return features.evaluate(&plan, inputs, &ts).map_err(classify_http);
    }
    let names = plan.extractor_names().join(", ");
    let job = tokio::task::spawn_blocking(move || features.evaluate(&plan, inputs, &ts));
    match tokio::time::timeout(ctx.deadline, job).await {
        Ok(Ok(r)) => r.map_err(classify_http),
        Ok(Err(join)) => Err(classify_http(Error::Internal(join.to_string()))),
        Err(_) => Err(classify_http(Error::ExtractorTimeout {
            extractor: names,
            limit_ms: ctx.limit.as_millis() as u64,
        })),
    }
}

/// A timestamp given as a query parameter or JSON value.
fn parse_ts(v: &Value, what: &str) -> Result<i64, HttpError> {
    values::parse_timestamp(v).map_err(|m| {
        HttpError::new(ErrorKind::InvalidDatetime, format!("{what}: {m}"))
            .with_details(json!({"field": what, "value": v}))
    })
}

/// A query-string value as the JSON value of a feature of type `ty`.
fn param_value(ty: &thyme_model::Type, raw: &str) -> Value {
    use thyme_model::Type;
    match ty.non_optional() {
        Type::Str | Type::Datetime | Type::Date | Type::Bytes | Type::Decimal(_) => {
            Value::String(raw.to_string())
        }
        _ => serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string())),
    }
}

async fn features(
    State(ctx): State<Ctx>,
    ext: Option<axum::Extension<Caller>>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let features = ctx.engine.features();
    let graph = match features.graph() {
        Ok(g) => g,
        Err(e) => return error_response(classify_http(e)),
    };
    let mut given: HashMap<&str, &str> = HashMap::new();
    for (k, v) in &params {
        if given.insert(k, v).is_some() {
            return bad(
                "invalid_request",
                format!("query parameter {k} is given twice"),
            );
        }
    }
    let Some(fs_name) = given.remove("featureset") else {
        return bad(
            "invalid_request",
            "give the featureset: /features?featureset=Name&<input>=<value>",
        );
    };
    let Some(fs) = graph.featureset(fs_name) else {
        return error_response(HttpError::coded(
            ErrorKind::UnknownFeature,
            "unknown_featureset",
            format!("featureset {fs_name} is not committed"),
        ));
    };
    if let Err(e) = require_outputs(&ctx.engine, &caller(ext), std::slice::from_ref(&fs.name)) {
        return error_response(e);
    }
    let ts = match given.remove("ts") {
        None => chrono::Utc::now().timestamp_micros(),
        Some(raw) => {
            let v = if raw.chars().all(|c| c.is_ascii_digit() || c == '.') && !raw.is_empty() {
                serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()))
            } else {
                Value::String(raw.to_string())
            };
            match parse_ts(&v, "ts") {
                Ok(t) => t,
                Err(e) => return error_response(e),
            }
        }
    };
    let mut names: Vec<String> = Vec::with_capacity(given.len());
    let mut arrays = Vec::with_capacity(given.len());
    // Bind in declaration order, so the answer does not depend on the URL.
    for f in &fs.features {
        let Some(raw) = given.remove(f.name.as_str()) else {
            continue;
        };
        let q = format!("{}.{}", fs.name, f.name);
        let info = graph.feature(&q).expect("feature of the graph");
        match json_to_array(info, &f.name, &[param_value(&f.ty, raw)]) {
            Ok(a) => arrays.push(a),
            Err(e) => return error_response(classify_http(e)),
        }
        names.push(q);
    }
    if let Some(k) = given.keys().next() {
        return bad(
            "unknown_feature",
            format!(
                "{k} is not a feature of {} (features: {})",
                fs.name,
                fs.features
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
    let plan = match features.plan(&names, std::slice::from_ref(&fs.name)) {
        Ok(p) => p,
        Err(e) => return error_response(classify_http(e)),
    };
    let batch = match evaluate(&ctx, plan, arrays, vec![ts]).await {
        Ok(b) => b,
        Err(e) => return error_response(e),
    };
    json_response(ordered(fs.features.iter().zip(batch.columns()).map(
        |(f, col)| {
            (
                f.name.clone(),
                thyme_table::json_out::value(col.as_ref(), 0),
            )
        },
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryBody {
    inputs: Vec<String>,
    outputs: Vec<String>,
    data: Map<String, Value>,
    #[serde(default)]
    timestamps: Option<Vec<Value>>,
}

/// The body as JSON, with a 400 that says what is wrong otherwise.
fn body<T: serde::de::DeserializeOwned>(raw: &[u8], shape: &str) -> Result<T, HttpError> {
    serde_json::from_slice(raw).map_err(|e| {
        HttpError::coded(
            ErrorKind::InvalidRequest,
            "invalid_request",
            format!("the body must be {shape}: {e}"),
        )
    })
}

/// Read times: one per row, or now for every row.
fn row_times(ts: Option<&Vec<Value>>, rows: usize) -> Result<Vec<i64>, HttpError> {
    match ts {
        None => Ok(vec![chrono::Utc::now().timestamp_micros(); rows]),
        Some(ts) => {
            if ts.len() != rows {
                return Err(HttpError::coded(
                    ErrorKind::InvalidRequest,
                    "invalid_request",
                    format!("{} timestamps for {rows} rows", ts.len()),
                ));
            }
            ts.iter()
                .enumerate()
                .map(|(i, v)| parse_ts(v, &format!("timestamps[{i}]")))
                .collect()
        }
    }
}

async fn query(
    State(ctx): State<Ctx>,
    ext: Option<axum::Extension<Caller>>,
    raw: axum::body::Bytes,
) -> Response {
    let req: QueryBody = match body(
        &raw,
        r#"{"inputs": [...], "outputs": [...], "data": {...}, "timestamps": [...]}"#,
    ) {
        Ok(b) => b,
        Err(e) => return error_response(e),
    };
    if let Err(e) = require_outputs(&ctx.engine, &caller(ext), &req.outputs) {
        return error_response(e);
    }
    let features = ctx.engine.features();
    let plan = match features.plan(&req.inputs, &req.outputs) {
        Ok(p) => p,
        Err(e) => return error_response(classify_http(e)),
    };
    if let Some(extra) = req.data.keys().find(|k| !req.inputs.contains(k)) {
        return bad(
            "invalid_request",
            format!("data has a column {extra} that is not among the inputs"),
        );
    }
    let mut rows = None;
    let mut arrays = Vec::with_capacity(req.inputs.len());
    for (q, info) in req.inputs.iter().zip(plan.input_features()) {
        let values = match req.data.get(q) {
            Some(Value::Array(v)) => v,
            Some(_) => return bad("invalid_request", format!("data.{q} must be an array")),
            None => {
                return bad(
                    "missing_inputs",
                    format!("data has no column for input {q}"),
                )
            }
        };
        match rows {
            None => rows = Some(values.len()),
            Some(n) if n != values.len() => {
                return bad(
                    "invalid_request",
                    format!("data.{q} has {} values, other inputs {n}", values.len()),
                )
            }
            _ => {}
        }
        match json_to_array(info, q, values) {
            Ok(a) => arrays.push(a),
            Err(e) => return error_response(classify_http(e)),
        }
    }
    let rows = rows.unwrap_or_else(|| req.timestamps.as_ref().map_or(1, Vec::len));
    let ts = match row_times(req.timestamps.as_ref(), rows) {
        Ok(t) => t,
        Err(e) => return error_response(e),
    };
    match evaluate(&ctx, plan, arrays, ts).await {
        Ok(batch) => json_response(columns_json(&batch)),
        Err(e) => error_response(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LookupBody {
    dataset: String,
    keys: Map<String, Value>,
    #[serde(default)]
    fields: Option<Vec<String>>,
    #[serde(default)]
    timestamps: Option<Vec<Value>>,
}

async fn lookup(
    State(ctx): State<Ctx>,
    ext: Option<axum::Extension<Caller>>,
    raw: axum::body::Bytes,
) -> Response {
    let req: LookupBody = match body(
        &raw,
        r#"{"dataset": "Name", "keys": {"key": [...]}, "fields": [...], "timestamps": [...]}"#,
    ) {
        Ok(b) => b,
        Err(e) => return error_response(e),
    };
    if let Err(e) = require(&ctx.engine, &caller(ext), Privilege::Select, &req.dataset) {
        return error_response(e);
    }
    let rows = req
        .keys
        .values()
        .next()
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let ts = match row_times(req.timestamps.as_ref(), rows) {
        Ok(t) => t,
        Err(e) => return error_response(e),
    };
    let features = ctx.engine.features().clone();
    let res = tokio::task::spawn_blocking(move || {
        features.lookup_json(&req.dataset, &req.keys, req.fields.as_deref(), &ts)
    })
    .await;
    match res {
        Ok(Ok((batch, found))) => json_response(format!(
            "{{\"data\":{},\"found\":{}}}",
            columns_json(&batch),
            json!(found)
        )),
        Ok(Err(e)) => error_response(classify_http(e)),
        Err(e) => error_response(classify_http(Error::Internal(e.to_string()))),
    }
}
