//! Authentication of HTTP requests and the privilege checks of the HTTP
//! APIs.
//!
//! While no role can log in with a password, every request is trusted
//! (the embedded default). Otherwise every request but `GET /health`
//! carries `Authorization: Bearer <token>` (a token from
//! `POST /api/v1/tokens`) or `Authorization: Basic` with a role's name and
//! password (slower: the password is hashed each time); without either it
//! is 401. Handlers then check the caller's privileges
//! ([`require`], [`require_create`]) as SQL does: `SELECT` on a featureset
//! or dataset to read it, `INSERT` on a dataset to log into it, `CREATE` to
//! commit definitions.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use thyme_error::ErrorKind;
use thyme_planner::Engine;
use thyme_table::roles::{Principal, Privilege};

use crate::errors::{classify_http, error_response, HttpError};

/// Who sent the request (a request extension set by [`authenticate`]).
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

fn unauthorized(message: &str) -> Response {
    let mut r = error_response(HttpError::new(ErrorKind::InvalidAuthorization, message));
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"thyme\""),
    );
    r
}

/// The principal of a request's credentials, if they are valid.
fn credentials(engine: &Engine, headers: &HeaderMap) -> Result<Principal, &'static str> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err("authentication required: send Authorization: Bearer <token>");
    };
    let value = value
        .to_str()
        .map_err(|_| "malformed Authorization header")?;
    let (scheme, rest) = value
        .split_once(' ')
        .ok_or("malformed Authorization header")?;
    let roles = engine.roles();
    if scheme.eq_ignore_ascii_case("bearer") {
        return roles
            .token_role(rest.trim())
            .filter(|r| r.login)
            .map(|r| Principal::role(r.name.clone()))
            .ok_or("invalid or revoked token");
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = STANDARD
            .decode(rest.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or("malformed Basic credentials")?;
        let (user, password) = decoded
            .split_once(':')
            .ok_or("malformed Basic credentials")?;
        return roles
            .check_password(user, password)
            .map(|r| Principal::role(r.name.clone()))
            .ok_or("password authentication failed");
    }
    Err("unsupported authorization scheme (use Bearer or Basic)")
}

/// The middleware: attach the [`Caller`] or answer 401.
pub async fn authenticate(
    axum::extract::State(engine): axum::extract::State<Arc<Engine>>,
    mut req: Request,
    next: Next,
) -> Response {
    if !engine.roles().auth_required() {
        req.extensions_mut()
            .insert(Caller(Principal::trusted("thyme")));
        return next.run(req).await;
    }
    if req.uri().path() == "/health" {
        return next.run(req).await;
    }
    let basic = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.len() > 6 && v[..6].eq_ignore_ascii_case("basic "));
    let who = if basic {
        // Basic credentials cost a password hash: off the I/O threads.
        let e2 = engine.clone();
        let headers = req.headers().clone();
        tokio::task::spawn_blocking(move || credentials(&e2, &headers))
            .await
            .unwrap_or(Err("authentication failed"))
    } else {
        credentials(&engine, req.headers())
    };
    match who {
        Ok(p) => {
            req.extensions_mut().insert(Caller(p));
            next.run(req).await
        }
        Err(m) => unauthorized(m),
    }
}

/// The caller of a request. Without the middleware's extension (a route
/// outside it) the caller has no privileges.
pub fn caller(ext: Option<axum::Extension<Caller>>) -> Principal {
    ext.map_or_else(|| Principal::role(""), |e| e.0 .0.clone())
}

/// Check `privilege` on `table` (an SQL or committed name).
pub fn require(
    engine: &Engine,
    who: &Principal,
    privilege: Privilege,
    table: &str,
) -> Result<(), HttpError> {
    engine
        .roles()
        .check(who, privilege, table)
        .map_err(classify_http)
}

/// Check `SELECT` on the featuresets of feature outputs
/// (`Featureset.feature` or `Featureset`).
pub fn require_outputs(
    engine: &Engine,
    who: &Principal,
    outputs: &[String],
) -> Result<(), HttpError> {
    if who.trusted {
        return Ok(());
    }
    for o in outputs {
        let fs = o.split('.').next().unwrap_or(o);
        require(engine, who, Privilege::Select, fs)?;
    }
    Ok(())
}

/// Check `CREATE` on the database (commits of definitions).
pub fn require_create(engine: &Engine, who: &Principal, what: &str) -> Result<(), HttpError> {
    engine
        .roles()
        .check_create(who, what)
        .map_err(classify_http)
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    /// The role the token acts as (default: the caller).
    #[serde(default)]
    role: Option<String>,
    /// What the token is for.
    #[serde(default)]
    name: String,
}

/// `POST /api/v1/tokens` (a new token: shown once), `GET /api/v1/tokens`,
/// `DELETE /api/v1/tokens/{id}`. A role manages its own tokens; a
/// superuser any role's.
pub fn routes(engine: Arc<Engine>) -> axum::Router {
    use axum::extract::{Path, State};
    use axum::routing::{delete, get};
    use axum::Json;
    use serde_json::json;

    async fn create(
        State(engine): State<Arc<Engine>>,
        ext: Option<axum::Extension<Caller>>,
        body: axum::body::Bytes,
    ) -> Response {
        let who = caller(ext);
        let req: NewToken =
            match serde_json::from_slice(if body.is_empty() { b"{}" } else { &body }) {
                Ok(r) => r,
                Err(e) => {
                    return error_response(HttpError::coded(
                        ErrorKind::InvalidRequest,
                        "invalid_request",
                        format!("invalid token request (expected {{\"role\", \"name\"}}): {e}"),
                    ))
                }
            };
        let role = req.role.unwrap_or_else(|| who.name.clone());
        if role != who.name {
            if let Err(e) = engine
                .roles()
                .check_superuser(&who, "creating a token for another role")
            {
                return error_response(classify_http(e));
            }
        }
        match engine.roles().create_token(&role, &req.name) {
            Ok((secret, t)) => Json(json!({
                "token": secret,
                "id": t.id,
                "role": t.role,
                "name": t.name,
            }))
            .into_response(),
            Err(e) => error_response(classify_http(e)),
        }
    }

    async fn list(
        State(engine): State<Arc<Engine>>,
        ext: Option<axum::Extension<Caller>>,
    ) -> Response {
        let who = caller(ext);
        let all = engine.roles().check_superuser(&who, "").is_ok();
        let tokens = engine.roles().tokens((!all).then_some(who.name.as_str()));
        let out: Vec<_> = tokens
            .iter()
            .map(
                |t| json!({"id": t.id, "role": t.role, "name": t.name, "created_us": t.created_us}),
            )
            .collect();
        Json(json!({ "tokens": out })).into_response()
    }

    async fn revoke(
        State(engine): State<Arc<Engine>>,
        ext: Option<axum::Extension<Caller>>,
        Path(id): Path<String>,
    ) -> Response {
        let who = caller(ext);
        let all = engine.roles().check_superuser(&who, "").is_ok();
        match engine
            .roles()
            .drop_token(&id, (!all).then_some(who.name.as_str()))
        {
            Ok(true) => Json(json!({ "revoked": id })).into_response(),
            Ok(false) => error_response(HttpError::coded(
                ErrorKind::UnknownFeature,
                "unknown_token",
                format!("no token {id} (of yours)"),
            )),
            Err(e) => error_response(classify_http(e)),
        }
    }

    axum::Router::new()
        .route("/api/v1/tokens", get(list).post(create))
        .route("/api/v1/tokens/{id}", delete(revoke))
        .with_state(engine)
}
