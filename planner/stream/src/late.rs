//! Late events: rows older than their input's watermark, not applied but
//! recorded in the `thyme_late_events` table (pipeline, dataset, event
//! time, watermark, the row as JSON, when it was seen).

use std::sync::Arc;

use arrow::array::{ArrayRef, StringBuilder, TimestampMicrosecondBuilder};
use arrow::record_batch::RecordBatch;
use thyme_storage::WriteBatch;
use thyme_table::catalog::{Catalog, Dataset, DatasetDef, FieldDef, LATE_TABLE};
use thyme_table::error::{Error, Result};
use thyme_table::ingest::add_rows;
use thyme_table::types::{DType, UTC};

/// One late row of a step.
pub struct LateRow {
    /// The input it came from, by position.
    pub input: usize,
    pub event_ts: i64,
    pub watermark: i64,
    /// The row as a JSON object.
    pub row: String,
}

/// The table late events go to (created on first use).
pub fn late_table(catalog: &Catalog) -> Result<Arc<Dataset>> {
    let f = |n: &str, dtype| FieldDef {
        name: n.into(),
        dtype,
        nullable: false,
    };
    catalog.get_or_create(DatasetDef {
        name: LATE_TABLE.into(),
        fields: vec![
            f("pipeline", DType::Str),
            f("dataset", DType::Str),
            f("event_ts", DType::Datetime),
            f("watermark", DType::Datetime),
            f("row", DType::Str),
            f("ts", DType::Datetime),
        ],
        keys: vec![],
        timestamp: "ts".into(),
        version: 1,
        index: false,
        decay: vec![],
    })
}

/// Record `rows` of `pipeline` (whose inputs are `inputs`) seen at `now`.
pub fn write_late(
    late: &Dataset,
    pipeline: &str,
    inputs: &[&str],
    rows: &[LateRow],
    now: i64,
    wb: &mut WriteBatch,
) -> Result<()> {
    let n = rows.len();
    let ts = || TimestampMicrosecondBuilder::with_capacity(n).with_timezone(UTC);
    let (mut p, mut d, mut r) = (
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    let (mut e, mut w, mut t) = (ts(), ts(), ts());
    for x in rows {
        p.append_value(pipeline);
        d.append_value(inputs[x.input]);
        e.append_value(x.event_ts);
        w.append_value(x.watermark);
        r.append_value(&x.row);
        t.append_value(now);
    }
    let cols: Vec<ArrayRef> = vec![
        Arc::new(p.finish()),
        Arc::new(d.finish()),
        Arc::new(e.finish()),
        Arc::new(w.finish()),
        Arc::new(r.finish()),
        Arc::new(t.finish()),
    ];
    let batch =
        RecordBatch::try_new(late.schema(), cols).map_err(|e| Error::Internal(e.to_string()))?;
    add_rows(late, &batch, wb)
}

/// One row as a JSON object.
pub fn row_json(row: &RecordBatch) -> String {
    let mut w = arrow::json::ArrayWriter::new(Vec::new());
    if w.write(row).is_err() || w.finish().is_err() {
        return String::new();
    }
    let s = String::from_utf8(w.into_inner()).unwrap_or_default();
    s.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string()
}
