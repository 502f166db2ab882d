//! The one place where errors become SQLSTATE codes and HTTP statuses.
//!
//! Every crate reports an [`ErrorKind`] with its errors; [`sqlstate`] and
//! [`http_status`] map each kind, with exhaustive matches (a new kind does
//! not compile until it is mapped here). Nothing else in the server names a
//! SQLSTATE or builds an HTTP status: handlers say what kind of failure
//! they report ([`ClientError::new`], [`HttpError::new`]), optionally with
//! a more specific stable HTTP code ([`HttpError::with_code`]).
//!
//! Internal failures (storage, bugs) are logged with their detail and
//! shown to clients as a generic message, never with internals.

use pgwire::error::{ErrorInfo, PgWireError};
use thyme_error::ErrorKind;
use thyme_table::Error;

/// The SQLSTATE a client gets for an error of `kind`.
pub fn sqlstate(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Syntax => "42601",
        ErrorKind::InvalidQuery => "42601",
        ErrorKind::Unsupported => "0A000",
        ErrorKind::UnknownFunction => "42883",
        ErrorKind::TypeMismatch => "42804",
        ErrorKind::InvalidParameter => "22023",
        ErrorKind::InvalidRequest => "08P01",
        ErrorKind::ProtocolViolation => "08P01",
        ErrorKind::UnknownTable => "42P01",
        ErrorKind::DuplicateTable => "42P07",
        ErrorKind::UnknownColumn => "42703",
        ErrorKind::AmbiguousColumn => "42702",
        ErrorKind::UnknownFeature => "42703",
        ErrorKind::UnknownEndpoint => "42P01",
        ErrorKind::UnknownJob => "42704",
        ErrorKind::InvalidValue => "22P02",
        ErrorKind::InvalidDatetime => "22007",
        ErrorKind::NotNull => "23502",
        ErrorKind::InvalidRow => "22P02",
        ErrorKind::DivisionByZero => "22012",
        ErrorKind::NumericOverflow => "22003",
        ErrorKind::InvalidRegex => "2201B",
        ErrorKind::DataException => "22000",
        ErrorKind::InvalidDefinition => "42P16",
        ErrorKind::ReadOnly => "42809",
        ErrorKind::UnboundInputs => "0A000",
        ErrorKind::InFailedTransaction => "25P02",
        ErrorKind::ActiveTransaction => "25001",
        ErrorKind::NoActiveTransaction => "25P01",
        ErrorKind::ReadOnlyTransaction => "25006",
        ErrorKind::InvalidPassword => "28P01",
        ErrorKind::InvalidAuthorization => "28000",
        ErrorKind::InsufficientPrivilege => "42501",
        ErrorKind::UnknownRole => "42704",
        ErrorKind::DuplicateRole => "42710",
        ErrorKind::UserCode => "38000",
        ErrorKind::UserCodeTimeout => "57014",
        ErrorKind::Conflict => "42710",
        ErrorKind::UnsupportedMediaType => "0A000",
        ErrorKind::LimitExceeded => "54000",
        ErrorKind::TooComplex => "54001",
        ErrorKind::Canceled => "57014",
        ErrorKind::Timeout => "57014",
        ErrorKind::ResourcesExhausted => "53200",
        ErrorKind::Unavailable => "57P03",
        ErrorKind::Storage => "XX000",
        ErrorKind::Internal => "XX000",
    }
}

/// The HTTP status and default stable code (`{"error": {"code"}}`) for an
/// error of `kind`: 4xx for the caller's mistakes, 5xx for the server's.
pub fn http_status(kind: ErrorKind) -> (u16, &'static str) {
    match kind {
        ErrorKind::Syntax => (400, "syntax_error"),
        ErrorKind::InvalidQuery => (400, "invalid_query"),
        ErrorKind::Unsupported => (501, "unsupported"),
        ErrorKind::UnknownFunction => (400, "unknown_function"),
        ErrorKind::TypeMismatch => (400, "type_mismatch"),
        ErrorKind::InvalidParameter => (400, "invalid_parameter"),
        ErrorKind::InvalidRequest => (400, "invalid_request"),
        ErrorKind::ProtocolViolation => (400, "invalid_request"),
        ErrorKind::UnknownTable => (404, "unknown_dataset"),
        ErrorKind::DuplicateTable => (400, "duplicate_dataset"),
        ErrorKind::UnknownColumn => (400, "unknown_column"),
        ErrorKind::AmbiguousColumn => (400, "ambiguous_column"),
        ErrorKind::UnknownFeature => (404, "unknown_feature"),
        ErrorKind::UnknownEndpoint => (404, "unknown_endpoint"),
        ErrorKind::UnknownJob => (404, "unknown_job"),
        ErrorKind::InvalidValue => (400, "invalid_value"),
        ErrorKind::InvalidDatetime => (400, "invalid_timestamp"),
        ErrorKind::NotNull => (400, "not_null"),
        ErrorKind::InvalidRow => (400, "invalid_row"),
        ErrorKind::DivisionByZero => (400, "division_by_zero"),
        ErrorKind::NumericOverflow => (400, "numeric_overflow"),
        ErrorKind::InvalidRegex => (400, "invalid_regular_expression"),
        ErrorKind::DataException => (400, "data_exception"),
        ErrorKind::InvalidDefinition => (400, "invalid_definition"),
        ErrorKind::ReadOnly => (400, "read_only"),
        ErrorKind::UnboundInputs => (400, "missing_inputs"),
        ErrorKind::InFailedTransaction => (409, "in_failed_transaction"),
        ErrorKind::ActiveTransaction => (409, "active_transaction"),
        ErrorKind::NoActiveTransaction => (409, "no_active_transaction"),
        ErrorKind::ReadOnlyTransaction => (409, "read_only_transaction"),
        ErrorKind::InvalidPassword => (401, "unauthorized"),
        ErrorKind::InvalidAuthorization => (401, "unauthorized"),
        ErrorKind::InsufficientPrivilege => (403, "forbidden"),
        ErrorKind::UnknownRole => (404, "unknown_role"),
        ErrorKind::DuplicateRole => (409, "duplicate_role"),
        ErrorKind::UserCode => (422, "extractor_error"),
        ErrorKind::UserCodeTimeout => (504, "extractor_timeout"),
        ErrorKind::Conflict => (409, "conflict"),
        ErrorKind::UnsupportedMediaType => (415, "unsupported_media_type"),
        ErrorKind::LimitExceeded => (413, "too_large"),
        ErrorKind::TooComplex => (400, "too_complex"),
        ErrorKind::Canceled => (499, "canceled"),
        ErrorKind::Timeout => (504, "timeout"),
        ErrorKind::ResourcesExhausted => (503, "resources_exhausted"),
        ErrorKind::Unavailable => (503, "unavailable"),
        ErrorKind::Storage => (500, "internal"),
        ErrorKind::Internal => (500, "internal"),
    }
}

/// The message of an internal error: the detail goes to the log.
fn internal_message(kind: ErrorKind, detail: &dyn std::fmt::Display) -> String {
    tracing::error!(?kind, %detail, "internal error");
    "internal error; see the server log".to_string()
}

/// A client-facing pgwire error: its kind (hence its SQLSTATE) and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ClientError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        let message = message.into();
        let message = if kind.is_internal() {
            internal_message(kind, &message)
        } else {
            message
        };
        ClientError { kind, message }
    }

    pub fn sqlstate(&self) -> &'static str {
        sqlstate(self.kind)
    }

    /// The error as a `FATAL` one: the connection ends (authentication).
    pub fn into_pgwire_fatal(self) -> PgWireError {
        PgWireError::UserError(Box::new(ErrorInfo::new(
            "FATAL".to_owned(),
            self.sqlstate().to_owned(),
            self.message,
        )))
    }

    pub fn into_pgwire(self) -> PgWireError {
        PgWireError::UserError(Box::new(ErrorInfo::new(
            "ERROR".to_owned(),
            self.sqlstate().to_owned(),
            self.message,
        )))
    }
}

/// A warning for a pgwire client (SQLSTATE 01000), sent as a notice.
pub fn warning(message: String) -> pgwire::messages::response::NoticeResponse {
    ErrorInfo::new("WARNING".to_owned(), "01000".to_owned(), message).into()
}

/// Map a Thyme error to what a pgwire client sees.
pub fn classify(err: Error) -> ClientError {
    let kind = err.kind();
    if kind.is_internal() {
        return ClientError {
            kind,
            message: internal_message(kind, &err),
        };
    }
    ClientError {
        kind,
        message: err.client_message(),
    }
}

/// A client-facing HTTP error: its kind (hence its status), a stable code,
/// the message, and details (row, field, value) when it is about one value.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpError {
    pub kind: ErrorKind,
    code: Option<&'static str>,
    pub message: String,
    pub details: Option<serde_json::Value>,
}

impl HttpError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        let message = message.into();
        let message = if kind.is_internal() {
            internal_message(kind, &message)
        } else {
            message
        };
        HttpError {
            kind,
            code: None,
            message,
            details: None,
        }
    }

    /// [`HttpError::new`] with a more specific code ([`HttpError::with_code`]).
    pub fn coded(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        HttpError::new(kind, message).with_code(code)
    }

    /// Details merged into the error object (`field`, `value`, ...).
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }

    /// A more specific stable code than the kind's (`malformed_json` for an
    /// invalid request); the status stays the kind's.
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    pub fn status(&self) -> u16 {
        http_status(self.kind).0
    }

    pub fn code(&self) -> &'static str {
        self.code.unwrap_or(http_status(self.kind).1)
    }

    /// The JSON body: `{"error": {"code", "message", ...details}}`.
    pub fn body(&self) -> serde_json::Value {
        let mut e = serde_json::json!({"code": self.code(), "message": self.message});
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
        let status = axum::http::StatusCode::from_u16(self.status())
            .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(self.body())).into_response()
    }
}

/// [`HttpError`] as a response (for handlers that return `Response`).
pub fn error_response(e: HttpError) -> axum::response::Response {
    axum::response::IntoResponse::into_response(e)
}

/// Map a Thyme error to what an HTTP caller sees.
pub fn classify_http(err: Error) -> HttpError {
    match err {
        Error::InvalidRow {
            message,
            row,
            field,
            value,
        } => HttpError {
            kind: ErrorKind::InvalidRow,
            code: None,
            message,
            details: Some(serde_json::json!({"row": row, "field": field, "value": value})),
        },
        other => {
            let c = classify(other);
            HttpError {
                kind: c.kind,
                code: None,
                message: c.message,
                details: None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind has one SQLSTATE and one HTTP status (the maps are
    /// exhaustive matches, so a kind cannot be left out); client mistakes
    /// are 4xx, the server's faults 5xx, internal SQLSTATEs only for
    /// internal kinds.
    #[test]
    fn every_kind_maps_to_one_sqlstate_and_one_status() {
        for &k in ErrorKind::ALL {
            let state = sqlstate(k);
            assert_eq!(state.len(), 5, "{k:?}");
            assert!(state
                .chars()
                .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()));
            let (status, code) = http_status(k);
            assert!((400..600).contains(&status), "{k:?}");
            assert!(!code.is_empty() && code.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
            assert_eq!(state == "XX000", k.is_internal(), "{k:?}");
            assert_eq!(status == 500, k.is_internal(), "{k:?}");
        }
    }

    #[test]
    fn codes() {
        assert_eq!(
            classify(Error::UnknownTable("t".into())).sqlstate(),
            "42P01"
        );
        assert_eq!(classify(Error::Syntax("x".into())).sqlstate(), "42601");
        assert_eq!(classify(Error::Unsupported("x".into())).sqlstate(), "0A000");
        let internal = classify(Error::Internal("secret detail".into()));
        assert_eq!(internal.sqlstate(), "XX000");
        assert!(!internal.message.contains("secret"));
        let wrapped = Error::DataFusion(datafusion::error::DataFusionError::External(Box::new(
            Error::Derived {
                table: "t".into(),
                by: "p".into(),
            },
        )));
        assert_eq!(classify(wrapped).sqlstate(), "42809");
    }

    #[test]
    fn http_statuses() {
        assert_eq!(
            classify_http(Error::InvalidDefinition("x".into())).status(),
            400
        );
        assert_eq!(
            classify_http(Error::UnknownEndpoint("x".into())).status(),
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
        assert_eq!(internal.status(), 500);
        assert!(!internal.message.contains("secret"));
        let specific = HttpError::new(ErrorKind::InvalidRequest, "x").with_code("malformed_json");
        assert_eq!(
            (specific.status(), specific.code()),
            (400, "malformed_json")
        );
    }
}
