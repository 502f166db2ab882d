//! The error of the table layer, shared by the crates above it (stream
//! engine, feature server, SQL planner). Messages are written for users;
//! [`Error::kind`] says what kind of failure each is, and the server maps
//! kinds to SQLSTATEs and HTTP statuses in one place.

use datafusion::error::DataFusionError;
use thyme_error::{ErrorExt, ErrorKind};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// SQL that does not parse.
    #[error("syntax error: {0}")]
    Syntax(String),
    #[error("relation \"{0}\" does not exist")]
    UnknownTable(String),
    #[error("relation \"{0}\" already exists")]
    DuplicateTable(String),
    #[error("column \"{column}\" of relation \"{table}\" does not exist")]
    UnknownColumn { table: String, column: String },
    /// A value that does not fit its column's type.
    #[error("invalid input value for column \"{column}\" ({dtype}) at row {row}: {value}")]
    InvalidValue {
        column: String,
        dtype: String,
        row: usize,
        value: String,
    },
    /// A timestamp that does not parse.
    #[error("invalid timestamp {0}")]
    InvalidDatetime(String),
    /// A bound parameter that does not decode as its type: what it is
    /// (`parameter $2`, with its column when known) and why.
    #[error("invalid input value for {what}: {detail}")]
    InvalidParameterValue {
        what: String,
        datetime: bool,
        detail: String,
    },
    /// A function name that resolves to no function.
    #[error("function {0} does not exist")]
    UnknownFunction(String),
    /// A required value is missing (keys, event time, non-optional fields).
    #[error("null value in column \"{column}\" of relation \"{table}\" violates not-null constraint (row {row})")]
    NotNull {
        table: String,
        column: String,
        row: usize,
    },
    #[error("invalid definition: {0}")]
    InvalidDefinition(String),
    /// Ingested data that does not fit a dataset: the row (0-based), the
    /// field and the value when known.
    #[error("{message}")]
    InvalidRow {
        message: String,
        row: Option<usize>,
        field: Option<String>,
        value: Option<serde_json::Value>,
    },
    /// A webhook endpoint no dataset is sourced from.
    #[error("{0}")]
    UnknownEndpoint(String),
    #[error("{0} is not supported")]
    Unsupported(String),
    /// A write into a dataset that only its pipeline writes.
    #[error("cannot change dataset \"{table}\": it is maintained by {by}")]
    Derived { table: String, by: String },
    /// A session setting given a value it does not take.
    #[error("{0}")]
    InvalidParameter(String),
    /// A featureset query that does not bind the features it needs.
    #[error("{0}")]
    UnboundInputs(String),
    /// A feature or featureset that does not exist.
    #[error("{0}")]
    UnknownFeature(String),
    /// An extractor failed (raised, or returned the wrong shape or type).
    #[error("extractor {extractor} failed: {message}")]
    Extractor { extractor: String, message: String },
    /// An extractor ran past the time limit and was interrupted.
    #[error("extractor {extractor} ran longer than the {limit_ms} ms limit and was stopped")]
    ExtractorTimeout { extractor: String, limit_ms: u64 },
    /// A value out of its type's range (`bigint out of range`).
    #[error("{0}")]
    NumericOverflow(String),
    /// A statement or request over one of the server's size limits.
    #[error("{0}")]
    LimitExceeded(String),
    /// A statement nested more deeply than the limit.
    #[error("statement too complex: {0}")]
    TooComplex(String),
    /// The statement was canceled: by the client, or because it went away.
    #[error("canceling statement due to {0}")]
    Canceled(&'static str),
    /// The statement ran past `statement_timeout`.
    #[error("canceling statement due to statement timeout ({0} ms)")]
    StatementTimeout(u64),
    /// A statement in a transaction block after an error in it.
    #[error("current transaction is aborted, commands ignored until end of transaction block")]
    InFailedTransaction,
    /// A statement that cannot run inside (this) transaction block.
    #[error("{0}")]
    ActiveTransaction(String),
    /// A transaction-block statement outside a transaction block.
    #[error("{0}")]
    NoActiveTransaction(String),
    /// A write inside a `READ ONLY` transaction.
    #[error("cannot execute {0} in a read-only transaction")]
    ReadOnlyTransaction(String),
    /// A read, inside a transaction, of a table it has written: Thyme
    /// applies a transaction's writes at `COMMIT`, so the read would not see
    /// them.
    #[error("reading \"{table}\" after writing {written} in the same transaction is not supported: Thyme applies a transaction's writes at COMMIT (read before writing, or COMMIT first)")]
    ReadAfterWrite { table: String, written: String },
    /// Authentication failed (the message names the user, never why).
    #[error("password authentication failed for user \"{0}\"")]
    InvalidPassword(String),
    /// No credentials, or credentials that are not allowed here.
    #[error("{0}")]
    InvalidAuthorization(String),
    /// The role lacks a privilege: what it tried, on what.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    #[error("role \"{0}\" does not exist")]
    UnknownRole(String),
    #[error("role \"{0}\" already exists")]
    DuplicateRole(String),
    /// A system a source reads from cannot be reached now.
    #[error("{0}")]
    Unavailable(String),
    /// Errors from the engine about the query itself (planning, types, ...).
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
    #[error(transparent)]
    Storage(#[from] thyme_storage::Error),
    /// Bugs and corrupted state; not shown to clients in detail.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for DataFusionError {
    fn from(e: Error) -> Self {
        match e {
            Error::DataFusion(e) => e,
            other => DataFusionError::External(Box::new(other)),
        }
    }
}

impl From<arrow::error::ArrowError> for Error {
    fn from(e: arrow::error::ArrowError) -> Self {
        Error::DataFusion(DataFusionError::ArrowError(Box::new(e), None))
    }
}

impl ErrorExt for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Error::Syntax(_) => ErrorKind::Syntax,
            Error::UnknownTable(_) => ErrorKind::UnknownTable,
            Error::DuplicateTable(_) => ErrorKind::DuplicateTable,
            Error::UnknownColumn { .. } => ErrorKind::UnknownColumn,
            Error::InvalidValue { dtype, .. } if dtype == "datetime" || dtype == "date" => {
                ErrorKind::InvalidDatetime
            }
            Error::InvalidValue { .. } => ErrorKind::InvalidValue,
            Error::InvalidDatetime(_) => ErrorKind::InvalidDatetime,
            Error::InvalidParameterValue { datetime: true, .. } => ErrorKind::InvalidDatetime,
            Error::InvalidParameterValue { .. } => ErrorKind::InvalidValue,
            Error::UnknownFunction(_) => ErrorKind::UnknownFunction,
            Error::NotNull { .. } => ErrorKind::NotNull,
            Error::InvalidDefinition(_) => ErrorKind::InvalidDefinition,
            Error::InvalidRow { .. } => ErrorKind::InvalidRow,
            Error::UnknownEndpoint(_) => ErrorKind::UnknownEndpoint,
            Error::Unsupported(_) => ErrorKind::Unsupported,
            Error::Derived { .. } => ErrorKind::ReadOnly,
            Error::InvalidParameter(_) => ErrorKind::InvalidParameter,
            Error::UnboundInputs(_) => ErrorKind::UnboundInputs,
            Error::UnknownFeature(_) => ErrorKind::UnknownFeature,
            Error::Extractor { .. } => ErrorKind::UserCode,
            Error::ExtractorTimeout { .. } => ErrorKind::UserCodeTimeout,
            Error::LimitExceeded(_) => ErrorKind::LimitExceeded,
            Error::NumericOverflow(_) => ErrorKind::NumericOverflow,
            Error::TooComplex(_) => ErrorKind::TooComplex,
            Error::Canceled(_) => ErrorKind::Canceled,
            Error::StatementTimeout(_) => ErrorKind::Timeout,
            Error::InFailedTransaction => ErrorKind::InFailedTransaction,
            Error::ActiveTransaction(_) => ErrorKind::ActiveTransaction,
            Error::NoActiveTransaction(_) => ErrorKind::NoActiveTransaction,
            Error::ReadOnlyTransaction(_) => ErrorKind::ReadOnlyTransaction,
            Error::ReadAfterWrite { .. } => ErrorKind::Unsupported,
            Error::InvalidPassword(_) => ErrorKind::InvalidPassword,
            Error::InvalidAuthorization(_) => ErrorKind::InvalidAuthorization,
            Error::PermissionDenied(_) => ErrorKind::InsufficientPrivilege,
            Error::UnknownRole(_) => ErrorKind::UnknownRole,
            Error::DuplicateRole(_) => ErrorKind::DuplicateRole,
            Error::Unavailable(_) => ErrorKind::Unavailable,
            Error::DataFusion(e) => datafusion_kind(e),
            Error::Storage(e) => e.kind(),
            Error::Internal(_) => ErrorKind::Internal,
        }
    }
}

/// The kind of a planning error. DataFusion reports type errors as plan
/// errors like any other; these are told apart by their text, pinned by
/// `sql/errors.slt` (a DataFusion release that rewords one fails there,
/// not silently): an operator or function that takes no such types is
/// Postgres' 42883, branches of a CASE or UNION that have no common type
/// 42804.
fn plan_kind(m: &str) -> ErrorKind {
    const NO_SUCH_OPERATOR_OR_FUNCTION: &[&str] = &[
        "Invalid function",
        "No function matches the given name and argument types",
        "failed to match any signature",
        "Cannot coerce arithmetic expression",
        "Cannot infer common argument type for comparison operation",
    ];
    const NO_COMMON_TYPE: &[&str] = &[
        "to common types in CASE WHEN expression",
        "Incompatible inputs for Union",
    ];
    if NO_SUCH_OPERATOR_OR_FUNCTION.iter().any(|p| m.contains(p)) {
        ErrorKind::UnknownFunction
    } else if NO_COMMON_TYPE.iter().any(|p| m.contains(p)) {
        ErrorKind::TypeMismatch
    } else {
        ErrorKind::InvalidQuery
    }
}

/// The kind of a DataFusion error, by its variant (and, for plan errors,
/// [`plan_kind`]). Names that DataFusion would
/// report as plan errors (unknown tables, functions) are resolved by the
/// SQL planner before planning, with errors of their own kinds.
fn datafusion_kind(e: &DataFusionError) -> ErrorKind {
    use datafusion::common::SchemaError;
    match e {
        DataFusionError::SQL(..) => ErrorKind::Syntax,
        DataFusionError::SchemaError(e, _) => match **e {
            SchemaError::FieldNotFound { .. } => ErrorKind::UnknownColumn,
            SchemaError::DuplicateQualifiedField { .. }
            | SchemaError::DuplicateUnqualifiedField { .. }
            | SchemaError::AmbiguousReference { .. } => ErrorKind::AmbiguousColumn,
        },
        DataFusionError::Plan(m) => plan_kind(m),
        DataFusionError::NotImplemented(_) => ErrorKind::Unsupported,
        DataFusionError::ArrowError(e, _) => match **e {
            arrow::error::ArrowError::CastError(_) | arrow::error::ArrowError::ParseError(_) => {
                ErrorKind::InvalidValue
            }
            arrow::error::ArrowError::DivideByZero => ErrorKind::DivisionByZero,
            arrow::error::ArrowError::ArithmeticOverflow(_) => ErrorKind::NumericOverflow,
            arrow::error::ArrowError::ComputeError(ref m) if m.contains("verflow") => {
                ErrorKind::NumericOverflow
            }
            arrow::error::ArrowError::ComputeError(ref m) if m.contains("egular expression") => {
                ErrorKind::InvalidRegex
            }
            arrow::error::ArrowError::ComputeError(_) => ErrorKind::DataException,
            // A value that does not fit its decimal precision.
            arrow::error::ArrowError::InvalidArgumentError(ref m) if m.contains("too large") => {
                ErrorKind::NumericOverflow
            }
            arrow::error::ArrowError::ExternalError(ref inner)
                if inner.to_string().starts_with("regex parse error") =>
            {
                ErrorKind::InvalidRegex
            }
            _ => ErrorKind::Internal,
        },
        DataFusionError::Execution(_) => ErrorKind::DataException,
        DataFusionError::External(inner) => match inner.downcast_ref::<Error>() {
            Some(e) => e.kind(),
            // The regex crate's error, as DataFusion's regex functions pass it on.
            None if inner.to_string().starts_with("regex parse error") => ErrorKind::InvalidRegex,
            None => ErrorKind::Internal,
        },
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            datafusion_kind(inner)
        }
        DataFusionError::Shared(inner) => datafusion_kind(inner),
        DataFusionError::ResourcesExhausted(_) => ErrorKind::ResourcesExhausted,
        DataFusionError::Configuration(_) => ErrorKind::InvalidParameter,
        _ => ErrorKind::Internal,
    }
}

/// The text of a DataFusion error without DataFusion's prefixes
/// ("Error during planning: ...").
fn datafusion_message(e: &DataFusionError) -> String {
    match e {
        DataFusionError::SQL(e, _) => format!("syntax error: {e}"),
        DataFusionError::NotImplemented(m) => format!("{m} is not supported"),
        DataFusionError::ArrowError(e, _) => match &**e {
            arrow::error::ArrowError::CastError(m)
            | arrow::error::ArrowError::ParseError(m)
            | arrow::error::ArrowError::ComputeError(m) => m.clone(),
            arrow::error::ArrowError::DivideByZero => "division by zero".into(),
            other => other.to_string(),
        },
        DataFusionError::Plan(m)
        | DataFusionError::Execution(m)
        | DataFusionError::ResourcesExhausted(m)
        | DataFusionError::Configuration(m) => m.clone(),
        DataFusionError::SchemaError(e, _) => e.to_string(),
        DataFusionError::External(inner) => match inner.downcast_ref::<Error>() {
            Some(e) => e.client_message(),
            None => inner.to_string(),
        },
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            datafusion_message(inner)
        }
        DataFusionError::Shared(inner) => datafusion_message(inner),
        other => other.to_string(),
    }
}

impl Error {
    /// What kind of failure this is (see [`thyme_error`]).
    pub fn kind(&self) -> ErrorKind {
        ErrorExt::kind(self)
    }

    /// The message a client sees: the error's own text, except for
    /// internal kinds, whose detail stays in the server log.
    pub fn client_message(&self) -> String {
        match self {
            Error::DataFusion(e) => datafusion_message(e),
            other => other.to_string(),
        }
    }

    /// Recover a planner error that travelled through DataFusion as an
    /// external error (e.g. raised inside a table provider).
    pub fn unwrap_datafusion(e: DataFusionError) -> Error {
        match e {
            DataFusionError::External(inner) => match inner.downcast::<Error>() {
                Ok(e) => *e,
                Err(inner) => Error::DataFusion(DataFusionError::External(inner)),
            },
            DataFusionError::Context(_, inner) => Error::unwrap_datafusion(*inner),
            DataFusionError::Shared(inner) => match std::sync::Arc::try_unwrap(inner) {
                Ok(e) => Error::unwrap_datafusion(e),
                Err(shared) => Error::DataFusion(DataFusionError::Shared(shared)),
            },
            other => Error::DataFusion(other),
        }
    }
}
