//! The interface to user code shipped with commits: the Python functions of
//! pipelines (`filter`, `assign`, `transform`) and featureset extractors.
//! The server implements [`PythonRuntime`] with its embedded interpreter;
//! the stream engine and the feature server call through it, so neither
//! links an interpreter. (Expressions, which need no interpreter, are
//! compiled by [`crate::expr`].)

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef};

use crate::error::Result;
use crate::read::DatasetReader;

/// Runs the Python functions shipped with pipelines. The server implements
/// it with its embedded interpreter; without one, pipelines that use Python
/// functions report an error instead of running.
pub trait PythonRuntime: Send + Sync {
    /// Call `func` with `batch` as a pandas DataFrame; its result (a Series
    /// or list, one value per row) as an array of `dtype`.
    fn call_series(
        &self,
        func: &thyme_model::payload::Func,
        imports: &str,
        batch: &RecordBatch,
        dtype: &arrow::datatypes::DataType,
    ) -> Result<ArrayRef>;

    /// Call a `transform` function: DataFrame in, DataFrame out, read back
    /// with the columns of `schema`.
    fn call_frame(
        &self,
        func: &thyme_model::payload::Func,
        imports: &str,
        batch: &RecordBatch,
        schema: SchemaRef,
    ) -> Result<RecordBatch>;

    /// Call a featureset's Python extractor (featuresets):
    /// one array per output, of the output's type.
    fn call_extractor(&self, call: &ExtractorCall<'_>) -> Result<Vec<ArrayRef>>;

    /// Check, without running it, that `func` compiles and that the import
    /// lines of its module run in this interpreter; `Err` says what does
    /// not (the line, the import, and which Python looked).
    fn check(
        &self,
        func: &thyme_model::payload::Func,
        imports: &str,
    ) -> std::result::Result<(), String>;

    /// Which Python this is and where it finds packages (for the log and
    /// for error messages).
    fn describe(&self) -> String;
}

/// What the Python runtime needs to call an extractor.
pub struct ExtractorCall<'a> {
    pub featureset: &'a str,
    pub name: &'a str,
    pub source: &'a str,
    pub imports: &'a str,
    /// Datasets the function reads with `Dataset.lookup` (class names).
    pub deps: &'a [String],
    /// One read time per row (µs, UTC).
    pub ts: &'a ArrayRef,
    /// Input columns with the names the function's parameters get.
    pub inputs: Vec<(String, ArrayRef)>,
    /// Output features (unqualified names) and their types.
    pub outputs: Vec<(String, DataType)>,
    pub reader: Arc<dyn DatasetReader>,
}
