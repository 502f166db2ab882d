//! HTTP listeners: the control plane (`--control-addr`: health, metrics;
//! the commit and ingestion APIs build on it) and the query server
//! (`--query-addr`: health; feature serving builds on it).

use std::sync::Arc;

use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use thyme_planner::Engine;
use tokio::net::TcpListener;

/// Routes of the control plane.
pub fn control_router(engine: Arc<Engine>) -> Router {
    let e = engine.clone();
    health()
        .route(
            "/metrics",
            get(move || {
                let e = e.clone();
                async move {
                    let datasets = e.catalog().list().len();
                    format!(
                        "# HELP thyme_datasets Number of committed datasets.\n# TYPE thyme_datasets gauge\nthyme_datasets {datasets}\n"
                    )
                }
            }),
        )
        .merge(not_found())
}

fn not_found() -> Router {
    Router::new().fallback(|| async {
        (
            axum::http::StatusCode::NOT_FOUND,
            Json(json!({"error": {"code": "not_found", "message": "no such endpoint"}})),
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
pub fn query_router() -> Router {
    health().merge(not_found())
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
