//! Thyme's stream engine: the pipelines committed with datasets, run
//! continuously in event time.
//!
//! A [`PipelineRunner`] owns one committed pipeline. Each [`step`] reads the
//! next records of its input datasets' logs (from the offsets it stored),
//! pushes them through the operators in Arrow batches, and commits — in one
//! atomic [`WriteBatch`] — the output rows (versions or events plus the
//! output dataset's log records, so pipelines chain), the operators' state
//! and the new input offsets. A crash at any moment therefore leaves either
//! the state before the step or the state after it: restarted, the runner
//! resumes from the stored offsets and produces exactly what an
//! uninterrupted run would. A newly committed pipeline starts at offset 0:
//! its first steps *backfill* the full history of its inputs, then it
//! follows live.
//!
//! **Event time.** Each input has a watermark: the newest event time seen
//! minus the input's `disorder` (the source's, or for a dataset made by a
//! pipeline the largest of its inputs'; none declared: no watermark).
//! Events at or after the watermark are applied at their event time, out of
//! order or not; older ones are *late*: they are not applied, but counted
//! (progress, `/metrics`) and recorded in the `thyme_late_events` table.
//!
//! The crate's parts:
//!
//! - [`runner`]: the runner, its inputs, watermarks and atomic step;
//! - [`checkpoint`]: what a runner stores about its progress;
//! - [`graph`]: every operator built from its node, in one place, and the
//!   walk that runs them;
//! - [`ops`]: the operators, one per file (windowed aggregation in
//!   [`ops::aggregate`], with its accumulators, per-key events and windows);
//! - [`sink`]: the output node's rows written to the output dataset;
//! - [`flow`]: the batches that move between operators;
//! - [`late`]: the late events table.
//!
//! [`step`]: PipelineRunner::step
//! [`WriteBatch`]: thyme_storage::WriteBatch

pub mod checkpoint;
pub mod flow;
pub mod graph;
pub mod late;
pub mod ops;
pub mod runner;
pub mod sink;

pub use late::late_table;
pub use runner::{InputProgress, PipelineRunner, Progress, IDLE_AFTER};
pub use thyme_table::catalog::LATE_TABLE;
pub use thyme_table::udf::PythonRuntime;
