//! [`WriteBatch`]: a set of changes that commit together.
//!
//! Keys, rows and records are copied into one contiguous buffer; entries refer
//! to it by range, so building a batch of `n` rows costs no per-row allocation.

use std::ops::Range;

use crate::DatasetId;

#[derive(Debug, Clone)]
pub(crate) enum Op {
    Version {
        ds: DatasetId,
        key: Range<usize>,
        ts: i64,
        deleted: bool,
        value: Range<usize>,
    },
    Event {
        ds: DatasetId,
        ts: i64,
        value: Range<usize>,
    },
    Log {
        ds: DatasetId,
        record: Range<usize>,
    },
    CatalogPut {
        name: Range<usize>,
        value: Range<usize>,
    },
    CatalogDelete {
        name: Range<usize>,
    },
    DropData {
        ds: DatasetId,
    },
}

/// Changes to apply atomically with [`crate::TemporalStore::write`].
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    pub(crate) buf: Vec<u8>,
    pub(crate) ops: Vec<Op>,
    pub(crate) derived: bool,
}

impl WriteBatch {
    pub fn new() -> Self {
        Self::default()
    }

    /// A batch with room for roughly `rows` rows of `bytes` bytes in total.
    pub fn with_capacity(rows: usize, bytes: usize) -> Self {
        WriteBatch {
            buf: Vec::with_capacity(bytes),
            ops: Vec::with_capacity(rows),
            derived: false,
        }
    }

    /// Mark the batch as *derived*: everything in it can be computed again
    /// from the store's other contents (a pipeline step: its outputs,
    /// operator state and input offsets, all recomputed from the inputs'
    /// logs). The store may then commit it without its write-ahead log.
    /// After a crash the store holds every batch that was not derived and,
    /// of the derived ones, those committed before some point (a prefix in
    /// commit order; each batch still whole or absent). So what a derived
    /// batch writes (a dataset's versions, events and log, a catalog entry)
    /// must only ever be written by derived batches; a drop of the dataset
    /// is the exception.
    pub fn set_derived(&mut self) {
        self.derived = true;
    }

    fn push_bytes(&mut self, b: &[u8]) -> Range<usize> {
        let start = self.buf.len();
        self.buf.extend_from_slice(b);
        start..self.buf.len()
    }

    /// A new version of `key` at event time `ts`.
    pub fn put_version(&mut self, ds: DatasetId, key: &[u8], ts: i64, row: &[u8]) {
        let key = self.push_bytes(key);
        let value = self.push_bytes(row);
        self.ops.push(Op::Version {
            ds,
            key,
            ts,
            deleted: false,
            value,
        });
    }

    /// A delete version of `key` at event time `ts`. `row` is kept with the
    /// marker (callers store the key fields there so history reads can show
    /// them); it may be empty.
    pub fn delete_version(&mut self, ds: DatasetId, key: &[u8], ts: i64, row: &[u8]) {
        let key = self.push_bytes(key);
        let value = self.push_bytes(row);
        self.ops.push(Op::Version {
            ds,
            key,
            ts,
            deleted: true,
            value,
        });
    }

    /// An event of a keyless dataset.
    pub fn put_event(&mut self, ds: DatasetId, ts: i64, row: &[u8]) {
        let value = self.push_bytes(row);
        self.ops.push(Op::Event { ds, ts, value });
    }

    /// Append a record to the dataset's log (offsets are assigned at commit).
    pub fn append_log(&mut self, ds: DatasetId, record: &[u8]) {
        let record = self.push_bytes(record);
        self.ops.push(Op::Log { ds, record });
    }

    /// Create or replace a catalog entry.
    pub fn put_catalog(&mut self, name: &str, value: &[u8]) {
        let name = self.push_bytes(name.as_bytes());
        let value = self.push_bytes(value);
        self.ops.push(Op::CatalogPut { name, value });
    }

    /// Remove a catalog entry.
    pub fn delete_catalog(&mut self, name: &str) {
        let name = self.push_bytes(name.as_bytes());
        self.ops.push(Op::CatalogDelete { name });
    }

    /// Remove every version, event and log record of a dataset.
    pub fn drop_data(&mut self, ds: DatasetId) {
        self.ops.push(Op::DropData { ds });
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Bytes of keys, rows and records held.
    pub fn bytes(&self) -> usize {
        self.buf.len()
    }

    /// Move `other`'s changes to the end of this batch (a transaction's
    /// statements, each staged as a batch, commit as one).
    pub fn append(&mut self, other: WriteBatch) {
        let base = self.buf.len();
        let shift = |r: &Range<usize>| r.start + base..r.end + base;
        self.buf.extend_from_slice(&other.buf);
        self.ops.reserve(other.ops.len());
        for op in other.ops {
            self.ops.push(match op {
                Op::Version {
                    ds,
                    key,
                    ts,
                    deleted,
                    value,
                } => Op::Version {
                    ds,
                    key: shift(&key),
                    ts,
                    deleted,
                    value: shift(&value),
                },
                Op::Event { ds, ts, value } => Op::Event {
                    ds,
                    ts,
                    value: shift(&value),
                },
                Op::Log { ds, record } => Op::Log {
                    ds,
                    record: shift(&record),
                },
                Op::CatalogPut { name, value } => Op::CatalogPut {
                    name: shift(&name),
                    value: shift(&value),
                },
                Op::CatalogDelete { name } => Op::CatalogDelete { name: shift(&name) },
                Op::DropData { ds } => Op::DropData { ds },
            });
        }
        self.derived &= other.derived;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_keeps_every_change_and_its_bytes() {
        let mut a = WriteBatch::new();
        a.put_version(1, b"k1", 10, b"row1");
        let mut b = WriteBatch::new();
        b.put_event(2, 20, b"ev");
        b.append_log(2, b"rec");
        a.append(b);
        assert_eq!(a.len(), 3);
        let texts: Vec<&[u8]> = a
            .ops
            .iter()
            .map(|op| match op {
                Op::Version { value, .. } | Op::Event { value, .. } => &a.buf[value.clone()],
                Op::Log { record, .. } => &a.buf[record.clone()],
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(texts, vec![&b"row1"[..], b"ev", b"rec"]);
    }
}
