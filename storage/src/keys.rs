//! Physical key layout.
//!
//! All multi-byte integers are big-endian so that byte order is numeric order.
//!
//! | column family | key                                              | value          |
//! |---------------|--------------------------------------------------|----------------|
//! | `versions`    | `ds:u32 · key · !ts' : u64 · !seq : u64`         | tag · row      |
//! | `events`      | `ds:u32 · ts' : u64 · seq : u64`                 | row            |
//! | `log`         | `block : u64`                                    | block of records |
//! | `log_index`   | `ds:u32 · first offset : u64`                    | `block : u64`  |
//! | `catalog`     | name                                             | definition     |
//! | `meta`        | name                                             | counter        |
//!
//! A log block packs records one batch appended to one dataset, up to a cap
//! (see `LogAppend` in the RocksDB store). Blocks are numbered store-wide in
//! commit order, so the `log` keys only ever grow: a memtable flush writes a
//! file that overlaps no other, and compaction moves it down the levels
//! instead of rewriting it (with every dataset's log in one key space, each
//! flush used to be merged into the datasets' ranges). `log_index` finds the
//! block holding a dataset's offset.
//!
//! `ts'` is the event time with its sign bit flipped (so signed order becomes
//! unsigned byte order); in `versions` it and the sequence are bit-inverted so
//! that the newest version of a key comes first. Because caller keys are
//! prefix-free, the versions of one key are contiguous and a seek to
//! `ds · key · !ts'(t)` lands on the newest version at or before `t`.

/// Largest representable event time.
pub const MAX_TS: i64 = i64::MAX;

pub(crate) const TAG_PUT: u8 = 0;
pub(crate) const TAG_DELETE: u8 = 1;

#[inline]
pub(crate) fn ts_asc(ts: i64) -> u64 {
    (ts as u64) ^ (1u64 << 63)
}

#[inline]
pub(crate) fn ts_from_asc(v: u64) -> i64 {
    (v ^ (1u64 << 63)) as i64
}

#[inline]
pub(crate) fn read_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// Bytes a `versions` key adds to the caller's key (dataset, time, sequence).
pub(crate) const VERSION_KEY_EXTRA: usize = 20;
/// Length of an `events` key.
pub(crate) const EVENT_KEY_LEN: usize = 20;

/// `ds · key · !ts' · !seq`
pub(crate) fn version_key(out: &mut Vec<u8>, ds: u32, key: &[u8], ts: i64, seq: u64) {
    out.clear();
    out.extend_from_slice(&ds.to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&(!ts_asc(ts)).to_be_bytes());
    out.extend_from_slice(&(!seq).to_be_bytes());
}

/// Split a `versions` key into (caller key, ts, seq).
pub(crate) fn split_version_key(k: &[u8]) -> Option<(&[u8], i64, u64)> {
    if k.len() < 20 {
        return None;
    }
    let n = k.len();
    let ts = ts_from_asc(!read_u64(&k[n - 16..n - 8]));
    let seq = !read_u64(&k[n - 8..]);
    Some((&k[4..n - 16], ts, seq))
}

/// `ds · ts' · seq`
pub(crate) fn event_key(out: &mut Vec<u8>, ds: u32, ts: i64, seq: u64) {
    out.clear();
    out.extend_from_slice(&ds.to_be_bytes());
    out.extend_from_slice(&ts_asc(ts).to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
}

pub(crate) fn split_event_key(k: &[u8]) -> Option<(i64, u64)> {
    if k.len() != 20 {
        return None;
    }
    Some((ts_from_asc(read_u64(&k[4..12])), read_u64(&k[12..20])))
}

pub(crate) fn log_key(ds: u32, offset: u64) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..4].copy_from_slice(&ds.to_be_bytes());
    k[4..].copy_from_slice(&offset.to_be_bytes());
    k
}

/// Smallest byte string greater than every string starting with `prefix`
/// (`None` when there is none, i.e. the prefix is all `0xFF`).
pub(crate) fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut v = prefix.to_vec();
    while let Some(last) = v.pop() {
        if last != 0xFF {
            v.push(last + 1);
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_keys_sort_newest_first_and_split_back() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        version_key(&mut a, 7, b"k\0\0", 100, 5);
        version_key(&mut b, 7, b"k\0\0", -100, 9);
        assert!(a < b, "newer event time sorts first");
        let mut c = Vec::new();
        version_key(&mut c, 7, b"k\0\0", 100, 6);
        assert!(c < a, "equal time: later write sorts first");
        assert_eq!(split_version_key(&b), Some((&b"k\0\0"[..], -100, 9)));
    }

    #[test]
    fn event_keys_sort_by_time() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        event_key(&mut a, 1, i64::MIN, 3);
        event_key(&mut b, 1, -1, 2);
        assert!(a < b);
        event_key(&mut a, 1, 0, 1);
        assert!(b < a);
        assert_eq!(split_event_key(&a), Some((0, 1)));
    }

    #[test]
    fn successor() {
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_successor(&[0xFF, 0xFF]), None);
    }
}
