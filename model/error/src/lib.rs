//! What kind of failure an error is, independent of the crate that raised
//! it (GreptimeDB's status codes play the same part).
//!
//! Every crate's error enum has a `kind()` returning an [`ErrorKind`]; the
//! server turns a kind into a SQLSTATE (pgwire) and an HTTP status with a
//! stable code (the HTTP APIs) in exactly one place, `server/src/errors.rs`,
//! with exhaustive matches, so a new kind cannot ship unmapped. Crates never
//! name SQLSTATEs or HTTP statuses themselves.
//!
//! Kinds are about the *cause* as a client sees it: bad SQL, a missing
//! table, a value that does not fit, an extractor that raised, an internal
//! fault. Internal kinds ([`ErrorKind::Internal`], [`ErrorKind::Storage`])
//! are logged with their detail and shown to clients only generically.

/// The kind of an error. See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    // --- The statement or request itself ---
    /// SQL (or an expression) that does not parse.
    Syntax,
    /// A query that parses but cannot be planned as written.
    InvalidQuery,
    /// A statement or request uses something Thyme does not do.
    Unsupported,
    /// A function that does not exist (or not for those argument types).
    UnknownFunction,
    /// Operands whose types do not fit together.
    TypeMismatch,
    /// A session setting or request parameter given a value it does not take.
    InvalidParameter,
    /// A malformed request (HTTP body or query string, protocol message).
    InvalidRequest,
    /// A message that breaks the wire protocol.
    ProtocolViolation,

    // --- Names ---
    /// A table (dataset, view) that does not exist.
    UnknownTable,
    /// A table that already exists.
    DuplicateTable,
    /// A column that does not exist.
    UnknownColumn,
    /// A column reference that matches more than one column.
    AmbiguousColumn,
    /// A feature or featureset that does not exist.
    UnknownFeature,
    /// A webhook endpoint no dataset is sourced from.
    UnknownEndpoint,
    /// A job (offline query) that does not exist.
    UnknownJob,

    // --- Data ---
    /// A value that does not fit its type.
    InvalidValue,
    /// A date or time value that does not fit its type.
    InvalidDatetime,
    /// A missing required value (keys, event time, required fields).
    NotNull,
    /// A row of ingested data that does not fit its dataset.
    InvalidRow,
    /// Division by zero.
    DivisionByZero,
    /// A value out of its type's range (integer overflow, a number too large).
    NumericOverflow,
    /// A regular expression that does not compile.
    InvalidRegex,
    /// Any other failure computing a value (a cast, ...).
    DataException,

    // --- Definitions and objects ---
    /// A definition (commit, CREATE TABLE) that is refused.
    InvalidDefinition,
    /// A write into an object that only Thyme writes (a pipeline's output).
    ReadOnly,
    /// A featureset query that does not bind the inputs it needs.
    UnboundInputs,

    // --- Transactions ---
    /// A statement in a transaction block that an earlier error aborted.
    InFailedTransaction,
    /// A statement that cannot run inside (this) transaction block.
    ActiveTransaction,
    /// A transaction statement (`SAVEPOINT`, ...) outside a transaction block.
    NoActiveTransaction,
    /// A write inside a `READ ONLY` transaction.
    ReadOnlyTransaction,

    // --- Authentication and privileges ---
    /// The password (or token) does not match.
    InvalidPassword,
    /// Authentication that is missing or not allowed (no such login,
    /// no credentials where they are required).
    InvalidAuthorization,
    /// The role lacks the privilege the statement or request needs.
    InsufficientPrivilege,
    /// A role that does not exist.
    UnknownRole,
    /// A role that already exists.
    DuplicateRole,

    // --- User code ---
    /// A committed extractor or function raised, or returned the wrong shape.
    UserCode,
    /// User code ran past its time limit and was stopped.
    UserCodeTimeout,

    // --- Resources and the server ---
    /// A request that conflicts with the state of an object (a job id in
    /// use).
    Conflict,
    /// A request body in a format the endpoint does not read.
    UnsupportedMediaType,
    /// A statement or request larger than a limit of the server.
    LimitExceeded,
    /// A statement nested more deeply than the server's limit (its
    /// expressions, subqueries, set operations).
    TooComplex,
    /// The client canceled the statement, or went away.
    Canceled,
    /// The statement ran past its time limit (`statement_timeout`).
    Timeout,
    /// A memory or other resource limit was reached.
    ResourcesExhausted,
    /// The server or a part it needs is not available now.
    Unavailable,
    /// The store failed (I/O, corruption, a locked data directory).
    Storage,
    /// A bug or an impossible state.
    Internal,
}

impl ErrorKind {
    /// Every kind, for exhaustive tests of the maps built on it.
    pub const ALL: &'static [ErrorKind] = &[
        ErrorKind::Syntax,
        ErrorKind::InvalidQuery,
        ErrorKind::Unsupported,
        ErrorKind::UnknownFunction,
        ErrorKind::TypeMismatch,
        ErrorKind::InvalidParameter,
        ErrorKind::InvalidRequest,
        ErrorKind::ProtocolViolation,
        ErrorKind::UnknownTable,
        ErrorKind::DuplicateTable,
        ErrorKind::UnknownColumn,
        ErrorKind::AmbiguousColumn,
        ErrorKind::UnknownFeature,
        ErrorKind::UnknownEndpoint,
        ErrorKind::UnknownJob,
        ErrorKind::InvalidValue,
        ErrorKind::InvalidDatetime,
        ErrorKind::NotNull,
        ErrorKind::InvalidRow,
        ErrorKind::DivisionByZero,
        ErrorKind::NumericOverflow,
        ErrorKind::InvalidRegex,
        ErrorKind::DataException,
        ErrorKind::InvalidDefinition,
        ErrorKind::ReadOnly,
        ErrorKind::UnboundInputs,
        ErrorKind::InFailedTransaction,
        ErrorKind::ActiveTransaction,
        ErrorKind::NoActiveTransaction,
        ErrorKind::ReadOnlyTransaction,
        ErrorKind::InvalidPassword,
        ErrorKind::InvalidAuthorization,
        ErrorKind::InsufficientPrivilege,
        ErrorKind::UnknownRole,
        ErrorKind::DuplicateRole,
        ErrorKind::UserCode,
        ErrorKind::UserCodeTimeout,
        ErrorKind::Conflict,
        ErrorKind::UnsupportedMediaType,
        ErrorKind::LimitExceeded,
        ErrorKind::TooComplex,
        ErrorKind::Canceled,
        ErrorKind::Timeout,
        ErrorKind::ResourcesExhausted,
        ErrorKind::Unavailable,
        ErrorKind::Storage,
        ErrorKind::Internal,
    ];

    /// Whether the detail of such an error stays in the server log (the
    /// client gets a generic message).
    pub fn is_internal(self) -> bool {
        matches!(self, ErrorKind::Internal | ErrorKind::Storage)
    }
}

/// An error that knows its kind.
pub trait ErrorExt: std::error::Error {
    fn kind(&self) -> ErrorKind;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ALL` lists every kind once (a kind added to the enum but not to
    /// `ALL` fails here: the match has no default arm).
    #[test]
    fn all_lists_every_kind_once() {
        let mut seen = std::collections::HashSet::new();
        for &k in ErrorKind::ALL {
            assert!(seen.insert(k), "{k:?} twice");
            let position = match k {
                ErrorKind::Syntax => 0,
                ErrorKind::InvalidQuery => 1,
                ErrorKind::Unsupported => 2,
                ErrorKind::UnknownFunction => 3,
                ErrorKind::TypeMismatch => 4,
                ErrorKind::InvalidParameter => 5,
                ErrorKind::InvalidRequest => 6,
                ErrorKind::ProtocolViolation => 7,
                ErrorKind::UnknownTable => 8,
                ErrorKind::DuplicateTable => 9,
                ErrorKind::UnknownColumn => 10,
                ErrorKind::AmbiguousColumn => 11,
                ErrorKind::UnknownFeature => 12,
                ErrorKind::UnknownEndpoint => 13,
                ErrorKind::UnknownJob => 14,
                ErrorKind::InvalidValue => 15,
                ErrorKind::InvalidDatetime => 16,
                ErrorKind::NotNull => 17,
                ErrorKind::InvalidRow => 18,
                ErrorKind::DivisionByZero => 19,
                ErrorKind::NumericOverflow => 20,
                ErrorKind::InvalidRegex => 21,
                ErrorKind::DataException => 22,
                ErrorKind::InvalidDefinition => 23,
                ErrorKind::ReadOnly => 24,
                ErrorKind::UnboundInputs => 25,
                ErrorKind::InFailedTransaction => 26,
                ErrorKind::ActiveTransaction => 27,
                ErrorKind::NoActiveTransaction => 28,
                ErrorKind::ReadOnlyTransaction => 29,
                ErrorKind::InvalidPassword => 30,
                ErrorKind::InvalidAuthorization => 31,
                ErrorKind::InsufficientPrivilege => 32,
                ErrorKind::UnknownRole => 33,
                ErrorKind::DuplicateRole => 34,
                ErrorKind::UserCode => 35,
                ErrorKind::UserCodeTimeout => 36,
                ErrorKind::Conflict => 37,
                ErrorKind::UnsupportedMediaType => 38,
                ErrorKind::LimitExceeded => 39,
                ErrorKind::TooComplex => 40,
                ErrorKind::Canceled => 41,
                ErrorKind::Timeout => 42,
                ErrorKind::ResourcesExhausted => 43,
                ErrorKind::Unavailable => 44,
                ErrorKind::Storage => 45,
                ErrorKind::Internal => 46,
            };
            assert_eq!(ErrorKind::ALL[position], k);
        }
        assert_eq!(seen.len(), ErrorKind::ALL.len());
    }
}
