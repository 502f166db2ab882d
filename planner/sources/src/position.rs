//! A source's position and counts, stored as the catalog entry
//! `source/<dataset>/<n>` (n: the source's index in the dataset's
//! definition) and written in the same batch as the rows it covers.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thyme_storage::{DatasetId, TemporalStore, WriteBatch};
use thyme_table::error::{Error, Result};

/// What a source has done so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceState {
    /// The dataset's table when this was written: a recommitted dataset has
    /// a new table, and its sources start over.
    pub table_id: DatasetId,
    /// The connector's position (files read, offsets, ...).
    pub position: Value,
    /// Rows stored.
    pub rows: u64,
    /// Rows skipped (exact, also past what `thyme_rejected_rows` keeps).
    pub skipped: u64,
    /// Skipped rows kept in `thyme_rejected_rows`.
    pub kept_rejects: u64,
}

/// The catalog key of a dataset's `n`-th source.
pub fn key(dataset: &str, n: usize) -> String {
    format!("source/{dataset}/{n}")
}

impl SourceState {
    /// The stored state, or a fresh one when there is none or it belongs to
    /// an earlier table of the dataset.
    pub fn load(
        store: &dyn TemporalStore,
        dataset: &str,
        n: usize,
        table_id: DatasetId,
    ) -> Result<Self> {
        let fresh = SourceState {
            table_id,
            position: Value::Null,
            ..Default::default()
        };
        let Some(bytes) = store.catalog_get(&key(dataset, n))? else {
            return Ok(fresh);
        };
        let s: SourceState = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Internal(format!("source position {dataset}/{n}: {e}")))?;
        Ok(if s.table_id == table_id { s } else { fresh })
    }

    /// Add this state to `wb`.
    pub fn put(&self, dataset: &str, n: usize, wb: &mut WriteBatch) -> Result<()> {
        let bytes = serde_json::to_vec(self).map_err(|e| Error::Internal(e.to_string()))?;
        wb.put_catalog(&key(dataset, n), &bytes);
        Ok(())
    }
}
