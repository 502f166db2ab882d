//! Writing the output node's rows to the pipeline's output dataset: upserts
//! and events as versions (with the dataset's log records, so pipelines
//! chain), deletes as delete versions of a keyed dataset.

use std::sync::Arc;

use arrow::array::UInt32Array;
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use thyme_storage::WriteBatch;
use thyme_table::catalog::Dataset;
use thyme_table::error::{Error, Result};
use thyme_table::ingest::{add_deletes, add_rows, conform_column};

use crate::flow::Flow;

/// A dataset's Arrow schema with every field nullable (how rows are read
/// from logs and built by operators).
pub fn relaxed(ds: &Dataset) -> SchemaRef {
    Arc::new(Schema::new(
        ds.fields()
            .iter()
            .map(|f| Field::new(&f.name, f.dtype.arrow(), true))
            .collect::<Vec<_>>(),
    ))
}

/// The flow's columns in the output dataset's order and types.
pub fn conform(out: &Dataset, f: &Flow) -> Result<RecordBatch> {
    let cols = out
        .fields()
        .iter()
        .enumerate()
        .map(|(j, fd)| {
            let name = if j == out.ts_index() {
                &f.ts_col
            } else {
                &fd.name
            };
            let c = f.batch.column_by_name(name).ok_or_else(|| {
                Error::InvalidDefinition(format!(
                    "pipeline output has no column {} for dataset {}",
                    fd.name,
                    out.name()
                ))
            })?;
            conform_column(out, j, c, 0)
        })
        .collect::<Result<Vec<_>>>()?;
    RecordBatch::try_new(relaxed(out), cols).map_err(|e| Error::Internal(e.to_string()))
}

/// Write a flow to the output dataset; returns the rows written.
pub fn write_flow(out: &Dataset, f: &Flow, wb: &mut WriteBatch) -> Result<usize> {
    let batch = conform(out, f)?;
    let batch = RecordBatch::try_new(out.schema(), batch.columns().to_vec()).map_err(|e| {
        Error::InvalidDefinition(format!(
            "pipeline output does not fit dataset {}: {e}",
            out.name()
        ))
    })?;
    if f.del.true_count() == 0 {
        add_rows(out, &batch, wb)?;
        return Ok(f.len());
    }
    let rows = |del: bool| -> Result<RecordBatch> {
        let idx: UInt32Array = (0..f.len() as u32)
            .filter(|&r| f.del.value(r as usize) == del)
            .collect::<Vec<_>>()
            .into();
        let cols = batch
            .columns()
            .iter()
            .map(|c| arrow::compute::take(c, &idx, None))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Internal(e.to_string()))?;
        RecordBatch::try_new(batch.schema(), cols).map_err(|e| Error::Internal(e.to_string()))
    };
    add_rows(out, &rows(false)?, wb)?;
    if out.is_keyed() {
        add_deletes(out, &rows(true)?, wb)?;
    }
    Ok(f.len())
}
