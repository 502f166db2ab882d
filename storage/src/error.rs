//! Errors of the storage layer.

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another process holds the data directory.
    #[error("data directory {path} is already in use by another thyme server")]
    Locked { path: String },
    /// The underlying engine failed (I/O, corruption, ...).
    #[error("storage engine error: {0}")]
    Engine(String),
    /// A data directory written in another on-disk layout.
    #[error(
        "the data directory {path} holds on-disk format {found}; this server reads format \
         {expected} (start it on a new directory)"
    )]
    Format {
        path: String,
        found: u64,
        expected: u64,
    },
    /// On-disk data that does not decode.
    #[error("corrupt entry in the store: {0}")]
    Corrupt(String),
    /// File-system errors around the store (creating the directory, the lock).
    #[error("i/o error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl thyme_error::ErrorExt for Error {
    fn kind(&self) -> thyme_error::ErrorKind {
        // Every store failure is the server's, not the client's: the detail
        // goes to the log (a locked or foreign data directory stops the
        // server at start, before any client).
        thyme_error::ErrorKind::Storage
    }
}
