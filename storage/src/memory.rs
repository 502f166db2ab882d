//! [`MemoryStore`]: the temporal store in memory, for the unit tests of the
//! crates above this one (behind the `testing` feature).
//!
//! It keeps the semantics of [`crate::TemporalStore`] in the plainest form
//! (sorted maps, every version kept in a list) rather than fast: as-of
//! reads take the newest version at or before the read time, equal times
//! resolved by write order; history scans order by key, time, then write
//! order; each dataset's log has dense offsets; a batch applies its
//! operations in order under one lock, so it is atomic and a `drop_data`
//! removes what came before it in the same batch. The storage crate's
//! property test runs the same random operations against it and against
//! [`crate::RocksStore`], and both against a brute-force model.
//!
//! Nothing is durable: `flush` does nothing, and the store is gone with the
//! value.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::batch::Op;
use crate::{
    DatasetId, Result, TemporalStore, TimeRange, VersionRef, Visitor, WriteBatch, WriteReceipt,
};

/// One stored version: (event time, write sequence, deleted, row).
type Version = (i64, u64, bool, Vec<u8>);

#[derive(Default)]
struct State {
    /// (dataset, key) -> versions in write order.
    versions: BTreeMap<(DatasetId, Vec<u8>), Vec<Version>>,
    /// dataset -> events in write order: (event time, sequence, row).
    events: BTreeMap<DatasetId, Vec<(i64, u64, Vec<u8>)>>,
    logs: BTreeMap<DatasetId, Vec<Vec<u8>>>,
    catalog: BTreeMap<String, Vec<u8>>,
    seq: u64,
    next_ds: DatasetId,
}

/// An in-memory [`TemporalStore`]; see the module docs. Clones share one
/// store (as reopening a directory would).
#[derive(Default, Clone)]
pub struct MemoryStore {
    state: std::sync::Arc<Mutex<State>>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// The store as an `Arc<dyn TemporalStore>`, as the crates above take it.
    pub fn shared() -> std::sync::Arc<dyn TemporalStore> {
        std::sync::Arc::new(MemoryStore::new())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("memory store lock poisoned")
    }
}

impl State {
    /// The newest version of `key` at or before `t`.
    fn as_of(&self, ds: DatasetId, key: &[u8], t: i64) -> Option<&Version> {
        self.versions
            .get(&(ds, key.to_vec()))?
            .iter()
            .filter(|v| v.0 <= t)
            .max_by_key(|v| (v.0, v.1))
    }

    /// Keys of `ds` starting with `prefix`, in byte order.
    fn keys<'a>(
        &'a self,
        ds: DatasetId,
        prefix: &'a [u8],
    ) -> impl Iterator<Item = (&'a Vec<u8>, &'a Vec<Version>)> + 'a {
        self.versions
            .range((ds, prefix.to_vec())..)
            .take_while(move |((d, k), _)| *d == ds && k.starts_with(prefix))
            .map(|((_, k), vs)| (k, vs))
    }
}

fn version_ref<'a>(key: &'a [u8], v: &'a Version) -> VersionRef<'a> {
    VersionRef {
        key,
        ts: v.0,
        seq: v.1,
        deleted: v.2,
        value: &v.3,
    }
}

impl TemporalStore for MemoryStore {
    fn write(&self, batch: WriteBatch) -> Result<WriteReceipt> {
        let mut s = self.state();
        let first_seq = s.seq + 1;
        let buf = &batch.buf;
        // (dataset, first offset, count) in order of first append.
        let mut appends: Vec<(DatasetId, u64, u64)> = Vec::new();
        for op in &batch.ops {
            match op {
                Op::Version {
                    ds,
                    key,
                    ts,
                    deleted,
                    value,
                } => {
                    s.seq += 1;
                    let v = (*ts, s.seq, *deleted, buf[value.clone()].to_vec());
                    s.versions
                        .entry((*ds, buf[key.clone()].to_vec()))
                        .or_default()
                        .push(v);
                }
                Op::Event { ds, ts, value } => {
                    s.seq += 1;
                    let e = (*ts, s.seq, buf[value.clone()].to_vec());
                    s.events.entry(*ds).or_default().push(e);
                }
                Op::Log { ds, record } => {
                    let log = s.logs.entry(*ds).or_default();
                    let offset = log.len() as u64;
                    log.push(buf[record.clone()].to_vec());
                    match appends.iter_mut().find(|a| a.0 == *ds) {
                        Some(a) => a.2 += 1,
                        None => appends.push((*ds, offset, 1)),
                    }
                }
                Op::CatalogPut { name, value } => {
                    let name = String::from_utf8_lossy(&buf[name.clone()]).into_owned();
                    s.catalog.insert(name, buf[value.clone()].to_vec());
                }
                Op::CatalogDelete { name } => {
                    s.catalog
                        .remove(String::from_utf8_lossy(&buf[name.clone()]).as_ref());
                }
                Op::DropData { ds } => {
                    s.versions.retain(|(d, _), _| d != ds);
                    s.events.remove(ds);
                    s.logs.remove(ds);
                    appends.retain(|a| a.0 != *ds);
                }
            }
        }
        Ok(WriteReceipt {
            first_seq,
            log_appends: appends,
        })
    }

    fn allocate_dataset_id(&self) -> Result<DatasetId> {
        let mut s = self.state();
        s.next_ds = s.next_ds.max(1);
        let id = s.next_ds;
        s.next_ds += 1;
        Ok(id)
    }

    fn get_as_of(
        &self,
        ds: DatasetId,
        keys: &[&[u8]],
        as_of: i64,
        out: &mut dyn FnMut(usize, Option<VersionRef<'_>>),
    ) -> Result<()> {
        let s = self.state();
        for (i, k) in keys.iter().enumerate() {
            out(i, s.as_of(ds, k, as_of).map(|v| version_ref(k, v)));
        }
        Ok(())
    }

    fn scan_latest(
        &self,
        ds: DatasetId,
        key_prefix: &[u8],
        as_of: i64,
        visit: &mut Visitor<'_>,
    ) -> Result<()> {
        let s = self.state();
        for (k, _) in s.keys(ds, key_prefix) {
            if let Some(v) = s.as_of(ds, k, as_of) {
                if !v.2 && !visit(version_ref(k, v)) {
                    break;
                }
            }
        }
        Ok(())
    }

    fn scan_history(
        &self,
        ds: DatasetId,
        key_prefix: &[u8],
        range: TimeRange,
        visit: &mut Visitor<'_>,
    ) -> Result<()> {
        let s = self.state();
        for (k, vs) in s.keys(ds, key_prefix) {
            let mut vs: Vec<&Version> = vs.iter().filter(|v| range.contains(v.0)).collect();
            vs.sort_by_key(|v| (v.0, v.1));
            for v in vs {
                if !visit(version_ref(k, v)) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn scan_events(&self, ds: DatasetId, range: TimeRange, visit: &mut Visitor<'_>) -> Result<()> {
        let s = self.state();
        let Some(events) = s.events.get(&ds) else {
            return Ok(());
        };
        let mut es: Vec<&(i64, u64, Vec<u8>)> =
            events.iter().filter(|e| range.contains(e.0)).collect();
        es.sort_by_key(|e| (e.0, e.1));
        for e in es {
            let v = VersionRef {
                key: &[],
                ts: e.0,
                seq: e.1,
                deleted: false,
                value: &e.2,
            };
            if !visit(v) {
                break;
            }
        }
        Ok(())
    }

    fn event_time_bounds(&self, ds: DatasetId) -> Result<Option<(i64, i64)>> {
        let s = self.state();
        Ok(s.events.get(&ds).and_then(|es| {
            let lo = es.iter().map(|e| e.0).min()?;
            let hi = es.iter().map(|e| e.0).max()?;
            Some((lo, hi))
        }))
    }

    fn read_log(
        &self,
        ds: DatasetId,
        from: u64,
        max: usize,
        visit: &mut dyn FnMut(u64, &[u8]),
    ) -> Result<u64> {
        let s = self.state();
        let mut next = from;
        if let Some(log) = s.logs.get(&ds) {
            for (i, r) in log.iter().enumerate().skip(from as usize).take(max) {
                visit(i as u64, r);
                next = i as u64 + 1;
            }
        }
        Ok(next)
    }

    fn log_end(&self, ds: DatasetId) -> Result<u64> {
        Ok(self.state().logs.get(&ds).map_or(0, |l| l.len() as u64))
    }

    fn catalog_get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.state().catalog.get(name).cloned())
    }

    fn catalog_list(&self) -> Result<Vec<(String, Vec<u8>)>> {
        Ok(self
            .state()
            .catalog
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }
}
