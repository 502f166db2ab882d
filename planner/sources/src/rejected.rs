//! `thyme_rejected_rows`: rows sources skipped, with why (dataset, source,
//! where in the source, field, value, error), at most
//! [`MAX_KEPT_PER_SOURCE`] per source (the count in the source's state is
//! exact).

use std::sync::Arc;

use arrow::array::{ArrayRef, StringBuilder, TimestampMicrosecondBuilder};
use arrow::record_batch::RecordBatch;
use thyme_storage::WriteBatch;
use thyme_table::catalog::{Catalog, Dataset, DatasetDef, FieldDef};
use thyme_table::error::{Error, Result};
use thyme_table::ingest::add_rows;
use thyme_table::types::{DType, UTC};

use crate::chunk::Rejection;

pub use thyme_table::catalog::REJECTED_TABLE;

/// Skipped rows kept per source.
pub const MAX_KEPT_PER_SOURCE: u64 = 10_000;

/// The table (created on first use).
pub fn rejected_table(catalog: &Catalog) -> Result<Arc<Dataset>> {
    let f = |n: &str, dtype, nullable| FieldDef {
        name: n.into(),
        dtype,
        nullable,
    };
    catalog.get_or_create(DatasetDef {
        name: REJECTED_TABLE.into(),
        fields: vec![
            f("dataset", DType::Str, false),
            f("source", DType::Str, false),
            f("location", DType::Str, false),
            f("field", DType::Str, true),
            f("value", DType::Str, true),
            f("error", DType::Str, false),
            f("ts", DType::Datetime, false),
        ],
        keys: vec![],
        timestamp: "ts".into(),
        version: 1,
        index: false,
        decay: vec![],
    })
}

/// Add `rows` (skipped by `source` of `dataset`, seen at `now`) to `wb`.
pub fn add_rejected(
    table: &Dataset,
    dataset: &str,
    source: &str,
    rows: &[Rejection],
    now: i64,
    wb: &mut WriteBatch,
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let n = rows.len();
    let mut cols: Vec<StringBuilder> = (0..6).map(|_| StringBuilder::new()).collect();
    let mut ts = TimestampMicrosecondBuilder::with_capacity(n).with_timezone(UTC);
    for r in rows {
        cols[0].append_value(dataset);
        cols[1].append_value(source);
        cols[2].append_value(&r.location);
        cols[3].append_option(r.field.as_deref());
        cols[4].append_option(r.value.as_deref());
        cols[5].append_value(&r.error);
        ts.append_value(now);
    }
    let mut arrays: Vec<ArrayRef> = cols
        .into_iter()
        .map(|mut b| Arc::new(b.finish()) as ArrayRef)
        .collect();
    arrays.push(Arc::new(ts.finish()));
    let batch =
        RecordBatch::try_new(table.schema(), arrays).map_err(|e| Error::Internal(e.to_string()))?;
    add_rows(table, &batch, wb)
}
