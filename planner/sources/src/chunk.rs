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

/// Apply `chunk`, read by source `n` (`source`) of dataset `spec`: rows
/// that do not fit the dataset are skipped and recorded; rows outside
/// `since` / `until` are left out (not errors); the rest are stored by the
/// source's `cdc`; and `state` moves to the chunk's position, all in one
/// store write. `now` stamps the rejected rows.
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
    let mut rejected = chunk.unparsed;
    let all: Vec<usize> = (0..chunk.rows.len()).collect();
    let data = columns_of(&chunk.rows, &all);
    let good: Vec<usize> = match columns::resolve(spec, Some(&source.preproc), &data) {
        Ok((cols, rows)) => {
            let bad = columns::check_rows(spec, &cols, rows);
            for (&r, e) in &bad {
                rejected.push(Rejection {
                    location: chunk.locations.get(r).cloned().unwrap_or_default(),
                    field: e.field.clone(),
                    value: e.value.as_ref().map(short),
                    error: e.message.clone(),
                });
            }
            all.into_iter().filter(|r| !bad.contains_key(r)).collect()
        }
        // A chunk-wide problem (a required column missing everywhere):
        // every row of it is skipped with that reason.
        Err(e) => {
            for loc in &chunk.locations {
                rejected.push(Rejection {
                    location: loc.clone(),
                    field: e.field.clone(),
                    value: None,
                    error: e.message.clone(),
                });
            }
            Vec::new()
        }
    };
    let mut wb = WriteBatch::new();
    let mut stored = 0;
    if !good.is_empty() {
        // Rebuild the columns only when rows were dropped.
        let filtered;
        let data = if good.len() == chunk.rows.len() {
            &data
        } else {
            filtered = columns_of(&chunk.rows, &good);
            &filtered
        };
        let (cols, rows) = columns::resolve(spec, Some(&source.preproc), data)
            .map_err(|e| Error::Internal(format!("checked rows no longer resolve: {e}")))?;
        let mut batch = webhook::to_batch(&table, spec, &cols, rows)?;
        let (since, until) = (
            bound(&source.since, "since")?,
            bound(&source.until, "until")?,
        );
        if since.is_some() || until.is_some() {
            let ts = batch
                .column(table.ts_index())
                .as_any()
                .downcast_ref::<arrow::array::TimestampMicrosecondArray>()
                .ok_or_else(|| Error::Internal("timestamp column".into()))?;
            let keep: arrow::array::BooleanArray = ts
                .iter()
                .map(|t| t.map(|t| since.is_none_or(|s| t >= s) && until.is_none_or(|u| t < u)))
                .collect();
            batch = arrow::compute::filter_record_batch(&batch, &keep)?;
        }
        stored = batch.num_rows();
        match source.cdc {
            Cdc::Append | Cdc::Upsert => ingest::add_rows(&table, &batch, &mut wb)?,
            Cdc::Delete => ingest::add_deletes(&table, &batch, &mut wb)?,
            other => {
                return Err(Error::InvalidDefinition(format!(
                    "cdc {} is not what this connector carries",
                    other.as_str()
                )))
            }
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
