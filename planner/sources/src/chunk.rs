//! Applying what a connector read: check, skip and record bad rows, store
//! the good ones, and move the source's position, in one atomic write.

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

/// What a connector read in one go: rows (JSON objects keyed by column
/// name), where each came from, what it could not parse at all, and its
/// position after all of them.
#[derive(Debug, Default)]
pub struct Chunk {
    pub rows: Vec<Map<String, Value>>,
    /// One per row.
    pub locations: Vec<String>,
    pub unparsed: Vec<Rejection>,
    pub position: Value,
    /// Which rows are deletes (change streams: Debezium, logical
    /// replication); empty when none is. A delete needs only the key fields
    /// and the timestamp.
    pub deletes: Vec<bool>,
}

impl Chunk {
    /// Add a row read at `location`.
    pub fn push(&mut self, row: Map<String, Value>, location: String, delete: bool) {
        if delete && self.deletes.len() < self.rows.len() {
            self.deletes.resize(self.rows.len(), false);
        }
        if delete || !self.deletes.is_empty() {
            self.deletes.push(delete);
        }
        self.rows.push(row);
        self.locations.push(location);
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

/// The columnar form `columns::resolve` reads, of the rows at `keep`.
fn columns_of(rows: &[Map<String, Value>], keep: &[usize]) -> Map<String, Value> {
    let mut names: Vec<&String> = Vec::new();
    for &i in keep {
        for k in rows[i].keys() {
            if !names.contains(&k) {
                names.push(k);
            }
        }
    }
    let mut out = Map::with_capacity(names.len());
    for name in names {
        let col: Vec<Value> = keep
            .iter()
            .map(|&i| rows[i].get(name).cloned().unwrap_or(Value::Null))
            .collect();
        out.insert(name.clone(), Value::Array(col));
    }
    out
}

fn bound(s: &Option<String>, what: &str) -> Result<Option<i64>> {
    s.as_deref()
        .map(|t| {
            thyme_model::values::parse_timestamp_str(t)
                .map_err(|e| Error::InvalidDefinition(format!("source {what} {t:?}: {e}")))
        })
        .transpose()
}

/// Check the rows at `idx` against `spec`: the good ones' indices; the bad
/// ones go to `rejected` with their reasons.
fn check(
    spec: &DatasetSpec,
    preproc: &std::collections::BTreeMap<String, thyme_model::payload::Preproc>,
    chunk: &Chunk,
    idx: Vec<usize>,
    rejected: &mut Vec<Rejection>,
) -> Vec<usize> {
    if idx.is_empty() {
        return idx;
    }
    let data = columns_of(&chunk.rows, &idx);
    let location = |r: usize| chunk.locations.get(idx[r]).cloned().unwrap_or_default();
    match columns::resolve(spec, Some(preproc), &data) {
        Ok((cols, rows)) => {
            let bad = columns::check_rows(spec, &cols, rows);
            for (&r, e) in &bad {
                rejected.push(Rejection {
                    location: location(r),
                    field: e.field.clone(),
                    value: e.value.as_ref().map(short),
                    error: e.message.clone(),
                });
            }
            idx.into_iter()
                .enumerate()
                .filter(|(r, _)| !bad.contains_key(r))
                .map(|(_, i)| i)
                .collect()
        }
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
            Vec::new()
        }
    }
}

/// `spec` with only its key fields and timestamp (what a delete carries).
fn keys_only(spec: &DatasetSpec) -> DatasetSpec {
    let mut s = spec.clone();
    s.fields.retain(|f| f.key || f.timestamp);
    s
}

/// The rows of `chunk` at `good` (checked against `spec`) as a batch of the
/// dataset's table, in the table's schema. For deletes (`spec` is
/// [`keys_only`]) the other columns are nulls, in a schema that allows them
/// (deletes read only the key and the timestamp).
fn batch_of(
    table: &thyme_table::catalog::Dataset,
    spec: &DatasetSpec,
    preproc: &std::collections::BTreeMap<String, thyme_model::payload::Preproc>,
    chunk: &Chunk,
    good: &[usize],
    deletes: bool,
) -> Result<arrow::record_batch::RecordBatch> {
    let data = columns_of(&chunk.rows, good);
    let (cols, rows) = columns::resolve(spec, Some(preproc), &data)
        .map_err(|e| Error::Internal(format!("checked rows no longer resolve: {e}")))?;
    if !deletes {
        return webhook::to_batch(table, spec, &cols, rows);
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
    Ok(arrow::record_batch::RecordBatch::try_new(schema, arrays)?)
}

/// Keep the rows of `batch` whose timestamp is in `[since, until)`.
fn window(
    table: &thyme_table::catalog::Dataset,
    source: &Source,
    batch: arrow::record_batch::RecordBatch,
) -> Result<arrow::record_batch::RecordBatch> {
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
    let (dels, ups): (Vec<usize>, Vec<usize>) =
        (0..chunk.rows.len()).partition(|&i| chunk.is_delete(i));
    let mut wb = WriteBatch::new();
    let mut stored = 0;
    let ups = check(spec, &source.preproc, &chunk, ups, &mut rejected);
    if !ups.is_empty() {
        let batch = window(
            &table,
            source,
            batch_of(&table, spec, &source.preproc, &chunk, &ups, false)?,
        )?;
        stored += batch.num_rows();
        match source.cdc {
            Cdc::Append | Cdc::Upsert | Cdc::Debezium | Cdc::Native => {
                ingest::add_rows(&table, &batch, &mut wb)?
            }
            Cdc::Delete => ingest::add_deletes(&table, &batch, &mut wb)?,
        }
    }
    if !dels.is_empty() {
        let kspec = keys_only(spec);
        let preproc = source
            .preproc
            .iter()
            .filter(|(k, _)| kspec.fields.iter().any(|f| &f.name == *k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let dels = check(&kspec, &preproc, &chunk, dels, &mut rejected);
        if !dels.is_empty() {
            let batch = window(
                &table,
                source,
                batch_of(&table, &kspec, &preproc, &chunk, &dels, true)?,
            )?;
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
