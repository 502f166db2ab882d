//! Applying what a connector read: check, skip and record bad rows, store
//! the good ones, and move the source's position, in one atomic write.
//!
//! Rows come as JSON objects (Kafka messages, CSV and JSON lines, Postgres
//! rows) or as Arrow batches (Parquet). An Arrow batch whose columns already
//! fit the dataset (the same names, types that convert without loss, no
//! null in a required field, no constraint to check value by value) is
//! stored as it is, converted column by column; any other batch goes the
//! JSON way, which names the row, field and value of every problem. Either
//! way the same rows are stored and the same rows are skipped.

use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use serde_json::{Map, Value};
use thyme_model::columns;
use thyme_model::payload::{Cdc, Dataset as DatasetSpec, Source};
use thyme_model::values::short;
use thyme_storage::WriteBatch;
use thyme_table::catalog::Catalog;
use thyme_table::error::{Error, Result};
use thyme_table::{ingest, webhook};

use crate::position::SourceState;
use crate::rejected::{add_rejected, rejected_table, MAX_KEPT_PER_SOURCE};

/// A row (or message, or line) a source skipped, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// Where it was: `orders-3.csv line 17`, `partition 2 offset 991`.
    pub location: String,
    pub field: Option<String>,
    /// The offending value (short form).
    pub value: Option<String>,
    pub error: String,
}

/// Where a row came from, kept compact (no text is made for a row unless
/// it is rejected).
#[derive(Debug, Clone, PartialEq)]
pub enum Location {
    Text(String),
    /// A Kafka message.
    Message {
        partition: i32,
        offset: i64,
    },
    /// A line of a text file (1-based).
    Line {
        file: Arc<str>,
        line: u64,
    },
    /// A row of a Parquet file (1-based).
    Row {
        file: Arc<str>,
        row: u64,
    },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Text(t) => f.write_str(t),
            Location::Message { partition, offset } => {
                write!(f, "partition {partition} offset {offset}")
            }
            Location::Line { file, line } => write!(f, "{file} line {line}"),
            Location::Row { file, row } => write!(f, "{file} row {row}"),
        }
    }
}

impl From<String> for Location {
    fn from(s: String) -> Self {
        Location::Text(s)
    }
}

/// Rows read as Arrow (a Parquet file's batches), with the file they came
/// from; their rows are numbered from 1 across the batches.
#[derive(Debug)]
pub struct ArrowRows {
    pub file: Arc<str>,
    pub batches: Vec<RecordBatch>,
}

/// What a connector read in one go: rows (JSON objects keyed by column
/// name, or Arrow batches), where each came from, what it could not parse
/// at all, and its position after all of them.
#[derive(Debug, Default)]
pub struct Chunk {
    pub rows: Vec<Map<String, Value>>,
    /// One per row.
    pub locations: Vec<Location>,
    /// Rows read as Arrow (a chunk carries these or JSON rows, not both).
    pub arrow: Option<ArrowRows>,
    pub unparsed: Vec<Rejection>,
    pub position: Value,
    /// Which rows are deletes (change streams: Debezium, logical
    /// replication); empty when none is. A delete needs only the key fields
    /// and the timestamp.
    pub deletes: Vec<bool>,
}

impl Chunk {
    /// Add a row read at `location`.
    pub fn push(&mut self, row: Map<String, Value>, location: impl Into<Location>, delete: bool) {
        if delete && self.deletes.len() < self.rows.len() {
            self.deletes.resize(self.rows.len(), false);
        }
        if delete || !self.deletes.is_empty() {
            self.deletes.push(delete);
        }
        self.rows.push(row);
        self.locations.push(location.into());
    }

    fn is_delete(&self, row: usize) -> bool {
        self.deletes.get(row).copied().unwrap_or(false)
    }
}

/// What applying a chunk did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    pub rows: usize,
    pub skipped: usize,
}

/// The columnar form `columns::resolve` reads, of the rows at `idx`; the
/// values are moved out of the rows (each row is read once). A column a
/// row lacks is null there.
fn take_columns(rows: &mut [Map<String, Value>], idx: &[usize]) -> Map<String, Value> {
    let mut names: Vec<String> = Vec::new();
    let mut cols: Vec<Vec<Value>> = Vec::new();
    for (r, &i) in idx.iter().enumerate() {
        for (pos, (k, v)) in std::mem::take(&mut rows[i]).into_iter().enumerate() {
            // Rows mostly share their columns, in the same order.
            let c = if names.get(pos) == Some(&k) {
                pos
            } else if let Some(c) = names.iter().position(|n| *n == k) {
                c
            } else {
                names.push(k);
                cols.push(Vec::with_capacity(idx.len()));
                names.len() - 1
            };
            let col = &mut cols[c];
            col.resize(r, Value::Null);
            col.push(v);
        }
    }
    names
        .into_iter()
        .zip(cols)
        .map(|(n, mut c)| {
            c.resize(idx.len(), Value::Null);
            (n, Value::Array(c))
        })
        .collect()
}

/// The rows `keep` (ascending) of columnar `data`.
fn keep_rows(data: &Map<String, Value>, keep: &[usize]) -> Map<String, Value> {
    data.iter()
        .map(|(k, v)| {
            let col = match v {
                Value::Array(items) => keep.iter().map(|&r| items[r].clone()).collect(),
                _ => Vec::new(),
            };
            (k.clone(), Value::Array(col))
        })
        .collect()
}
fn bound(s: &Option<String>, what: &str) -> Result<Option<i64>> {
    s.as_deref()
        .map(|t| {
            thyme_model::values::parse_timestamp_str(t)
                .map_err(|e| Error::InvalidDefinition(format!("source {what} {t:?}: {e}")))
        })
        .transpose()
}

/// The rows of `chunk` at `idx` checked against `spec`, the good ones as
/// a batch of the dataset's table (`None`: none is good); the bad ones go to
/// `rejected` with their reasons. For deletes (`spec` is [`keys_only`]) the
/// other columns are nulls, in a schema that allows them (deletes read only
/// the key and the timestamp).
fn rows_batch(
    table: &thyme_table::catalog::Dataset,
    spec: &DatasetSpec,
    preproc: &std::collections::BTreeMap<String, thyme_model::payload::Preproc>,
    chunk: &mut Chunk,
    idx: &[usize],
    deletes: bool,
    rejected: &mut Vec<Rejection>,
) -> Result<Option<RecordBatch>> {
    if idx.is_empty() {
        return Ok(None);
    }
    let data = take_columns(&mut chunk.rows, idx);
    let location = |r: usize| {
        chunk
            .locations
            .get(idx[r])
            .map(ToString::to_string)
            .unwrap_or_default()
    };
    let (cols, rows) = match columns::resolve(spec, Some(preproc), &data) {
        Ok(c) => c,
        // A chunk-wide problem (a required column missing everywhere):
        // every row of it is skipped with that reason.
        Err(e) => {
            for r in 0..idx.len() {
                rejected.push(Rejection {
                    location: location(r),
                    field: e.field.clone(),
                    value: None,
                    error: e.message.clone(),
                });
            }
            return Ok(None);
        }
    };
    let bad = columns::check_rows(spec, &cols, rows);
    if bad.is_empty() {
        return batch_of(table, spec, &cols, rows, deletes).map(Some);
    }
    for (&r, e) in &bad {
        rejected.push(Rejection {
            location: location(r),
            field: e.field.clone(),
            value: e.value.as_ref().map(short),
            error: e.message.clone(),
        });
    }
    let good: Vec<usize> = (0..rows).filter(|r| !bad.contains_key(r)).collect();
    if good.is_empty() {
        return Ok(None);
    }
    let data = keep_rows(&data, &good);
    let (cols, rows) = columns::resolve(spec, Some(preproc), &data)
        .map_err(|e| Error::Internal(format!("checked rows no longer resolve: {e}")))?;
    batch_of(table, spec, &cols, rows, deletes).map(Some)
}

/// `spec` with only its key fields and timestamp (what a delete carries).
fn keys_only(spec: &DatasetSpec) -> DatasetSpec {
    let mut s = spec.clone();
    s.fields.retain(|f| f.key || f.timestamp);
    s
}

/// Checked columns as a batch of the dataset's table.
fn batch_of(
    table: &thyme_table::catalog::Dataset,
    spec: &DatasetSpec,
    cols: &[columns::Column<'_>],
    rows: usize,
    deletes: bool,
) -> Result<RecordBatch> {
    if !deletes {
        return webhook::to_batch(table, spec, cols, rows);
    }
    let schema = table.schema();
    let mut arrays = Vec::with_capacity(schema.fields().len());
    let mut fields = Vec::with_capacity(schema.fields().len());
    for (f, tf) in schema.fields().iter().zip(table.fields()) {
        let col = spec
            .fields
            .iter()
            .position(|s| s.name == f.name().as_str())
            .map(|c| &cols[c]);
        arrays.push(match col {
            Some(col) => webhook::json_array(tf.dtype, false, rows, &|i| col.get(i))?,
            None => arrow::array::new_null_array(f.data_type(), rows),
        });
        fields.push(f.as_ref().clone().with_nullable(true));
    }
    let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(fields));
    Ok(RecordBatch::try_new(schema, arrays)?)
}

/// `batch` (columns by name, as read) in the table's schema when every
/// value fits without a check of its own: `None` sends it the JSON way.
fn conform(
    table: &thyme_table::catalog::Dataset,
    spec: &DatasetSpec,
    preproc: &std::collections::BTreeMap<String, thyme_model::payload::Preproc>,
    batch: &RecordBatch,
) -> Option<RecordBatch> {
    use thyme_model::payload::Preproc;
    use thyme_model::types::Type;
    let schema = table.schema();
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(spec.fields.len());
    for (f, target) in spec.fields.iter().zip(schema.fields()) {
        let name = match preproc.get(&f.name) {
            None => f.name.as_str(),
            Some(Preproc::Ref(other)) => other.as_str(),
            Some(Preproc::Const(_)) => return None,
        };
        let Some(col) = batch.column_by_name(name) else {
            if f.ty.is_optional() && f.default.is_none() {
                arrays.push(arrow::array::new_null_array(
                    target.data_type(),
                    batch.num_rows(),
                ));
                continue;
            }
            return None;
        };
        let from = match col.data_type() {
            DataType::Dictionary(_, v) => v.as_ref(),
            t => t,
        };
        let fits = match f.ty.non_optional() {
            Type::Int => from.is_integer(),
            Type::Float => from.is_floating() || from.is_integer(),
            Type::Str => matches!(
                from,
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            ),
            Type::Bool => from == &DataType::Boolean,
            Type::Datetime => matches!(from, DataType::Timestamp(..)),
            _ => false,
        };
        if !fits || (!f.ty.is_optional() && col.null_count() > 0) {
            return None;
        }
        let arr = if col.data_type() == target.data_type() {
            col.clone()
        } else {
            // Safe casts: a value that does not fit (an unsigned integer
            // past i64) fails the whole batch over to the JSON way.
            arrow::compute::cast(col, target.data_type()).ok()?
        };
        if arr.null_count() != col.null_count() {
            return None;
        }
        arrays.push(arr);
    }
    RecordBatch::try_new(schema, arrays).ok()
}

/// The rows of Arrow `batches` as JSON objects, at their locations.
pub(crate) fn arrow_to_rows(
    rows: &ArrowRows,
    chunk: &mut Chunk,
) -> std::result::Result<(), String> {
    let mut n = 0u64;
    for batch in &rows.batches {
        let mut w = arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow::json::writer::JsonArray>(Vec::new());
        w.write(batch).map_err(|e| e.to_string())?;
        w.finish().map_err(|e| e.to_string())?;
        let objects: Vec<Map<String, Value>> =
            serde_json::from_slice(&w.into_inner()).map_err(|e| e.to_string())?;
        for o in objects {
            n += 1;
            chunk.push(
                o,
                Location::Row {
                    file: rows.file.clone(),
                    row: n,
                },
                false,
            );
        }
    }
    Ok(())
}

/// Keep the rows of `batch` whose timestamp is in `[since, until)`.
fn window(
    table: &thyme_table::catalog::Dataset,
    source: &Source,
    batch: RecordBatch,
) -> Result<RecordBatch> {
    let (since, until) = (
        bound(&source.since, "since")?,
        bound(&source.until, "until")?,
    );
    if since.is_none() && until.is_none() {
        return Ok(batch);
    }
    let ts = batch
        .column(table.ts_index())
        .as_any()
        .downcast_ref::<arrow::array::TimestampMicrosecondArray>()
        .ok_or_else(|| Error::Internal("timestamp column".into()))?;
    let keep: arrow::array::BooleanArray = ts
        .iter()
        .map(|t| t.map(|t| since.is_none_or(|s| t >= s) && until.is_none_or(|u| t < u)))
        .collect();
    Ok(arrow::compute::filter_record_batch(&batch, &keep)?)
}

/// Apply `chunk`, read by source `n` (`source`) of dataset `spec`: rows
/// that do not fit the dataset are skipped and recorded; rows outside
/// `since` / `until` are left out (not errors); the rest are stored by the
/// source's `cdc` (rows the chunk marks as deletes are deletes); and
/// `state` moves to the chunk's position, all in one store write. `now`
/// stamps the rejected rows.
pub fn apply(
    catalog: &Catalog,
    spec: &DatasetSpec,
    n: usize,
    source: &Source,
    state: &mut SourceState,
    chunk: Chunk,
    now: i64,
) -> Result<Applied> {
    let table_name = thyme_model::snake_case(&spec.name);
    let table = catalog
        .get(&table_name)
        .ok_or_else(|| Error::UnknownTable(table_name.clone()))?;
    let mut chunk = chunk;
    let mut rejected = std::mem::take(&mut chunk.unparsed);
    let mut wb = WriteBatch::new();
    let mut stored = 0;
    // Rows (not deletes) as the source's `cdc` stores them.
    let store = |batch: RecordBatch, wb: &mut WriteBatch| -> Result<usize> {
        let batch = window(&table, source, batch)?;
        match source.cdc {
            Cdc::Append | Cdc::Upsert | Cdc::Debezium | Cdc::Native => {
                ingest::add_rows(&table, &batch, wb)?
            }
            Cdc::Delete => ingest::add_deletes(&table, &batch, wb)?,
        }
        Ok(batch.num_rows())
    };
    if let Some(arrow_rows) = chunk.arrow.take() {
        let fast: Option<Vec<RecordBatch>> = arrow_rows
            .batches
            .iter()
            .map(|b| conform(&table, spec, &source.preproc, b))
            .collect();
        match fast {
            Some(batches) => {
                for b in batches {
                    stored += store(b, &mut wb)?;
                }
            }
            // Some batch needs the row-by-row check: the whole file goes
            // that way, so its rows keep their order.
            None => {
                if let Err(e) = arrow_to_rows(&arrow_rows, &mut chunk) {
                    rejected.push(Rejection {
                        location: arrow_rows.file.to_string(),
                        field: None,
                        value: None,
                        error: format!("cannot read the rows: {e}"),
                    });
                }
            }
        }
    }
    let (dels, ups): (Vec<usize>, Vec<usize>) =
        (0..chunk.rows.len()).partition(|&i| chunk.is_delete(i));
    if let Some(batch) = rows_batch(
        &table,
        spec,
        &source.preproc,
        &mut chunk,
        &ups,
        false,
        &mut rejected,
    )? {
        stored += store(batch, &mut wb)?;
    }
    if !dels.is_empty() {
        let kspec = keys_only(spec);
        let preproc = source
            .preproc
            .iter()
            .filter(|(k, _)| kspec.fields.iter().any(|f| &f.name == *k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(batch) = rows_batch(
            &table,
            &kspec,
            &preproc,
            &mut chunk,
            &dels,
            true,
            &mut rejected,
        )? {
            let batch = window(&table, source, batch)?;
            stored += batch.num_rows();
            ingest::add_deletes(&table, &batch, &mut wb)?;
        }
    }
    let room = MAX_KEPT_PER_SOURCE.saturating_sub(state.kept_rejects) as usize;
    let kept = rejected.len().min(room);
    if kept > 0 {
        let t = rejected_table(catalog)?;
        add_rejected(
            &t,
            &spec.name,
            source.connector.name(),
            &rejected[..kept],
            now,
            &mut wb,
        )?;
    }
    state.rows += stored as u64;
    state.skipped += rejected.len() as u64;
    state.kept_rejects += kept as u64;
    state.position = chunk.position;
    state.put(&spec.name, n, &mut wb)?;
    catalog.store().write(wb)?;
    Ok(Applied {
        rows: stored,
        skipped: rejected.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        DictionaryArray, Float32Array, Int32Array, Int64Array, StringArray,
        TimestampNanosecondArray, UInt64Array,
    };
    use arrow::datatypes::{Field, Int32Type, Schema};

    fn table(spec: &DatasetSpec) -> Arc<thyme_table::catalog::Dataset> {
        let catalog = Catalog::load(thyme_storage::memory::MemoryStore::shared()).unwrap();
        catalog
            .create(thyme_table::registry::table_def(spec).unwrap(), false)
            .unwrap();
        catalog.get(&thyme_model::snake_case(&spec.name)).unwrap()
    }

    fn spec() -> DatasetSpec {
        serde_json::from_value(serde_json::json!({"name": "Reading", "fields": [
            {"name": "rid", "type": "int"},
            {"name": "v", "type": "float"},
            {"name": "tag", "type": "str"},
            {"name": "note", "type": {"optional": "str"}},
            {"name": "ts", "type": "datetime", "timestamp": true}]}))
        .unwrap()
    }

    fn batch(cols: Vec<(&str, ArrayRef)>) -> RecordBatch {
        let fields: Vec<Field> = cols
            .iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect();
        RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            cols.into_iter().map(|(_, a)| a).collect(),
        )
        .unwrap()
    }

    /// What the JSON way makes of `b` (rows, checked one by one).
    fn json_way(
        t: &thyme_table::catalog::Dataset,
        spec: &DatasetSpec,
        b: &RecordBatch,
    ) -> (Option<RecordBatch>, usize) {
        let mut chunk = Chunk::default();
        let rows = ArrowRows {
            file: Arc::from("f.parquet"),
            batches: vec![b.clone()],
        };
        arrow_to_rows(&rows, &mut chunk).unwrap();
        let idx: Vec<usize> = (0..chunk.rows.len()).collect();
        let mut rejected = Vec::new();
        let out = rows_batch(
            t,
            spec,
            &Default::default(),
            &mut chunk,
            &idx,
            false,
            &mut rejected,
        )
        .unwrap();
        (out, rejected.len())
    }

    #[test]
    fn arrow_batches_that_fit_are_stored_as_the_json_way_stores_them() {
        let spec = spec();
        let t = table(&spec);
        let tags: DictionaryArray<Int32Type> = vec!["a", "b", "a"].into_iter().collect();
        let b = batch(vec![
            (
                "ts",
                Arc::new(
                    TimestampNanosecondArray::from(vec![
                        1_700_000_000_000_001_000i64,
                        1_700_000_001_000_000_000,
                        1_700_000_002_500_000_000,
                    ])
                    .with_timezone("UTC"),
                ) as ArrayRef,
            ),
            ("rid", Arc::new(Int32Array::from(vec![1, -2, 3]))),
            ("v", Arc::new(Float32Array::from(vec![0.5, 1.0, -2.25]))),
            ("tag", Arc::new(tags)),
            ("extra", Arc::new(Int64Array::from(vec![9, 9, 9]))),
        ]);
        let fast = conform(&t, &spec, &Default::default(), &b).expect("fits");
        let (slow, bad) = json_way(&t, &spec, &b);
        assert_eq!(bad, 0);
        assert_eq!(Some(fast), slow);
    }

    #[test]
    fn arrow_batches_that_do_not_fit_go_the_json_way() {
        let spec = spec();
        let t = table(&spec);
        let ts = || -> ArrayRef {
            Arc::new(TimestampNanosecondArray::from(vec![0i64, 1_000]).with_timezone("UTC"))
        };
        let v = || -> ArrayRef { Arc::new(Float32Array::from(vec![1.0, 2.0])) };
        let tag = || -> ArrayRef { Arc::new(StringArray::from(vec!["x", "y"])) };
        // A null in a required field; an unsigned value past i64; a
        // required column missing; text where a number belongs.
        let cases = [
            batch(vec![
                ("rid", Arc::new(Int64Array::from(vec![Some(1), None]))),
                ("v", v()),
                ("tag", tag()),
                ("ts", ts()),
            ]),
            batch(vec![
                ("rid", Arc::new(UInt64Array::from(vec![1, u64::MAX]))),
                ("v", v()),
                ("tag", tag()),
                ("ts", ts()),
            ]),
            batch(vec![
                ("rid", Arc::new(Int64Array::from(vec![1, 2]))),
                ("tag", tag()),
                ("ts", ts()),
            ]),
            batch(vec![
                ("rid", Arc::new(StringArray::from(vec!["1", "2"]))),
                ("v", v()),
                ("tag", tag()),
                ("ts", ts()),
            ]),
        ];
        for (i, b) in cases.iter().enumerate() {
            assert!(
                conform(&t, &spec, &Default::default(), b).is_none(),
                "case {i}"
            );
            let (_, bad) = json_way(&t, &spec, b);
            assert!(bad > 0, "case {i}: the JSON way names the problem");
        }
    }
}
