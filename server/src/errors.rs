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
        Error::Unsupported(_) => ClientError::new("0A000", msg),
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
}
