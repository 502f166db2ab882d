//! HTTP listeners: the control plane (`--control-addr`: health, metrics,
//! and the `/api/v1` commit / definitions / ingestion API of
//! [`crate::control`]) and the query server (`--query-addr`: health and
//! the feature-serving API of [`crate::query`]).

use std::sync::Arc;

use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use thyme_planner::Engine;
use tokio::net::TcpListener;

/// Routes of the control plane.
pub fn control_router(
    engine: Arc<Engine>,
    pipelines: Arc<crate::supervisor::PipelineSupervisor>,
) -> Router {
    let metrics = Arc::new(crate::control::Metrics::default());
    let (e, m, pl) = (engine.clone(), metrics.clone(), pipelines.clone());
    health()
        .route(
            "/metrics",
            get(move || {
                let (e, m, pl) = (e.clone(), m.clone(), pl.clone());
                async move {
                    let datasets = e.catalog().list().len();
                    let featuresets = e.registry().featuresets().len();
                    let mut out = format!(
                        "# HELP thyme_datasets Number of datasets (SQL tables).\n# TYPE thyme_datasets gauge\nthyme_datasets {datasets}\n# HELP thyme_featuresets Number of committed featuresets.\n# TYPE thyme_featuresets gauge\nthyme_featuresets {featuresets}\n"
                    );
                    m.render(&mut out);
                    render_pipelines(&pl.status(), &mut out);
                    render_extractors(&e.features().extractor_calls(), &mut out);
                    out
                }
            }),
        )
        .merge(crate::control::routes(engine, metrics))
        .route(
            "/api/v1/pipelines",
            get(move || {
                let pl = pipelines.clone();
                async move { Json(json!({ "pipelines": pl.status() })) }
            }),
        )
        .merge(not_found())
}

fn render_pipelines(status: &[crate::supervisor::Status], out: &mut String) {
    use std::fmt::Write;
    for (name, help, kind, get) in [
        (
            "thyme_pipeline_late_events_total",
            "Events older than their input's watermark (not applied; see thyme_late_events).",
            "counter",
            (|s: &crate::supervisor::Status| s.progress.late_events as f64) as fn(&_) -> f64,
        ),
        (
            "thyme_pipeline_rows_written_total",
            "Output rows written by the pipeline.",
            "counter",
            |s| s.progress.rows_written as f64,
        ),
        (
            "thyme_pipeline_lag_records",
            "Input log records not yet processed.",
            "gauge",
            |s| s.progress.lag as f64,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for s in status {
            let _ = writeln!(
                out,
                "{name}{{dataset=\"{}\",pipeline=\"{}\"}} {}",
                s.progress.dataset,
                s.progress.pipeline,
                get(s)
            );
        }
    }
}

fn render_extractors(calls: &std::collections::BTreeMap<(String, String), u64>, out: &mut String) {
    use std::fmt::Write;
    let _ = writeln!(
        out,
        "# HELP thyme_extractor_calls_total Batches each extractor computed.\n# TYPE thyme_extractor_calls_total counter"
    );
    for ((fs, ex), n) in calls {
        let _ = writeln!(
            out,
            "thyme_extractor_calls_total{{featureset=\"{fs}\",extractor=\"{ex}\"}} {n}"
        );
    }
}

fn not_found() -> Router {
    Router::new().fallback(|| async {
        crate::errors::HttpError::coded(
            thyme_error::ErrorKind::UnknownEndpoint,
            "not_found",
            "no such endpoint",
        )
    })
}

fn health() -> Router {
    Router::new().route(
        "/health",
        get(|| async { Json(json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")})) }),
    )
}

/// Routes of the query server.
pub fn query_router(engine: Arc<Engine>, limit: std::time::Duration) -> Router {
    health()
        .merge(crate::query::routes(engine, limit))
        .merge(not_found())
}

/// Serve `router` until `shutdown` flips.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        })
        .await
}
