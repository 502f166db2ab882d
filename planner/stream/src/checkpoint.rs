//! A runner's [`Checkpoint`]: its input offsets, watermarks, aggregation
//! horizon and operator state ids, stored as one catalog entry and
//! rewritten in the same atomic write as every step's output.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thyme_storage::{DatasetId, TemporalStore, WriteBatch};
use thyme_table::error::{Error, Result};

/// Layout of aggregation state records written by new pipelines.
pub const STATE_FORMAT: u32 = 1;

/// What a runner has stored about its progress.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Next log offset to read, per input.
    pub offsets: Vec<u64>,
    /// Newest event time seen, per input.
    pub max_ts: Vec<i64>,
    /// Every aggregation change point up to here has been written.
    pub horizon: i64,
    /// Hidden datasets holding operator state, by node id.
    pub state: BTreeMap<usize, DatasetId>,
    pub late: u64,
    pub rows_out: u64,
    /// Layout of aggregation state records: 0 (absent in checkpoints
    /// written before it existed) one value per aggregation,
    /// [`STATE_FORMAT`] one per distinct input column.
    #[serde(default)]
    pub state_format: u32,
}

impl Checkpoint {
    /// The checkpoint stored under `key`, or a fresh one for `inputs`
    /// inputs (a new pipeline starts at offset 0 and backfills).
    pub fn load(store: &dyn TemporalStore, key: &str, inputs: usize) -> Result<Self> {
        match store.catalog_get(key)? {
            Some(b) => serde_json::from_slice(&b)
                .map_err(|e| Error::Internal(format!("pipeline checkpoint: {e}"))),
            None => Ok(Checkpoint {
                offsets: vec![0; inputs],
                max_ts: vec![i64::MIN; inputs],
                horizon: i64::MIN,
                state_format: STATE_FORMAT,
                ..Default::default()
            }),
        }
    }

    /// Aggregation state records are in the first layout (see
    /// [`crate::ops::AggregateOp::set_legacy_state`]).
    pub fn legacy_state(&self) -> bool {
        self.state_format == 0
    }

    /// The state dataset of node `id`, allocated on first use (the
    /// checkpoint must then be written before the pipeline runs).
    pub fn state_of(&mut self, store: &dyn TemporalStore, id: usize) -> Result<DatasetId> {
        if let Some(s) = self.state.get(&id) {
            return Ok(*s);
        }
        let s = store.allocate_dataset_id()?;
        self.state.insert(id, s);
        Ok(s)
    }

    /// Record the checkpoint under `key` in `wb`.
    pub fn put(&self, key: &str, wb: &mut WriteBatch) -> Result<()> {
        let b = serde_json::to_vec(self).map_err(|e| Error::Internal(e.to_string()))?;
        wb.put_catalog(key, &b);
        Ok(())
    }
}
