//! Thyme's table layer: what a dataset is and how its rows reach and leave
//! the temporal store. Everything above it (the stream engine, the feature
//! server, the SQL planner) works through these types.
//!
//! - [`types`]: field types and their Arrow / Postgres mapping;
//! - [`catalog`]: the datasets as tables (definitions, ids, decayed fields);
//! - [`codec`] (crate-private encoding, public decoders): keys encoded
//!   order-preservingly, rows as a null bitmap plus values;
//! - [`registry`]: committed definitions (datasets, featuresets) and commits;
//! - [`ingest`]: rows into stored versions and log records (INSERT, webhook,
//!   pipelines all write through it); [`copy`]: `COPY FROM STDIN` text and
//!   CSV; [`webhook`]: webhook payloads routed by the committed sources;
//! - [`read`]: batched keyed reads as of given times (`lookup_rows`), the
//!   one store-read primitive above `thyme-storage`;
//! - [`json_out`]: results as column-oriented JSON for the HTTP APIs;
//! - [`expr`]: committed expressions compiled to DataFusion physical
//!   expressions; [`udf`]: the interface to the Python runtime that runs
//!   committed functions and extractors;
//! - [`roles`]: roles, SCRAM password verifiers, privileges and API tokens;
//! - [`error`]: the error of this layer and everything above it, with its
//!   [`ErrorKind`](thyme_error::ErrorKind).

pub mod catalog;
pub mod codec;
pub mod copy;
pub mod error;
pub mod expr;
pub mod ingest;
pub mod json_out;
pub mod read;
pub mod registry;
pub mod roles;
pub mod types;
pub mod udf;
pub mod webhook;

pub use error::{Error, Result};
