//! Writing rows: Arrow batches shaped like a dataset become one atomic
//! [`WriteBatch`] (versions or events, plus the dataset's log records).
//!
//! Log records are `op · row`, where `op` is [`LOG_UPSERT`] or [`LOG_DELETE`]
//! and `row` uses the row codec; pipelines replay them in ingest order.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef};
use arrow::compute::{cast_with_options, CastOptions};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use thyme_storage::{TemporalStore, WriteBatch};

use crate::catalog::Dataset;
use crate::codec::RowEncoder;
use crate::error::{Error, Result};
use crate::types::DType;

/// Log record tag: a new row (or event).
pub const LOG_UPSERT: u8 = 0;
/// Log record tag: a delete version (the row holds only key and time).
pub const LOG_DELETE: u8 = 1;

/// Check required values are present (keys, event time, non-optional fields).
pub fn check_not_null(ds: &Dataset, columns: &[ArrayRef]) -> Result<()> {
    for (j, f) in ds.fields().iter().enumerate() {
        if f.nullable {
            continue;
        }
        let col = &columns[j];
        if col.null_count() > 0 {
            let row = (0..col.len()).find(|&i| col.is_null(i)).unwrap_or(0);
            return Err(Error::NotNull {
                table: ds.name().to_string(),
                column: f.name.clone(),
                row: row + 1,
            });
        }
    }
    Ok(())
}

/// Add the rows of `batch` (already of the dataset's schema) to `wb`.
pub fn add_rows(ds: &Dataset, batch: &RecordBatch, wb: &mut WriteBatch) -> Result<()> {
    check_not_null(ds, batch.columns())?;
    let enc = RowEncoder::new(ds, batch)?;
    let mut row = Vec::with_capacity(128);
    let mut key = Vec::with_capacity(32);
    let mut rec = Vec::with_capacity(128);
    for i in 0..batch.num_rows() {
        enc.encode_row(i, &mut row);
        let ts = enc.ts(i);
        if ds.is_keyed() {
            enc.encode_key(i, &mut key);
            wb.put_version(ds.id, &key, ts, &row);
        } else {
            wb.put_event(ds.id, ts, &row);
        }
        rec.clear();
        rec.push(LOG_UPSERT);
        rec.extend_from_slice(&row);
        wb.append_log(ds.id, &rec);
    }
    Ok(())
}

/// Add delete versions for the rows of `batch` (dataset schema; only the key
/// fields and the event time are read).
pub fn add_deletes(ds: &Dataset, batch: &RecordBatch, wb: &mut WriteBatch) -> Result<()> {
    if !ds.is_keyed() {
        return Err(Error::Unsupported(format!(
            "DELETE on the keyless dataset {} (events are immutable)",
            ds.name()
        )));
    }
    let enc = RowEncoder::new(ds, batch)?;
    let mut key = Vec::with_capacity(32);
    let mut rec = Vec::with_capacity(64);
    let mut row = Vec::with_capacity(64);
    for i in 0..batch.num_rows() {
        enc.encode_key(i, &mut key);
        let ts = enc.ts(i);
        enc.encode_key_row(i, &mut row);
        wb.delete_version(ds.id, &key, ts, &row);
        rec.clear();
        rec.push(LOG_DELETE);
        rec.extend_from_slice(&row);
        wb.append_log(ds.id, &rec);
    }
    Ok(())
}

/// Write rows atomically; returns how many.
pub fn write_rows(
    store: &dyn TemporalStore,
    ds: &Dataset,
    batches: &[RecordBatch],
) -> Result<usize> {
    let (wb, rows) = rows_batch(ds, batches)?;
    if !wb.is_empty() {
        store.write(wb)?;
    }
    Ok(rows)
}

/// The changes that write `batches` (dataset schema), and their row count.
pub fn rows_batch(ds: &Dataset, batches: &[RecordBatch]) -> Result<(WriteBatch, usize)> {
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let mut wb = WriteBatch::with_capacity(rows * 2, rows * 96);
    for b in batches {
        add_rows(ds, b, &mut wb)?;
    }
    Ok((wb, rows))
}

/// Convert `array` to the type of field `j` of `ds`, naming the column, the
/// (1-based) row and the value when a value does not fit.
pub fn conform_column(
    ds: &Dataset,
    j: usize,
    array: &ArrayRef,
    row_offset: usize,
) -> Result<ArrayRef> {
    let field = &ds.fields()[j];
    let target = field.dtype.arrow();
    if array.data_type() == &target {
        return Ok(array.clone());
    }
    if array.data_type() == &DataType::Null {
        return Ok(arrow::array::new_null_array(&target, array.len()));
    }
    // Text into bytea: Postgres' hex format (`\x0a0b`) or the raw bytes.
    if field.dtype == DType::Bytes {
        if let Some(s) = array.as_any().downcast_ref::<arrow::array::StringArray>() {
            let mut b = arrow::array::BinaryBuilder::new();
            for (i, v) in s.iter().enumerate() {
                match v {
                    None => b.append_null(),
                    Some(v) => match v.strip_prefix("\\x") {
                        Some(hex) => {
                            b.append_value(decode_hex(hex).ok_or_else(|| Error::InvalidValue {
                                column: field.name.clone(),
                                dtype: field.dtype.to_string(),
                                row: row_offset + i + 1,
                                value: format!("{v:?}"),
                            })?)
                        }
                        None => b.append_value(v.as_bytes()),
                    },
                }
            }
            return Ok(Arc::new(b.finish()));
        }
    }
    let strict = CastOptions {
        safe: false,
        ..Default::default()
    };
    match cast_with_options(array, &target, &strict) {
        Ok(a) => Ok(a),
        Err(e) => {
            // Find the offending value to report it.
            let lenient = cast_with_options(array, &target, &CastOptions::default()).ok();
            let bad = (0..array.len())
                .find(|&i| !array.is_null(i) && lenient.as_ref().is_none_or(|l| l.is_null(i)));
            let (row, value) = match bad {
                Some(i) => (
                    row_offset + i + 1,
                    arrow::util::display::array_value_to_string(array, i)
                        .map(|s| format!("{s:?}"))
                        .unwrap_or_default(),
                ),
                None => (row_offset + 1, e.to_string()),
            };
            Err(Error::InvalidValue {
                column: field.name.clone(),
                dtype: field.dtype.to_string(),
                row,
                value,
            })
        }
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
