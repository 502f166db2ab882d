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
//! Operators live in [`ops`] (stateless ones and the as-of join),
//! [`aggregate`] (windowed aggregation, with its accumulators, per-key
//! events and windows) and [`runner`] (`first` / `latest` / `dedup`, which
//! write keyed versions directly).
//!
//! [`step`]: PipelineRunner::step
//! [`WriteBatch`]: thyme_storage::WriteBatch

pub mod aggregate;
pub mod ops;
pub mod runner;

pub use runner::{late_table, InputProgress, PipelineRunner, Progress, IDLE_AFTER, LATE_TABLE};
pub use thyme_table::udf::PythonRuntime;
