//! `first`: per key, the earliest event. An earlier event arriving later
//! replaces the key's first from its own time on: its version is written,
//! and the version it displaces is rewritten after this step's rows (as
//! the same row at the displaced time), so reading as of any time gives the
//! earliest event up to then. A terminal operator: it writes the output
//! dataset's versions itself.

use std::collections::HashMap;

use arrow::array::BooleanArray;
use thyme_storage::{TemporalStore, TimeRange, WriteBatch};
use thyme_table::catalog::Dataset;
use thyme_table::codec::RowEncoder;
use thyme_table::error::Result;
use thyme_table::ingest::LOG_UPSERT;

use super::OpEnv;
use crate::flow::Flow;
use crate::sink::conform;

#[derive(Default)]
pub struct FirstOp {
    /// Per encoded key, the earliest event time written.
    seen: HashMap<Vec<u8>, i64>,
    /// Versions to rewrite after this step's rows: key, time, encoded row.
    rewrites: Vec<(Vec<u8>, i64, Vec<u8>)>,
}

impl FirstOp {
    /// Rebuild the earliest time of every key from the output dataset.
    pub fn restore(&mut self, store: &dyn TemporalStore, out: &Dataset) -> Result<()> {
        store.scan_history(out.id, &[], TimeRange::ALL, &mut |v| {
            self.seen.entry(v.key.to_vec()).or_insert(v.ts);
            true
        })?;
        Ok(())
    }

    /// The rows that are a key's new first.
    pub fn apply(&mut self, env: &OpEnv, f: Flow) -> Result<Flow> {
        let conformed = conform(&env.out, &f)?;
        let enc = RowEncoder::new(&env.out, &conformed)?;
        let mut best: HashMap<Vec<u8>, (i64, usize)> = HashMap::new();
        let mut key = Vec::new();
        for r in 0..f.len() {
            if f.del.value(r) {
                continue;
            }
            enc.encode_key(r, &mut key);
            let t = enc.ts(r);
            let current = best
                .get(&key)
                .map(|b| b.0)
                .or_else(|| self.seen.get(&key).copied());
            if current.is_none_or(|c| t < c) {
                best.insert(key.clone(), (t, r));
            }
        }
        let mut keep = vec![false; f.len()];
        for (k, (t, r)) in best {
            keep[r] = true;
            if let Some(old) = self.seen.insert(k.clone(), t) {
                let mut row = Vec::new();
                enc.encode_row(r, &mut row);
                self.rewrites.push((k, old, row));
            }
        }
        f.filter(&BooleanArray::from(keep))
    }

    /// Write the displaced versions again (after the step's own rows).
    pub fn write_rewrites(&mut self, out: &Dataset, wb: &mut WriteBatch) {
        let mut rec = Vec::new();
        for (key, ts, row) in self.rewrites.drain(..) {
            wb.put_version(out.id, &key, ts, &row);
            rec.clear();
            rec.push(LOG_UPSERT);
            rec.extend_from_slice(&row);
            wb.append_log(out.id, &rec);
        }
    }
}
