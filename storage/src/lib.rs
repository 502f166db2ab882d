//! Thyme's storage layer: the temporal store.
//!
//! This crate owns everything that touches disk. It exposes a byte-level
//! [`TemporalStore`] trait (in the TiKV style: the engine is behind a trait and
//! nothing above this crate names it) and one implementation backed by
//! RocksDB ([`RocksStore`]); with the `testing` feature, an in-memory one
//! (`memory::MemoryStore`) for the unit tests of the crates above.
//!
//! What it stores, per dataset (a `u32` id handed out by the store):
//! - **versions** of keyed rows: `(key, event time, write sequence) -> row`.
//!   Keys are opaque byte strings supplied by the caller, which must be
//!   *prefix-free* and order-preserving (the planner's key codec is). Versions
//!   of one key sort newest first, so "row of `k` as of `t`" is one seek and a
//!   key's history is one range scan. Equal event times: the later write wins.
//!   A delete is a version with no row.
//! - **events** of keyless datasets, in event-time order.
//! - an append-only **log** with dense offsets in ingest order, which pipelines
//!   consume (the same shape a Kafka topic partition has).
//! - the **catalog**: named definition blobs (the planner owns their format).
//!
//! All writes go through a [`WriteBatch`] that commits atomically.

mod batch;
mod error;
mod keys;
#[cfg(any(test, feature = "testing"))]
pub mod memory;
mod pooled_db;
mod rocks;

pub use batch::WriteBatch;
pub use error::{Error, Result};
pub use keys::MAX_TS;
pub use rocks::{RocksStore, StoreOptions};

/// Open the embedded store in `dir` (the default deployment).
pub fn open_embedded(
    dir: impl AsRef<std::path::Path>,
    options: StoreOptions,
) -> Result<std::sync::Arc<dyn TemporalStore>> {
    Ok(std::sync::Arc::new(RocksStore::open(dir, options)?))
}

/// Identifier of a dataset inside the store.
pub type DatasetId = u32;

/// One version of a keyed row, or one event of a keyless dataset, as read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionRef<'a> {
    /// The encoded key (empty for events of keyless datasets).
    pub key: &'a [u8],
    /// Event time, microseconds since the Unix epoch.
    pub ts: i64,
    /// Store-wide write sequence number; later writes have larger numbers.
    pub seq: u64,
    /// True when this version is a delete marker.
    pub deleted: bool,
    /// The row bytes (for deletes, what the writer kept with the marker).
    pub value: &'a [u8],
}

/// An inclusive range of event times, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub start: i64,
    pub end: i64,
}

impl TimeRange {
    pub const ALL: TimeRange = TimeRange {
        start: i64::MIN,
        end: i64::MAX,
    };

    pub fn contains(&self, ts: i64) -> bool {
        ts >= self.start && ts <= self.end
    }

    pub fn is_empty(&self) -> bool {
        self.start > self.end
    }
}

/// What a committed [`WriteBatch`] was assigned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteReceipt {
    /// Sequence number of the first entry (entries get consecutive numbers).
    pub first_seq: u64,
    /// For every dataset whose log grew: (dataset, first offset, count).
    pub log_appends: Vec<(DatasetId, u64, u64)>,
}

/// Callback used by scans; return `false` to stop early.
pub type Visitor<'v> = dyn FnMut(VersionRef<'_>) -> bool + 'v;

/// The temporal store. Implementations must be safe to share between threads.
pub trait TemporalStore: Send + Sync + 'static {
    /// Commit a batch atomically: either everything in it becomes visible and
    /// durable, or nothing does. A derived batch ([`WriteBatch::set_derived`])
    /// becomes durable later, with the derived batches committed before it.
    fn write(&self, batch: WriteBatch) -> Result<WriteReceipt>;

    /// Allocate a fresh dataset id (persisted, never reused).
    fn allocate_dataset_id(&self) -> Result<DatasetId>;

    /// For each key, the newest version with event time `<= as_of`
    /// (`None` when the key has no such version). Deletes are returned as
    /// versions with `deleted == true`. `out` is called once per key, in order.
    fn get_as_of(
        &self,
        ds: DatasetId,
        keys: &[&[u8]],
        as_of: i64,
        out: &mut dyn FnMut(usize, Option<VersionRef<'_>>),
    ) -> Result<()>;

    /// For each `i`, the newest version of `keys[i]` with event time
    /// `<= as_of[i]` (a read time per key; point-in-time joins). One read
    /// cursor serves every key, so callers should order the pairs by key
    /// (then time) for locality. `out` is called once per pair, in order.
    fn get_as_of_each(
        &self,
        ds: DatasetId,
        keys: &[&[u8]],
        as_of: &[i64],
        out: &mut dyn FnMut(usize, Option<VersionRef<'_>>),
    ) -> Result<()> {
        for (i, (k, t)) in keys.iter().zip(as_of).enumerate() {
            self.get_as_of(ds, std::slice::from_ref(k), *t, &mut |_, v| out(i, v))?;
        }
        Ok(())
    }

    /// Visit, in key order, the newest version `<= as_of` of every key whose
    /// encoded form starts with `key_prefix`, skipping keys whose newest such
    /// version is a delete.
    fn scan_latest(
        &self,
        ds: DatasetId,
        key_prefix: &[u8],
        as_of: i64,
        visit: &mut Visitor<'_>,
    ) -> Result<()>;

    /// Visit every version (deletes included) of the keys starting with
    /// `key_prefix`, ordered by key, then event time ascending, then write
    /// order, restricted to `range`.
    fn scan_history(
        &self,
        ds: DatasetId,
        key_prefix: &[u8],
        range: TimeRange,
        visit: &mut Visitor<'_>,
    ) -> Result<()>;

    /// Visit the events of a keyless dataset in `range`, in event-time order
    /// (ties in write order).
    fn scan_events(&self, ds: DatasetId, range: TimeRange, visit: &mut Visitor<'_>) -> Result<()>;

    /// The earliest and latest event time of a keyless dataset (`None` when
    /// it has no events): lets scans split a time range into parts of
    /// similar size.
    fn event_time_bounds(&self, ds: DatasetId) -> Result<Option<(i64, i64)>> {
        let _ = ds;
        Ok(None)
    }

    /// Read log records `[from, from + max)`; the visitor gets (offset, record).
    /// Returns the offset after the last record visited.
    fn read_log(
        &self,
        ds: DatasetId,
        from: u64,
        max: usize,
        visit: &mut dyn FnMut(u64, &[u8]),
    ) -> Result<u64>;

    /// The offset the next appended log record of `ds` will get.
    fn log_end(&self, ds: DatasetId) -> Result<u64>;

    /// One catalog entry.
    fn catalog_get(&self, name: &str) -> Result<Option<Vec<u8>>>;

    /// Every catalog entry, ordered by name.
    fn catalog_list(&self) -> Result<Vec<(String, Vec<u8>)>>;

    /// Flush memtables and the write-ahead log to disk.
    fn flush(&self) -> Result<()>;
}

impl std::fmt::Debug for dyn TemporalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TemporalStore")
    }
}
