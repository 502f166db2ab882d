//! Thyme's planner: the catalog model, SQL parsing, and DataFusion plans over
//! the temporal store.
//!
//! - [`asof`]: ASOF joins (parsing, the logical node, `AsOfHashJoinExec`,
//!   `AsOfJoinExec`, `AsOfLookupExec`);
//! - [`catalog`]: dataset definitions and their validation;
//! - [`types`]: field types and their Arrow / Postgres mapping;
//! - [`sql`]: the SQL dialect and statement-level `AS OF`;
//! - [`provider`], [`scan`]: datasets as DataFusion tables (current rows and
//!   history, point in time, key seeks);
//! - [`schema`]: the DataFusion catalog and `FOR SYSTEM_TIME AS OF`;
//! - [`session`]: executing statements (queries, DDL, DML, COPY);
//! - [`lookup`]: the point-lookup fast path for prepared key lookups;
//! - [`ingest`], [`codec`], [`copy`]: turning rows into stored versions;
//! - [`registry`]: committed definitions (datasets, featuresets) and commits;
//! - [`webhook`]: webhook ingestion routed by the committed sources;
//! - [`featureset`]: featuresets: the extractor graph, query planning and
//!   evaluation, and featuresets as SQL views;
//! - [`json_out`]: results as column-oriented JSON for the HTTP APIs;
//! - [`pipeline`]: committed pipelines' operators, exact windowed
//!   aggregation in event time, and the runner that commits outputs, state
//!   and input offsets atomically.

pub mod asof;
pub mod catalog;
mod codec;
pub mod copy;
pub mod error;
pub mod featureset;
pub mod ingest;
pub mod json_out;
pub mod lookup;
pub mod pipeline;
pub mod provider;
pub mod registry;
pub mod scan;
pub mod schema;
pub mod session;
pub mod sql;
pub mod types;
pub mod webhook;

pub use error::{Error, Result};
pub use session::{CopyIn, Engine, Output, Prepared, Session};
