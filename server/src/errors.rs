//! The one place where errors become SQLSTATE codes (and HTTP statuses).
//!
//! Internal failures (storage, bugs) are logged with their detail and shown
//! to clients as a generic message, never with internals.

use datafusion::error::DataFusionError;
use pgwire::error::{ErrorInfo, PgWireError};
use thyme_planner::Error;

/// A client-facing error: SQLSTATE plus message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError {
    pub sqlstate: &'static str,
    pub message: String,
}

impl ClientError {
    pub fn new(sqlstate: &'static str, message: impl Into<String>) -> Self {
        ClientError {
            sqlstate,
            message: message.into(),
        }
    }

    pub fn into_pgwire(self) -> PgWireError {
        PgWireError::UserError(Box::new(ErrorInfo::new(
            "ERROR".to_owned(),
            self.sqlstate.to_owned(),
            self.message,
        )))
    }
}

fn internal(detail: impl std::fmt::Display) -> ClientError {
    tracing::error!(%detail, "internal error");
    ClientError::new("XX000", "internal error; see the server log")
}

/// Map a planner error to what the client sees.
pub fn classify(err: Error) -> ClientError {
    let msg = err.to_string();
    match err {
        Error::Syntax(_) => ClientError::new("42601", msg),
        Error::UnknownTable(_) => ClientError::new("42P01", msg),
        Error::DuplicateTable(_) => ClientError::new("42P07", msg),
        Error::UnknownColumn { .. } => ClientError::new("42703", msg),
        Error::InvalidValue { ref dtype, .. } if dtype == "datetime" || dtype == "date" => {
            ClientError::new("22007", msg)
        }
        Error::InvalidValue { .. } => ClientError::new("22P02", msg),
        Error::InvalidDatetime(_) => ClientError::new("22007", msg),
        Error::NotNull { .. } => ClientError::new("23502", msg),
        Error::InvalidDefinition(_) => ClientError::new("42P16", msg),
        Error::InvalidRow { .. } => ClientError::new("22P02", msg),
        Error::UnknownEndpoint(_) => ClientError::new("42P01", msg),
        Error::Unsupported(_) => ClientError::new("0A000", msg),
        Error::Derived { .. } => ClientError::new("42809", msg),
        Error::InvalidParameter(_) => ClientError::new("22023", msg),
        Error::UnboundInputs(_) => ClientError::new("0A000", msg),
        Error::UnknownFeature(_) => ClientError::new("42703", msg),
        Error::Extractor { .. } => ClientError::new("38000", msg),
        Error::ExtractorTimeout { .. } => ClientError::new("57014", msg),
        Error::DataFusion(e) => classify_datafusion(e),
        Error::Storage(e) => internal(e),
        Error::Internal(e) => internal(e),
    }
}

fn classify_datafusion(e: DataFusionError) -> ClientError {
    match e {
        DataFusionError::SQL(e, _) => ClientError::new("42601", format!("syntax error: {e}")),
        DataFusionError::SchemaError(e, _) => {
            let text = e.to_string();
            match *e {
                datafusion::common::SchemaError::FieldNotFound { .. } => {
                    ClientError::new("42703", text)
                }
                datafusion::common::SchemaError::DuplicateQualifiedField { .. }
                | datafusion::common::SchemaError::DuplicateUnqualifiedField { .. }
                | datafusion::common::SchemaError::AmbiguousReference { .. } => {
                    ClientError::new("42702", text)
                }
            }
        }
        DataFusionError::Plan(m) => {
            if m.contains("table '") && m.contains("not found") {
                ClientError::new("42P01", m)
            } else if m.contains("No function matches") || m.contains("Invalid function") {
                ClientError::new("42883", m)
            } else if m.contains("Cannot infer common") || m.contains("Cannot coerce") {
                ClientError::new("42804", m)
            } else {
                ClientError::new("42601", m)
            }
        }
        DataFusionError::NotImplemented(m) => {
            ClientError::new("0A000", format!("{m} is not supported"))
        }
        DataFusionError::ArrowError(e, _) => match *e {
            arrow::error::ArrowError::CastError(m) | arrow::error::ArrowError::ParseError(m) => {
                ClientError::new("22P02", m)
            }
            arrow::error::ArrowError::DivideByZero => ClientError::new("22012", "division by zero"),
            arrow::error::ArrowError::ComputeError(m) => ClientError::new("22000", m),
            other => internal(other),
        },
        DataFusionError::Execution(m) => ClientError::new("22000", m),
        DataFusionError::External(inner) => match inner.downcast::<Error>() {
            Ok(e) => classify(*e),
            Err(inner) => internal(inner),
        },
        DataFusionError::Context(_, inner) => classify_datafusion(*inner),
        DataFusionError::Diagnostic(_, inner) => classify_datafusion(*inner),
        DataFusionError::ResourcesExhausted(m) => ClientError::new("53000", m),
        DataFusionError::Configuration(m) => ClientError::new("42601", m),
        other => internal(other),
    }
}

/// A client-facing HTTP error: status, stable code, message, and details
/// (row, field, value) when the error is about one value.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub details: Option<serde_json::Value>,
}

impl HttpError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        HttpError {
            status,
            code,
            message: message.into(),
            details: None,
        }
    }

    /// The JSON body: `{"error": {"code", "message", ...details}}`.
    pub fn body(&self) -> serde_json::Value {
        let mut e = serde_json::json!({"code": self.code, "message": self.message});
        if let (Some(serde_json::Value::Object(d)), serde_json::Value::Object(m)) =
            (&self.details, &mut e)
        {
            for (k, v) in d {
                m.insert(k.clone(), v.clone());
            }
        }
        serde_json::json!({ "error": e })
    }
}

/// An HTTP error as the response the caller gets: its status and the JSON
/// body `{"error": {"code", "message", ...}}`.
impl axum::response::IntoResponse for HttpError {
    fn into_response(self) -> axum::response::Response {
        let status = axum::http::StatusCode::from_u16(self.status)
            .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(self.body())).into_response()
    }
}

/// [`HttpError`] as a response (for handlers that return `Response`).
pub fn error_response(e: HttpError) -> axum::response::Response {
    axum::response::IntoResponse::into_response(e)
}

/// Map a planner error to what an HTTP caller sees.
pub fn classify_http(err: Error) -> HttpError {
    match err {
        Error::InvalidDefinition(m) => HttpError::new(400, "invalid_definition", m),
        Error::InvalidRow {
            message,
            row,
            field,
            value,
        } => HttpError {
            status: 400,
            code: "invalid_row",
            message,
            details: Some(serde_json::json!({"row": row, "field": field, "value": value})),
        },
        Error::UnknownEndpoint(m) => HttpError::new(404, "unknown_endpoint", m),
        e @ Error::UnknownTable(_) => HttpError::new(404, "unknown_dataset", e.to_string()),
        Error::UnboundInputs(m) => HttpError::new(400, "missing_inputs", m),
        Error::UnknownFeature(m) => HttpError::new(404, "unknown_feature", m),
        e @ Error::Extractor { .. } => HttpError::new(422, "extractor_error", e.to_string()),
        e @ Error::ExtractorTimeout { .. } => {
            HttpError::new(504, "extractor_timeout", e.to_string())
        }
        other => {
            let c = classify(other);
            match c.sqlstate {
                "XX000" => HttpError::new(500, "internal", c.message),
                "0A000" => HttpError::new(501, "unsupported", c.message),
                _ => HttpError::new(400, "bad_request", c.message),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(classify(Error::UnknownTable("t".into())).sqlstate, "42P01");
        assert_eq!(classify(Error::Syntax("x".into())).sqlstate, "42601");
        assert_eq!(classify(Error::Unsupported("x".into())).sqlstate, "0A000");
        let internal = classify(Error::Internal("secret detail".into()));
        assert_eq!(internal.sqlstate, "XX000");
        assert!(!internal.message.contains("secret"));
    }

    #[test]
    fn http_statuses() {
        assert_eq!(
            classify_http(Error::InvalidDefinition("x".into())).status,
            400
        );
        assert_eq!(
            classify_http(Error::UnknownEndpoint("x".into())).status,
            404
        );
        let e = classify_http(Error::InvalidRow {
            message: "row 2, field amount".into(),
            row: Some(2),
            field: Some("amount".into()),
            value: Some(serde_json::json!("x")),
        });
        assert_eq!(e.body()["error"]["row"], 2);
        assert_eq!(e.body()["error"]["field"], "amount");
        let internal = classify_http(Error::Internal("secret".into()));
        assert_eq!(internal.status, 500);
        assert!(!internal.message.contains("secret"));
    }
}
