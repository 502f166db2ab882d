//! The pipeline operators, one per file. Each takes a [`Flow`] (an Arrow
//! batch with each row's input order and delete flag) and gives one:
//!
//! - stateless: [`filter`], [`assign`], [`select`], [`drop`](mod@drop), [`rename`],
//!   [`dropnull`], [`explode`], [`transform`] (Python), [`union`] (several
//!   inputs) and [`changelog`];
//! - reading the store: [`join`], the as-of join with a keyed dataset;
//! - keeping state in the store: [`dedup`];
//! - terminal, writing the output dataset: [`aggregate`] (windowed
//!   aggregation, with its accumulators, per-key events and windows),
//!   [`first`], and `latest`, which is the output write itself
//!   ([`crate::sink`]).
//!
//! [`crate::graph`] builds them from a pipeline's nodes and runs them in
//! node order.

pub mod aggregate;
pub mod assign;
pub mod changelog;
pub mod dedup;
pub mod drop;
pub mod dropnull;
pub mod explode;
pub mod filter;
pub mod first;
pub mod join;
pub mod rename;
pub mod select;
pub mod transform;
pub mod union;

use std::sync::Arc;

use datafusion::prelude::SessionContext;
use thyme_model::duration;
use thyme_storage::TemporalStore;
use thyme_table::catalog::Dataset;
use thyme_table::error::{Error, Result};
use thyme_table::udf::PythonRuntime;

pub use crate::flow::Flow;
pub use aggregate::AggregateOp;
pub use assign::AssignOp;
pub use dedup::DedupOp;
pub use filter::FilterOp;
pub use first::FirstOp;
pub use join::JoinOp;
pub use transform::TransformOp;

/// What operators read besides their input: one per pipeline.
pub struct OpEnv {
    /// Compiles SQL expressions.
    pub ctx: SessionContext,
    pub store: Arc<dyn TemporalStore>,
    /// The pipeline's output dataset.
    pub out: Arc<Dataset>,
    pub python: Option<Arc<dyn PythonRuntime>>,
    /// The pipeline's Python imports.
    pub imports: String,
}

impl OpEnv {
    /// The embedded interpreter, for `what` (a clear error without one).
    pub fn python(&self, what: &str) -> Result<&dyn PythonRuntime> {
        self.python.as_deref().ok_or_else(|| {
            Error::Unsupported(format!(
                "{what} with a Python function in a server without the embedded interpreter"
            ))
        })
    }
}

/// A definition's duration in microseconds (`None`: forever).
pub(crate) fn micros(s: &str) -> Result<Option<i64>> {
    duration::parse(s)
        .map(duration::Duration::micros)
        .map_err(Error::InvalidDefinition)
}
