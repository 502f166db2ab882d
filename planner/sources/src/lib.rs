//! Thyme's sources: connectors that pull rows from systems outside Thyme
//! into datasets (the SDK's `@source` with a connector other than a
//! webhook), exactly once.
//!
//! - [`chunk`]: what a connector hands over (rows as JSON objects, rows it
//!   could not parse, and the position after them) and how a chunk is
//!   applied: the rows are checked against the dataset (bad ones skipped and
//!   recorded), and the good rows, the rejected ones and the source's new
//!   position go to the store in **one** atomic write, so a restart resumes
//!   exactly after what was stored;
//! - [`position`]: a source's stored position and counts (catalog entry
//!   `source/<dataset>/<n>`), tied to the dataset's table id so that a
//!   recommitted dataset starts its sources over;
//! - [`rejected`]: the `thyme_rejected_rows` table of skipped rows (bounded
//!   per source; the counts in the position stay exact);
//! - [`files`]: CSV (with a header), JSON-lines and Parquet files in a
//!   local directory or an S3 bucket, each file read once;
//! - [`iceberg`]: an Iceberg table (SQL or REST catalog), snapshot by
//!   snapshot, one data file per write;
//! - [`kafka`]: a Kafka topic of JSON messages or Debezium change events,
//!   every partition, with the offsets kept in Thyme's store;
//! - [`postgres`]: a Postgres table polled by cursor, with a look-back that
//!   finds rows committed late and a record of the recent rows that keeps
//!   them from being stored twice;
//! - [`postgres_cdc`]: a Postgres table by logical replication (`pgoutput`):
//!   a snapshot, then the change stream, the slot advanced after each write.
//!
//! The runtime that runs them (one thread per committed source) is the
//! server's; connectors never name the SQL planner.

pub mod chunk;
pub mod files;
pub mod iceberg;
pub mod kafka;
pub mod position;
pub mod postgres;
pub mod postgres_cdc;
pub mod rejected;

pub use chunk::{apply, Applied, Chunk, Rejection};
pub use position::SourceState;
