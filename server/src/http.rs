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
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let exporter = Arc::new(crate::metrics::Exporter::new(
        &metrics,
        engine.clone(),
        pipelines.clone(),
    ));
    health()
        .route(
            "/metrics",
            get(move || {
                let exporter = exporter.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        exporter.encode(),
                    )
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
