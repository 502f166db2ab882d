//! HTTP listeners: the control plane (`--control-addr`: health, metrics,
//! and the `/api/v1` commit / definitions / ingestion API of
//! [`crate::control`]) and the query server (`--query-addr`: health and
//! the feature-serving API of [`crate::query`]).

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;

use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use thyme_planner::Engine;
use tokio::net::TcpListener;

/// Routes of the control plane.
pub fn control_router(
    engine: Arc<Engine>,
    pipelines: Arc<crate::supervisor::PipelineSupervisor>,
    sources: Arc<crate::sources::SourceSupervisor>,
    max_body: usize,
) -> Router {
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let exporter = Arc::new(crate::metrics::Exporter::new(
        &metrics,
        engine.clone(),
        pipelines.clone(),
        sources.clone(),
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
        .merge(crate::control::routes(engine.clone(), metrics, max_body))
        .merge(crate::http_auth::routes(engine.clone()))
        .route(
            "/api/v1/pipelines",
            get(move || {
                let pl = pipelines.clone();
                async move { Json(json!({ "pipelines": pl.status() })) }
            }),
        )
        .merge(crate::sources::routes(engine.clone(), sources))
        .merge(not_found())
        .layer(axum::middleware::from_fn_with_state(
            engine,
            crate::http_auth::authenticate,
        ))
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
        .merge(crate::query::routes(engine.clone(), limit))
        .merge(not_found())
        .layer(axum::middleware::from_fn_with_state(
            engine,
            crate::http_auth::authenticate,
        ))
}

/// Limits of the HTTP listeners (see `docs/limits.md`).
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Time a client has to send a request's headers.
    pub header_timeout: Duration,
    /// Time a request may take, its body included, until its response.
    pub request_timeout: Duration,
    /// Longest request target (path and query string), bytes.
    pub max_uri_bytes: usize,
}

/// Every error response in the JSON shape `{"error": {"code", "message"}}`:
/// axum's own rejections (405, 413, a query string that does not parse,
/// ...) come as plain text and are rewritten here; a request target over
/// the limit is 414 and a request over the time limit 408, in the same shape.
async fn guard(
    limits: HttpLimits,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if req.uri().to_string().len() > limits.max_uri_bytes {
        return json_error(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("request target longer than {} bytes", limits.max_uri_bytes),
        );
    }
    let response = match tokio::time::timeout(limits.request_timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => {
            return json_error(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request did not complete within {} s",
                    limits.request_timeout.as_secs()
                ),
            )
        }
    };
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 << 10)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let code = match status {
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::NOT_FOUND => "not_found",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    };
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_lowercase()
    } else {
        text
    };
    let mut out = json_error(status, code, message);
    for (k, v) in parts.headers.iter() {
        if k != axum::http::header::CONTENT_TYPE && k != axum::http::header::CONTENT_LENGTH {
            out.headers_mut().insert(k.clone(), v.clone());
        }
    }
    out.into_response()
}

fn json_error(status: StatusCode, code: &str, message: String) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        status,
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

/// Serve `router` until `shutdown` flips: one HTTP/1 connection per task,
/// with a deadline for the request headers (a client that stalls in them is
/// disconnected), and [`guard`] around every request.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let router = router.layer(axum::middleware::from_fn(move |req, next| {
        guard(limits, req, next)
    }));
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (socket, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = socket.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let mut stop = shutdown.clone();
        let tls = tls.clone();
        conns.spawn(async move {
            let stream = match tls {
                None => crate::tls::MaybeTls::Plain(socket),
                // HTTPS: the handshake gets the header timeout too.
                Some(acceptor) => {
                    match tokio::time::timeout(limits.header_timeout, acceptor.accept(socket)).await
                    {
                        Ok(Ok(s)) => crate::tls::MaybeTls::Tls(Box::new(s)),
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    }
                }
            };
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(64 << 10);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "HTTP connection ended with an error");
                    }
                }
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
        while conns.try_join_next().is_some() {}
    }
    while conns.join_next().await.is_some() {}
    Ok(())
}
