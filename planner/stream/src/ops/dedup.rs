//! `dedup`: drop an event equal to one already seen at the same event time
//! (equal in the `by` columns, default every column but the event time).
//! The seen (value, time) pairs are kept as versions of a hidden state
//! dataset, so duplicates are found across steps and restarts.

use std::collections::HashSet;

use arrow::array::BooleanArray;
use datafusion::common::ScalarValue;
use thyme_storage::{DatasetId, WriteBatch};
use thyme_table::error::{Error, Result};

use super::OpEnv;
use crate::flow::Flow;

pub struct DedupOp {
    by: Option<Vec<String>>,
    /// The hidden dataset of seen values.
    state: DatasetId,
}

impl DedupOp {
    pub fn new(by: Option<Vec<String>>, state: DatasetId) -> Self {
        DedupOp { by, state }
    }

    /// The rows not seen before; the new ones are recorded in `wb` (the
    /// runner lets the previous step's write land before calling this).
    pub fn apply(&self, env: &OpEnv, f: Flow, wb: &mut WriteBatch) -> Result<Flow> {
        let schema = f.batch.schema();
        let cols: Vec<usize> = match &self.by {
            Some(b) => b.iter().filter_map(|c| schema.index_of(c).ok()).collect(),
            None => (0..schema.fields().len())
                .filter(|&i| schema.field(i).name() != &f.ts_col)
                .collect(),
        };
        let ts = f.ts()?;
        let mut keep = Vec::with_capacity(f.len());
        let mut key = Vec::new();
        // This flow's new (value, time) pairs: the key bytes followed by
        // the time, so a lookup borrows the row's buffer.
        let mut fresh: HashSet<Vec<u8>> = HashSet::new();
        for (r, &t) in ts.iter().enumerate() {
            key.clear();
            for &c in &cols {
                let v = ScalarValue::try_from_array(f.batch.column(c), r)
                    .map_err(|e| Error::Internal(e.to_string()))?;
                let s = v.to_string();
                key.extend_from_slice(&(s.len() as u32).to_be_bytes());
                key.extend_from_slice(s.as_bytes());
                key.push(v.is_null() as u8);
            }
            key.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
            let stored = key.len();
            key.extend_from_slice(&t.to_be_bytes());
            let mut dup = fresh.contains(key.as_slice());
            if !dup {
                env.store
                    .get_as_of(self.state, &[&key[..stored]], t, &mut |_, v| {
                        dup = v.is_some_and(|v| v.ts == t);
                    })?;
            }
            if !dup {
                wb.put_version(self.state, &key[..stored], t, &[]);
                fresh.insert(key.clone());
            }
            keep.push(!dup);
        }
        f.filter(&BooleanArray::from(keep))
    }
}
