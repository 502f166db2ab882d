//! Errors of the planner. The server maps each variant to a SQLSTATE (and an
//! HTTP status) in one place; messages here are written for users.

use datafusion::error::DataFusionError;

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

impl Error {
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
