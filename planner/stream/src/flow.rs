//! [`Flow`]: the rows moving between operators. An Arrow batch of the
//! operator's schema plus, per row, its input order (`seq`, which orders
//! equal timestamps and survives restarts) and whether it is a delete.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, UInt32Array, UInt64Array};
use arrow::compute::{filter_record_batch, take};
use arrow::datatypes::{Field, Schema};
use arrow::record_batch::RecordBatch;
use thyme_table::error::{Error, Result};

/// Rows moving between operators.
#[derive(Debug, Clone)]
pub struct Flow {
    pub batch: RecordBatch,
    pub seq: UInt64Array,
    pub del: BooleanArray,
    /// Name of the event-time column.
    pub ts_col: String,
}

pub(crate) fn arrow_err(e: arrow::error::ArrowError) -> Error {
    Error::Internal(e.to_string())
}

pub(crate) fn u64s(a: ArrayRef) -> UInt64Array {
    a.as_any()
        .downcast_ref::<UInt64Array>()
        .expect("u64 column")
        .clone()
}

pub(crate) fn bools(a: ArrayRef) -> BooleanArray {
    a.as_any()
        .downcast_ref::<BooleanArray>()
        .expect("bool column")
        .clone()
}

impl Flow {
    pub fn len(&self) -> usize {
        self.batch.num_rows()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Event times, microseconds.
    pub fn ts(&self) -> Result<Vec<i64>> {
        let c = self
            .batch
            .column_by_name(&self.ts_col)
            .ok_or_else(|| Error::Internal(format!("no timestamp column {}", self.ts_col)))?;
        let c = arrow::compute::cast(c, &arrow::datatypes::DataType::Int64).map_err(arrow_err)?;
        let c = c
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .expect("int64");
        Ok(c.iter().map(|v| v.unwrap_or(i64::MIN)).collect())
    }

    pub fn filter(&self, mask: &BooleanArray) -> Result<Flow> {
        let f = |a: &dyn Array| arrow::compute::filter(a, mask).map_err(arrow_err);
        Ok(Flow {
            batch: filter_record_batch(&self.batch, mask).map_err(arrow_err)?,
            seq: u64s(f(&self.seq)?),
            del: bools(f(&self.del)?),
            ts_col: self.ts_col.clone(),
        })
    }

    pub fn take(&self, idx: &UInt32Array) -> Result<Flow> {
        let cols = self
            .batch
            .columns()
            .iter()
            .map(|c| take(c, idx, None))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(arrow_err)?;
        Ok(Flow {
            batch: RecordBatch::try_new(self.batch.schema(), cols).map_err(arrow_err)?,
            seq: u64s(take(&self.seq, idx, None).map_err(arrow_err)?),
            del: bools(take(&self.del, idx, None).map_err(arrow_err)?),
            ts_col: self.ts_col.clone(),
        })
    }

    /// Same rows, other columns.
    pub fn with_columns(&self, fields: Vec<Field>, cols: Vec<ArrayRef>) -> Result<Flow> {
        let schema = Arc::new(Schema::new(fields));
        let opts = arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(self.len()));
        Ok(Flow {
            batch: RecordBatch::try_new_with_options(schema, cols, &opts).map_err(arrow_err)?,
            seq: self.seq.clone(),
            del: self.del.clone(),
            ts_col: self.ts_col.clone(),
        })
    }

    /// The batch's fields and columns, to build another from.
    pub(crate) fn parts(&self) -> (Vec<Field>, Vec<ArrayRef>) {
        (
            self.batch
                .schema()
                .fields()
                .iter()
                .map(|f| f.as_ref().clone())
                .collect(),
            self.batch.columns().to_vec(),
        )
    }
}
