//! Webhook ingestion (`POST /api/v1/log`): column-oriented JSON routed to
//! every dataset whose `@source` names the webhook endpoint, with the
//! source's `preproc` applied and every value checked against its field
//! (by `thyme-model`, the same rules the SDK applies), then appended to
//! each dataset's log and the temporal store in one atomic write.
//!
//! `cdc="append"` and `cdc="upsert"` rows are new events / versions;
//! `cdc="delete"` rows delete their key at their timestamp. A bad value
//! anywhere rejects the whole request: nothing of it is stored.

use std::sync::Arc;

use arrow::array::builder::NullBufferBuilder;
use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder,
    Int64Builder, ListArray, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use serde_json::{Map, Value};
use thyme_model::columns::{self, Column, RowError};
use thyme_model::payload::{Cdc, Dataset as DatasetSpec};
use thyme_model::values;
use thyme_storage::WriteBatch;

use crate::catalog::Dataset;
use crate::error::{Error, Result};
use crate::ingest;
use crate::registry::Registry;
use crate::types::{DType, DECIMAL_PRECISION, UTC};

/// Rows written per dataset.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Ingested {
    pub dataset: String,
    pub rows: usize,
    pub cdc: Cdc,
}

/// Route `data` from `webhook`/`endpoint` to its datasets and store it.
pub fn ingest(
    registry: &Registry,
    webhook: &str,
    endpoint: &str,
    data: &Map<String, Value>,
) -> Result<Vec<Ingested>> {
    let routes = registry.routes(webhook, endpoint).ok_or_else(|| {
        let known = registry.has_webhook(webhook);
        Error::UnknownEndpoint(if known {
            format!(
                "webhook {webhook:?} has no endpoint {endpoint:?} (no dataset's @source names it)"
            )
        } else {
            format!("no dataset is sourced from webhook {webhook:?} (endpoint {endpoint:?})")
        })
    })?;
    let catalog = registry.catalog();
    let mut batches: Vec<(Arc<Dataset>, RecordBatch, Cdc, String)> =
        Vec::with_capacity(routes.len());
    for (route, spec) in &routes {
        let source = &spec.sources[route.source];
        let table = catalog
            .get(&thyme_model::snake_case(&spec.name))
            .ok_or_else(|| {
                Error::UnknownTable(format!(
                    "{} (dataset {} was dropped through SQL; commit it again)",
                    thyme_model::snake_case(&spec.name),
                    spec.name
                ))
            })?;
        let in_dataset = |e: RowError| Error::InvalidRow {
            message: format!("dataset {}: {}", spec.name, e.message),
            row: e.row,
            field: e.field,
            value: e.value,
        };
        let (cols, rows) =
            columns::resolve(spec, Some(&source.preproc), data).map_err(in_dataset)?;
        columns::check(spec, &cols, rows).map_err(in_dataset)?;
        let batch = to_batch(&table, spec, &cols, rows)?;
        batches.push((table, batch, source.cdc, spec.name.clone()));
    }
    let rows: usize = batches.iter().map(|b| b.1.num_rows()).sum();
    let mut wb = WriteBatch::with_capacity(rows * 2, rows * 96);
    let mut out = Vec::with_capacity(batches.len());
    for (table, batch, cdc, name) in &batches {
        if *cdc == Cdc::Delete {
            ingest::add_deletes(table, batch, &mut wb)?;
        } else {
            ingest::add_rows(table, batch, &mut wb)?;
        }
        out.push(Ingested {
            dataset: name.clone(),
            rows: batch.num_rows(),
            cdc: *cdc,
        });
    }
    if !wb.is_empty() {
        catalog.store().write(wb)?;
    }
    Ok(out)
}

/// Build the Arrow batch of checked columns (values already fit their
/// types, so conversions here cannot fail on user data).
pub fn to_batch(
    table: &Dataset,
    spec: &DatasetSpec,
    cols: &[Column<'_>],
    rows: usize,
) -> Result<RecordBatch> {
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(cols.len());
    for ((field, col), f) in table.fields().iter().zip(cols).zip(&spec.fields) {
        let json_text = matches!(
            f.ty.non_optional(),
            thyme_model::Type::Map(_) | thyme_model::Type::Struct(_)
        );
        arrays.push(json_array(field.dtype, json_text, rows, &|i| col.get(i))?);
    }
    Ok(RecordBatch::try_new(table.schema(), arrays)?)
}

fn internal(e: String) -> Error {
    Error::Internal(e)
}

/// One Arrow array of `dtype` from `n` checked JSON values.
pub fn json_array<'v>(
    dtype: DType,
    json_text: bool,
    n: usize,
    get: &dyn Fn(usize) -> &'v Value,
) -> Result<ArrayRef> {
    Ok(match dtype {
        DType::Int => {
            let mut b = Int64Builder::with_capacity(n);
            for i in 0..n {
                b.append_option(values::as_int(get(i)));
            }
            Arc::new(b.finish())
        }
        DType::Float => {
            let mut b = Float64Builder::with_capacity(n);
            for i in 0..n {
                b.append_option(get(i).as_f64());
            }
            Arc::new(b.finish())
        }
        DType::Bool => {
            let mut b = BooleanBuilder::with_capacity(n);
            for i in 0..n {
                b.append_option(get(i).as_bool());
            }
            Arc::new(b.finish())
        }
        DType::Str if json_text => {
            let mut b = StringBuilder::with_capacity(n, n * 32);
            for i in 0..n {
                match get(i) {
                    Value::Null => b.append_null(),
                    v => b.append_value(v.to_string()),
                }
            }
            Arc::new(b.finish())
        }
        DType::Str => {
            let mut b = StringBuilder::with_capacity(n, n * 16);
            for i in 0..n {
                b.append_option(get(i).as_str());
            }
            Arc::new(b.finish())
        }
        DType::Bytes => {
            let mut b = BinaryBuilder::with_capacity(n, n * 16);
            for i in 0..n {
                match get(i) {
                    Value::Null => b.append_null(),
                    v => b.append_value(values::parse_bytes(v).map_err(internal)?),
                }
            }
            Arc::new(b.finish())
        }
        DType::Datetime => {
            let mut b = TimestampMicrosecondBuilder::with_capacity(n).with_timezone(UTC);
            for i in 0..n {
                match get(i) {
                    Value::Null => b.append_null(),
                    v => b.append_value(values::parse_timestamp(v).map_err(internal)?),
                }
            }
            Arc::new(b.finish())
        }
        DType::Date => {
            let mut b = Date32Builder::with_capacity(n);
            for i in 0..n {
                match get(i) {
                    Value::Null => b.append_null(),
                    v => b.append_value(values::parse_date(v).map_err(internal)?),
                }
            }
            Arc::new(b.finish())
        }
        DType::Decimal(scale) => {
            let mut b = Decimal128Builder::with_capacity(n)
                .with_precision_and_scale(DECIMAL_PRECISION, scale as i8)?;
            for i in 0..n {
                match get(i) {
                    Value::Null => b.append_null(),
                    v => b.append_value(values::parse_decimal(v, scale).map_err(internal)?),
                }
            }
            Arc::new(b.finish())
        }
        DType::List(elem) => {
            let mut offsets = Vec::with_capacity(n + 1);
            offsets.push(0i32);
            let mut nulls = NullBufferBuilder::new(n);
            let mut items: Vec<&'v Value> = Vec::with_capacity(n * 4);
            for i in 0..n {
                match get(i) {
                    Value::Array(xs) => {
                        items.extend(xs.iter());
                        nulls.append_non_null();
                    }
                    _ => nulls.append_null(),
                }
                offsets.push(
                    i32::try_from(items.len())
                        .map_err(|_| internal("list column too large".into()))?,
                );
            }
            let values = json_array(elem.dtype(), false, items.len(), &|k| items[k])?;
            let DataType::List(field) = dtype.arrow() else {
                unreachable!("a list type")
            };
            Arc::new(ListArray::try_new(
                field,
                OffsetBuffer::new(offsets.into()),
                values,
                nulls.finish(),
            )?)
        }
    })
}
