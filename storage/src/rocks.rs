//! [`RocksStore`]: the [`TemporalStore`] on RocksDB.
//!
//! One RocksDB instance per data directory, with one column family per kind of
//! data (see [`crate::keys`] for the layout). Writers are serialized by a mutex
//! that also assigns write sequence numbers and log offsets; the counters are
//! persisted in the same atomic RocksDB batch as the data, so a crash at any
//! point leaves the store either before or after a whole [`WriteBatch`].
//!
//! Batches go through RocksDB's write-ahead log, except *derived* ones
//! ([`WriteBatch::set_derived`]: a pipeline step, which the pipeline can
//! compute again from its inputs). Those reach disk with the next memtable
//! flush, and flushes are atomic across column families, so after a crash
//! the store holds a prefix of the derived batches, each whole. A pipeline
//! step's outputs are most of what the store writes; keeping them out of the
//! log saves their checksum, copy and `write(2)`, and a crash costs
//! recomputing the steps since the last flush.
//! Readers never take the mutex: each read uses its own iterator, which sees a
//! consistent snapshot.
//!
//! Point reads ([`TemporalStore::get_as_of`] and `get_as_of_each`) reuse
//! iterators from a small pool instead of creating one per call: creating
//! and destroying a RocksDB iterator (with its read options) was about 7% of
//! the server's CPU on a pgwire point lookup. A pooled iterator is refreshed
//! to the latest committed state before each use, which is cheap while no
//! flush or compaction has happened since its last use, so a read still sees
//! every write committed before it started. While idle, a pooled iterator
//! keeps the memtables and files of the state it last read alive, so the
//! pool holds at most [`POOLED_CURSORS`], and writes drop the ones idle for
//! longer than [`CURSOR_IDLE`] (as does [`TemporalStore::flush`]): a store
//! that is only written to does not hold on to flushed memtables or
//! compacted files.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use fs2::FileExt;
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DBRawIterator, Options,
    ReadOptions, WriteOptions, DB,
};

use crate::batch::Op;
use crate::keys::{self, TAG_DELETE, TAG_PUT};
use crate::pooled_db::PooledDb;
use crate::{
    DatasetId, Error, Result, TemporalStore, TimeRange, VersionRef, Visitor, WriteBatch,
    WriteReceipt,
};

const CF_VERSIONS: &str = "versions";
const CF_EVENTS: &str = "events";
const CF_LOG: &str = "log";
const CF_LOG_INDEX: &str = "log_index";
const CF_CATALOG: &str = "catalog";
const CF_META: &str = "meta";
const ALL_CFS: [&str; 6] = [
    CF_VERSIONS,
    CF_EVENTS,
    CF_LOG,
    CF_LOG_INDEX,
    CF_CATALOG,
    CF_META,
];

/// Most point-read iterators kept between reads (about one per thread that
/// serves reads).
pub const POOLED_CURSORS: usize = 8;

/// How long a pooled iterator may stay idle before a write drops it.
pub const CURSOR_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

const META_SEQ: &[u8] = b"seq";
const META_NEXT_DS: &[u8] = b"next_dataset_id";
const META_LOG_END: &[u8] = b"log_end/";
const META_FORMAT: &[u8] = b"format";
const META_NEXT_BLOCK: &[u8] = b"next_log_block";

/// Version of the on-disk layout (see [`crate::keys`]), stored in `meta`; a
/// store in another layout is refused at open rather than misread.
/// 1: one log record per RocksDB entry (stores without a format entry);
/// 2: log records packed into blocks;
/// 3: log blocks keyed by a store-wide block number, found through
/// `log_index`.
pub const FORMAT: u64 = 3;

/// Tuning knobs of the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// `fsync` the write-ahead log on every commit. Without it a commit
    /// survives a process crash (`kill -9`) but not a power failure.
    pub sync_writes: bool,
    /// Size of the shared block cache, in bytes.
    pub block_cache_bytes: usize,
    /// Size of one memtable of a column family, in bytes.
    pub write_buffer_bytes: usize,
    /// Write memtable flushes and compaction outputs with direct I/O
    /// (`O_DIRECT`), when the directory's file system supports it. Off by
    /// default (see `open`).
    pub direct_io: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            sync_writes: false,
            block_cache_bytes: 256 << 20,
            write_buffer_bytes: 64 << 20,
            direct_io: false,
        }
    }
}

struct Counters {
    seq: u64,
    next_ds: u32,
    /// Number of the next log block (store-wide, in commit order).
    next_block: u64,
    log_end: HashMap<DatasetId, u64>,
}

/// The RocksDB-backed temporal store. Opening it takes an exclusive lock on
/// the directory; a second server on the same directory gets [`Error::Locked`].
pub struct RocksStore {
    /// The database, with idle point-read iterators over `versions`.
    db: PooledDb,
    counters: Mutex<Counters>,
    sync_writes: bool,
    path: PathBuf,
    _lock: File,
}

/// Whether files in `dir` can be opened with `O_DIRECT`.
fn supports_direct_io(dir: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let probe = dir.join("direct_io.probe");
    let ok = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&probe)
        .is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

fn engine(e: rocksdb::Error) -> Error {
    Error::Engine(e.into_string())
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.display().to_string(),
        source,
    }
}

impl RocksStore {
    /// Open (creating if needed) the store in `dir`.
    pub fn open(dir: impl AsRef<Path>, options: StoreOptions) -> Result<Self> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let lock_path = dir.join("thyme.lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        if lock.try_lock_exclusive().is_err() {
            return Err(Error::Locked {
                path: dir.display().to_string(),
            });
        }

        let cache = Cache::new_lru_cache(options.block_cache_bytes);
        let table_options = |bloom: bool| {
            let mut table = BlockBasedOptions::default();
            table.set_block_cache(&cache);
            if bloom {
                table.set_bloom_filter(10.0, false);
            }
            table.set_cache_index_and_filter_blocks(true);
            table.set_pin_l0_filter_and_index_blocks_in_cache(true);
            table.set_block_size(16 * 1024);
            table
        };
        // Versions, events and logs are only read through iterators, which
        // never consult whole-key bloom filters: building them for every
        // flush and compaction would be wasted work. The catalog and the
        // counters are read with point gets and keep theirs.
        let table = table_options(false);
        let point_table = table_options(true);

        let mut cf_opts = Options::default();
        cf_opts.set_block_based_table_factory(&table);
        cf_opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        // Fresh data (memtable flushes, first compactions) stays
        // uncompressed: it is rewritten soon, and compressing it cost a
        // tenth of the engine's CPU under sustained pipeline writes.
        cf_opts.set_compression_per_level(&[
            rocksdb::DBCompressionType::None,
            rocksdb::DBCompressionType::None,
            rocksdb::DBCompressionType::Lz4,
            rocksdb::DBCompressionType::Lz4,
            rocksdb::DBCompressionType::Lz4,
            rocksdb::DBCompressionType::Lz4,
            rocksdb::DBCompressionType::Lz4,
        ]);
        cf_opts.set_level_compaction_dynamic_level_bytes(true);
        cf_opts.set_write_buffer_size(options.write_buffer_bytes);

        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.increase_parallelism(2);
        db_opts.set_max_background_jobs(2);
        // Derived batches skip the write-ahead log (see `write`): a flush
        // must then persist every column family up to the same write, or a
        // crash could keep a pipeline's outputs without its offsets.
        db_opts.set_atomic_flush(true);
        // Flushes and compactions write (and compactions read) whole files,
        // once each: through the page cache, copying them into it cost about
        // a fifth of the server's CPU under sustained pipeline writes. Direct
        // I/O skips the copy, but the files then start outside the page
        // cache, and reads of older history (`AS OF` a random time) ran
        // about 40% slower until it warmed up; so it is an option, off by
        // default (as in TiKV and MyRocks). Reads that serve queries always
        // go through the page cache and the block cache. File systems
        // without `O_DIRECT` (tmpfs before Linux 6.6) keep buffered I/O.
        if options.direct_io && supports_direct_io(dir) {
            db_opts.set_use_direct_io_for_flush_and_compaction(true);
            db_opts.set_compaction_readahead_size(2 << 20);
        }

        let db_path = dir.join("rocksdb");
        let mut point_opts = cf_opts.clone();
        point_opts.set_block_based_table_factory(&point_table);
        // Log blocks are keyed in commit order, so flushed files never
        // overlap and compaction can move them down the levels instead of
        // rewriting them; a move needs the same compression at both levels.
        let mut log_opts = cf_opts.clone();
        log_opts.set_compression_type(rocksdb::DBCompressionType::None);
        log_opts.set_compression_per_level(&[]);
        let cfs = ALL_CFS.iter().map(|name| {
            let opts = if [CF_CATALOG, CF_META].contains(name) {
                point_opts.clone()
            } else if *name == CF_LOG {
                log_opts.clone()
            } else {
                cf_opts.clone()
            };
            ColumnFamilyDescriptor::new(*name, opts)
        });
        let db = DB::open_cf_descriptors(&db_opts, &db_path, cfs).map_err(engine)?;

        let mut store = RocksStore {
            db: PooledDb::new(db, POOLED_CURSORS),
            counters: Mutex::new(Counters {
                seq: 0,
                next_ds: 1,
                next_block: 0,
                log_end: HashMap::new(),
            }),
            sync_writes: options.sync_writes,
            path: dir.to_path_buf(),
            _lock: lock,
        };
        store.load_counters()?;
        Ok(store)
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn cf(&self, name: &str) -> &ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column family created at open")
    }

    fn load_counters(&mut self) -> Result<()> {
        let meta = self.cf(CF_META);
        let get_u64 = |k: &[u8]| -> Result<Option<u64>> {
            match self.db.get_cf(meta, k).map_err(engine)? {
                Some(v) if v.len() == 8 => Ok(Some(keys::read_u64(&v))),
                Some(_) => Err(Error::Corrupt(format!(
                    "meta entry {}",
                    String::from_utf8_lossy(k)
                ))),
                None => Ok(None),
            }
        };
        let seq = get_u64(META_SEQ)?.unwrap_or(0);
        let next_ds = get_u64(META_NEXT_DS)?.unwrap_or(1) as u32;
        let next_block = get_u64(META_NEXT_BLOCK)?.unwrap_or(0);
        let mut log_end = HashMap::new();
        let mut it = self.db.raw_iterator_cf(meta);
        it.seek(META_LOG_END);
        while it.valid() {
            let k = it.key().unwrap_or_default();
            if !k.starts_with(META_LOG_END) {
                break;
            }
            let ds_bytes = &k[META_LOG_END.len()..];
            let v = it.value().unwrap_or_default();
            if ds_bytes.len() != 4 || v.len() != 8 {
                return Err(Error::Corrupt("log end entry".into()));
            }
            let ds = u32::from_be_bytes(ds_bytes.try_into().expect("4 bytes"));
            log_end.insert(ds, keys::read_u64(v));
            it.next();
        }
        it.status().map_err(engine)?;
        drop(it);
        let empty = seq == 0 && next_ds == 1 && log_end.is_empty();
        match get_u64(META_FORMAT)? {
            Some(FORMAT) => {}
            None if empty => self
                .db
                .put_cf(meta, META_FORMAT, FORMAT.to_be_bytes())
                .map_err(engine)?,
            found => {
                return Err(Error::Format {
                    path: self.path.display().to_string(),
                    found: found.unwrap_or(1),
                    expected: FORMAT,
                })
            }
        }
        let c = self.counters.get_mut().expect("not poisoned");
        c.seq = seq;
        c.next_ds = next_ds;
        c.next_block = next_block;
        c.log_end = log_end;
        Ok(())
    }

    fn read_opts(upper: Option<Vec<u8>>) -> ReadOptions {
        let mut ro = ReadOptions::default();
        if let Some(u) = upper {
            ro.set_iterate_upper_bound(u);
        }
        ro
    }

    /// An iterator over the versions of `ds` whose key starts with
    /// `key_prefix`, positioned at the first one.
    fn versions_with_prefix(&self, ds: DatasetId, key_prefix: &[u8]) -> DBRawIterator<'_> {
        let mut start = ds.to_be_bytes().to_vec();
        start.extend_from_slice(key_prefix);
        let upper = keys::prefix_successor(&start);
        let mut it = self
            .db
            .raw_iterator_cf_opt(self.cf(CF_VERSIONS), Self::read_opts(upper));
        it.seek(&start);
        it
    }

    /// Run `f` with a point-read iterator over `versions` that sees every
    /// write committed before this call: a pooled one, refreshed, or a new
    /// one. The iterator goes back to the pool unless `f` failed.
    fn with_cursor<R>(&self, f: impl FnOnce(&mut DBRawIterator<'_>) -> Result<R>) -> Result<R> {
        self.db
            .with_cursor(|db| db.raw_iterator_cf(self.cf(CF_VERSIONS)), f)
    }

    fn log_end_key(ds: DatasetId) -> Vec<u8> {
        let mut k = META_LOG_END.to_vec();
        k.extend_from_slice(&ds.to_be_bytes());
        k
    }
}

fn version_ref<'a>(k: &'a [u8], v: &'a [u8]) -> Result<VersionRef<'a>> {
    let (key, ts, seq) =
        keys::split_version_key(k).ok_or_else(|| Error::Corrupt("version key".into()))?;
    let (tag, row) = v
        .split_first()
        .ok_or_else(|| Error::Corrupt("empty version".into()))?;
    Ok(VersionRef {
        key,
        ts,
        seq,
        deleted: *tag == TAG_DELETE,
        value: row,
    })
}

/// Position `it` on the newest version `<= as_of` of `key` (which must be a
/// complete caller key) and return it, if any.
fn seek_as_of<'i>(
    it: &'i mut DBRawIterator<'_>,
    scratch: &mut Vec<u8>,
    ds: DatasetId,
    key: &[u8],
    as_of: i64,
) -> Result<Option<VersionRef<'i>>> {
    keys::version_key(scratch, ds, key, as_of, u64::MAX);
    it.seek(&scratch[..]);
    if !it.valid() {
        it.status().map_err(engine)?;
        return Ok(None);
    }
    let k = it.key().expect("valid iterator");
    if k.len() != 4 + key.len() + 16 || k[..4 + key.len()] != scratch[..4 + key.len()] {
        return Ok(None);
    }
    version_ref(k, it.value().expect("valid iterator")).map(Some)
}

/// Puts into one column family, handed to RocksDB in key order. Inserting a
/// batch's keys in order lets the memtable's skip list reuse the position
/// of the previous insert instead of searching from its top for each key
/// (that search was the largest cost of a pipeline's writes). Keys carry
/// their write sequence, so no two puts of a batch share a key and their
/// order within the batch does not change what is stored.
///
/// The sort compares each key's first 32 bytes as two integers (the key
/// zero-padded), and the whole keys only where those are equal: a version
/// key of a short key (dataset, key, time) is decided by the integers, so
/// sorting a step's ~100,000 puts makes no `memcmp` calls.
#[derive(Default)]
struct SortedPuts {
    arena: Vec<u8>,
    entries: Vec<Put>,
}

/// One put: its key's first 32 bytes (zero-padded, big-endian) and where
/// key and value lie in the arena.
struct Put {
    head: (u128, u128),
    start: usize,
    key_len: u32,
    value_len: u32,
}

impl Put {
    fn key<'a>(&self, arena: &'a [u8]) -> &'a [u8] {
        &arena[self.start..self.start + self.key_len as usize]
    }
}

/// The first 32 bytes of `key`, zero-padded, as two big-endian integers:
/// where they differ they order as the keys do.
fn key_head(key: &[u8]) -> (u128, u128) {
    let mut b = [0u8; 32];
    let n = key.len().min(32);
    b[..n].copy_from_slice(&key[..n]);
    let (hi, lo) = b.split_at(16);
    (
        u128::from_be_bytes(hi.try_into().expect("16 bytes")),
        u128::from_be_bytes(lo.try_into().expect("16 bytes")),
    )
}

impl SortedPuts {
    fn with_capacity(puts: usize, bytes: usize) -> Self {
        SortedPuts {
            arena: Vec::with_capacity(bytes),
            entries: Vec::with_capacity(puts),
        }
    }

    fn push(&mut self, key: &[u8], value_head: &[u8], value: &[u8]) {
        let start = self.arena.len();
        self.arena.extend_from_slice(key);
        self.arena.extend_from_slice(value_head);
        self.arena.extend_from_slice(value);
        self.entries.push(Put {
            head: key_head(key),
            start,
            key_len: key.len() as u32,
            value_len: (value_head.len() + value.len()) as u32,
        });
    }

    fn sort(&mut self) {
        let arena = &self.arena;
        let order = |a: &Put, b: &Put| {
            a.head
                .cmp(&b.head)
                .then_with(|| a.key(arena).cmp(b.key(arena)))
        };
        if !self.entries.is_sorted_by(|a, b| order(a, b).is_le()) {
            self.entries.sort_unstable_by(order);
        }
    }

    fn write_sorted(&mut self, wb: &mut rocksdb::WriteBatch, cf: &ColumnFamily) {
        self.sort();
        let arena = &self.arena;
        for p in &self.entries {
            let (k, v) = (p.key_len as usize, p.value_len as usize);
            wb.put_cf(
                cf,
                &arena[p.start..p.start + k],
                &arena[p.start + k..p.start + k + v],
            );
        }
        self.arena.clear();
        self.entries.clear();
    }
}

/// The log records one batch appends to one dataset, packed into blocks:
/// a block is one value, `(len: u32 BE, record)*`, under the next
/// store-wide block number, and `log_index` maps the dataset and the offset
/// of the block's first record to that number. Packing makes an appended
/// record cost a few bytes of a RocksDB value instead of a memtable entry of
/// its own; blocks are capped so that a reader starting in the middle of one
/// skips a bounded number of records.
struct LogAppend {
    ds: DatasetId,
    /// Offset of the first record appended by this batch.
    start: u64,
    /// Records appended by this batch.
    count: u64,
    /// Offset of the first record in `block`.
    block_start: u64,
    block_records: usize,
    block: Vec<u8>,
    /// Numbers of the blocks this batch has written for it.
    written: Vec<u64>,
}

/// Where a batch puts log blocks, and the number the next one gets.
struct LogTarget<'a> {
    log: &'a ColumnFamily,
    index: &'a ColumnFamily,
    next_block: u64,
}

/// Most records in one log block.
const LOG_BLOCK_RECORDS: usize = 1024;
/// A log block is closed once it holds this many bytes.
const LOG_BLOCK_BYTES: usize = 128 << 10;

impl LogAppend {
    fn new(ds: DatasetId, start: u64) -> Self {
        LogAppend {
            ds,
            start,
            count: 0,
            block_start: start,
            block_records: 0,
            block: Vec::new(),
            written: Vec::new(),
        }
    }

    /// Append a record; a full block goes into `wb` first.
    fn push(&mut self, record: &[u8], wb: &mut rocksdb::WriteBatch, to: &mut LogTarget<'_>) {
        if self.block_records >= LOG_BLOCK_RECORDS || self.block.len() >= LOG_BLOCK_BYTES {
            self.put_block(wb, to);
            self.block_start = self.start + self.count;
            self.block_records = 0;
            self.block.clear();
        }
        self.block
            .extend_from_slice(&(record.len() as u32).to_be_bytes());
        self.block.extend_from_slice(record);
        self.block_records += 1;
        self.count += 1;
    }

    /// Put the open block into `wb`, with its index entry.
    fn put_block(&mut self, wb: &mut rocksdb::WriteBatch, to: &mut LogTarget<'_>) {
        if self.block_records > 0 {
            let n = to.next_block;
            to.next_block += 1;
            wb.put_cf(to.log, n.to_be_bytes(), &self.block);
            wb.put_cf(
                to.index,
                keys::log_key(self.ds, self.block_start),
                n.to_be_bytes(),
            );
            self.written.push(n);
        }
    }
}

/// The first record of a log block and the rest of the block.
fn log_record(block: &[u8]) -> Result<(&[u8], &[u8])> {
    let corrupt = || Error::Corrupt("log block".into());
    let len = block.get(..4).ok_or_else(corrupt)?;
    let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
    let rest = &block[4..];
    if rest.len() < len {
        return Err(corrupt());
    }
    Ok(rest.split_at(len))
}

impl TemporalStore for RocksStore {
    fn write(&self, batch: WriteBatch) -> Result<WriteReceipt> {
        let versions = self.cf(CF_VERSIONS);
        let events = self.cf(CF_EVENTS);
        let log = self.cf(CF_LOG);
        let log_index = self.cf(CF_LOG_INDEX);
        let catalog = self.cf(CF_CATALOG);
        let meta = self.cf(CF_META);

        self.db.drop_idle(CURSOR_IDLE);
        let mut counters = self.counters.lock().expect("writer mutex poisoned");
        let mut seq = counters.seq;
        let first_seq = seq + 1;
        let mut blocks = LogTarget {
            log,
            index: log_index,
            next_block: counters.next_block,
        };
        // Room for everything up front: growing these buffers by doubling
        // copied each step's outputs several times over.
        let (mut versions_n, mut versions_bytes, mut events_n, mut events_bytes) = (0, 0, 0, 0);
        for op in &batch.ops {
            match op {
                Op::Version { key, value, .. } => {
                    versions_n += 1;
                    versions_bytes += keys::VERSION_KEY_EXTRA + key.len() + 1 + value.len();
                }
                Op::Event { value, .. } => {
                    events_n += 1;
                    events_bytes += keys::EVENT_KEY_LEN + value.len();
                }
                _ => {}
            }
        }
        let mut wb =
            rocksdb::WriteBatch::with_capacity_bytes(batch.buf.len() + 32 * batch.ops.len() + 256);
        let mut key = Vec::with_capacity(64);
        let mut version_puts = SortedPuts::with_capacity(versions_n, versions_bytes);
        let mut event_puts = SortedPuts::with_capacity(events_n, events_bytes);
        let mut logs: Vec<LogAppend> = Vec::new();
        let mut dropped: Vec<DatasetId> = Vec::new();
        let buf = &batch.buf;
        for op in &batch.ops {
            match op {
                Op::Version {
                    ds,
                    key: k,
                    ts,
                    deleted,
                    value,
                } => {
                    seq += 1;
                    keys::version_key(&mut key, *ds, &buf[k.clone()], *ts, seq);
                    let tag = if *deleted { TAG_DELETE } else { TAG_PUT };
                    version_puts.push(&key, &[tag], &buf[value.clone()]);
                }
                Op::Event { ds, ts, value } => {
                    seq += 1;
                    keys::event_key(&mut key, *ds, *ts, seq);
                    event_puts.push(&key, &[], &buf[value.clone()]);
                }
                Op::Log { ds, record } => {
                    let pos = match logs.iter().position(|l| l.ds == *ds) {
                        Some(p) => p,
                        None => {
                            let start = if dropped.contains(ds) {
                                0
                            } else {
                                counters.log_end.get(ds).copied().unwrap_or(0)
                            };
                            logs.push(LogAppend::new(*ds, start));
                            logs.len() - 1
                        }
                    };
                    logs[pos].push(&buf[record.clone()], &mut wb, &mut blocks);
                }
                Op::CatalogPut { name, value } => {
                    wb.put_cf(catalog, &buf[name.clone()], &buf[value.clone()]);
                }
                Op::CatalogDelete { name } => {
                    wb.delete_cf(catalog, &buf[name.clone()]);
                }
                Op::DropData { ds } => {
                    // Puts before the range delete must stay before it.
                    version_puts.write_sorted(&mut wb, versions);
                    event_puts.write_sorted(&mut wb, events);
                    let lo = ds.to_be_bytes();
                    let hi = keys::prefix_successor(&lo).unwrap_or_else(|| vec![0xFF; 64]);
                    // The dataset's log blocks are spread among other
                    // datasets' (numbered in commit order): delete each.
                    // Those written earlier in this batch are known here;
                    // the committed ones are listed by the index (no write
                    // can commit meanwhile: this holds the writer mutex).
                    for l in logs.iter().filter(|l| l.ds == *ds) {
                        for n in &l.written {
                            wb.delete_cf(log, n.to_be_bytes());
                        }
                    }
                    let mut it = self
                        .db
                        .raw_iterator_cf_opt(log_index, Self::read_opts(Some(hi.clone())));
                    it.seek(lo);
                    while it.valid() {
                        wb.delete_cf(log, it.value().expect("valid"));
                        it.next();
                    }
                    it.status().map_err(engine)?;
                    drop(it);
                    for cf in [versions, events, log_index] {
                        wb.delete_range_cf(cf, &lo[..], &hi[..]);
                    }
                    wb.delete_cf(meta, Self::log_end_key(*ds));
                    // Records appended earlier in this batch go with the
                    // rest (their open block is not written); later ones
                    // start a new log at offset 0, written after the range
                    // delete.
                    logs.retain(|l| l.ds != *ds);
                    dropped.push(*ds);
                }
            }
        }
        version_puts.write_sorted(&mut wb, versions);
        event_puts.write_sorted(&mut wb, events);
        for l in &mut logs {
            l.put_block(&mut wb, &mut blocks);
        }
        if seq != counters.seq {
            wb.put_cf(meta, META_SEQ, seq.to_be_bytes());
        }
        let next_block = blocks.next_block;
        if next_block != counters.next_block {
            wb.put_cf(meta, META_NEXT_BLOCK, next_block.to_be_bytes());
        }
        let log_appends: Vec<(DatasetId, u64, u64)> =
            logs.iter().map(|l| (l.ds, l.start, l.count)).collect();
        for (ds, start, n) in &log_appends {
            wb.put_cf(meta, Self::log_end_key(*ds), (start + n).to_be_bytes());
        }
        let mut wo = WriteOptions::default();
        if batch.derived {
            // Recomputable after a crash; flushes are atomic across column
            // families, so what survives is a prefix of the derived batches.
            wo.disable_wal(true);
        } else {
            wo.set_sync(self.sync_writes);
        }
        self.db.write_opt(wb, &wo).map_err(engine)?;
        counters.seq = seq;
        counters.next_block = next_block;
        for ds in &dropped {
            counters.log_end.remove(ds);
        }
        for (ds, start, n) in &log_appends {
            counters.log_end.insert(*ds, start + n);
        }
        Ok(WriteReceipt {
            first_seq,
            log_appends,
        })
    }

    fn allocate_dataset_id(&self) -> Result<DatasetId> {
        let mut counters = self.counters.lock().expect("writer mutex poisoned");
        let id = counters.next_ds;
        let mut wo = WriteOptions::default();
        wo.set_sync(self.sync_writes);
        self.db
            .put_cf_opt(
                self.cf(CF_META),
                META_NEXT_DS,
                (id as u64 + 1).to_be_bytes(),
                &wo,
            )
            .map_err(engine)?;
        counters.next_ds = id + 1;
        Ok(id)
    }

    fn get_as_of(
        &self,
        ds: DatasetId,
        keys: &[&[u8]],
        as_of: i64,
        out: &mut dyn FnMut(usize, Option<VersionRef<'_>>),
    ) -> Result<()> {
        self.with_cursor(|it| {
            let mut scratch = Vec::with_capacity(64);
            for (i, key) in keys.iter().enumerate() {
                let v = seek_as_of(it, &mut scratch, ds, key, as_of)?;
                out(i, v);
            }
            Ok(())
        })
    }

    fn get_as_of_each(
        &self,
        ds: DatasetId,
        keys: &[&[u8]],
        as_of: &[i64],
        out: &mut dyn FnMut(usize, Option<VersionRef<'_>>),
    ) -> Result<()> {
        self.with_cursor(|it| {
            let mut scratch = Vec::with_capacity(64);
            for (i, (key, t)) in keys.iter().zip(as_of).enumerate() {
                let v = seek_as_of(it, &mut scratch, ds, key, *t)?;
                out(i, v);
            }
            Ok(())
        })
    }

    fn scan_latest(
        &self,
        ds: DatasetId,
        key_prefix: &[u8],
        as_of: i64,
        visit: &mut Visitor<'_>,
    ) -> Result<()> {
        let mut it = self.versions_with_prefix(ds, key_prefix);
        let mut current: Vec<u8> = Vec::with_capacity(64);
        let mut scratch = Vec::with_capacity(64);
        loop {
            if !it.valid() {
                return it.status().map_err(engine);
            }
            let (key, ts, _) = keys::split_version_key(it.key().expect("valid"))
                .ok_or_else(|| Error::Corrupt("version key".into()))?;
            current.clear();
            current.extend_from_slice(key);
            let found = if ts <= as_of {
                Some(version_ref(
                    it.key().expect("valid"),
                    it.value().expect("valid"),
                )?)
            } else {
                seek_as_of(&mut it, &mut scratch, ds, &current, as_of)?
            };
            if let Some(v) = found {
                if !v.deleted && !visit(v) {
                    return Ok(());
                }
            }
            // Move to the next key: a few steps, then a seek past this key.
            let mut steps = 0;
            loop {
                if !it.valid() {
                    break;
                }
                match keys::split_version_key(it.key().expect("valid")) {
                    Some((k, _, _)) if k == &current[..] => {}
                    _ => break,
                }
                if steps < 4 {
                    it.next();
                    steps += 1;
                } else {
                    scratch.clear();
                    scratch.extend_from_slice(&ds.to_be_bytes());
                    scratch.extend_from_slice(&current);
                    scratch.extend_from_slice(&[0xFF; 16]);
                    it.seek(&scratch[..]);
                    if it.valid() && it.key().expect("valid") == &scratch[..] {
                        it.next();
                    }
                    break;
                }
            }
        }
    }

    fn scan_history(
        &self,
        ds: DatasetId,
        key_prefix: &[u8],
        range: TimeRange,
        visit: &mut Visitor<'_>,
    ) -> Result<()> {
        if range.is_empty() {
            return Ok(());
        }
        let mut it = self.versions_with_prefix(ds, key_prefix);
        // Versions of a key are stored newest first; buffer one key's
        // versions (in a reused arena) and replay them oldest first.
        let mut arena: Vec<u8> = Vec::with_capacity(4096);
        let mut spans: Vec<(usize, usize, usize)> = Vec::new(); // (start, key len, value len)
        let mut group_key: Vec<u8> = Vec::new();
        let flush = |arena: &mut Vec<u8>,
                     spans: &mut Vec<(usize, usize, usize)>,
                     visit: &mut Visitor<'_>|
         -> Result<bool> {
            for &(start, klen, vlen) in spans.iter().rev() {
                let k = &arena[start..start + klen];
                let v = &arena[start + klen..start + klen + vlen];
                let vr = version_ref(k, v)?;
                if range.contains(vr.ts) && !visit(vr) {
                    return Ok(false);
                }
            }
            arena.clear();
            spans.clear();
            Ok(true)
        };
        while it.valid() {
            let k = it.key().expect("valid");
            let (key, _, _) =
                keys::split_version_key(k).ok_or_else(|| Error::Corrupt("version key".into()))?;
            if key != &group_key[..] {
                if !flush(&mut arena, &mut spans, visit)? {
                    return Ok(());
                }
                group_key.clear();
                group_key.extend_from_slice(key);
            }
            let v = it.value().expect("valid");
            spans.push((arena.len(), k.len(), v.len()));
            arena.extend_from_slice(k);
            arena.extend_from_slice(v);
            it.next();
        }
        it.status().map_err(engine)?;
        flush(&mut arena, &mut spans, visit)?;
        Ok(())
    }

    fn scan_events(&self, ds: DatasetId, range: TimeRange, visit: &mut Visitor<'_>) -> Result<()> {
        if range.is_empty() {
            return Ok(());
        }
        let mut lo = Vec::with_capacity(20);
        keys::event_key(&mut lo, ds, range.start, 0);
        let upper = if range.end == i64::MAX {
            keys::prefix_successor(&ds.to_be_bytes())
        } else {
            let mut hi = Vec::with_capacity(20);
            keys::event_key(&mut hi, ds, range.end + 1, 0);
            Some(hi)
        };
        let mut it = self
            .db
            .raw_iterator_cf_opt(self.cf(CF_EVENTS), Self::read_opts(upper));
        it.seek(&lo);
        while it.valid() {
            let k = it.key().expect("valid");
            let (ts, seq) =
                keys::split_event_key(k).ok_or_else(|| Error::Corrupt("event key".into()))?;
            let v = VersionRef {
                key: &[],
                ts,
                seq,
                deleted: false,
                value: it.value().expect("valid"),
            };
            if !visit(v) {
                return Ok(());
            }
            it.next();
        }
        it.status().map_err(engine)
    }

    fn event_time_bounds(&self, ds: DatasetId) -> Result<Option<(i64, i64)>> {
        let prefix = ds.to_be_bytes();
        let mut it = self.db.raw_iterator_cf(self.cf(CF_EVENTS));
        it.seek(prefix);
        let first = match it.key() {
            Some(k) if k.starts_with(&prefix) => keys::split_event_key(k),
            _ => return it.status().map_err(engine).map(|()| None),
        };
        match keys::prefix_successor(&prefix) {
            Some(next) => it.seek_for_prev(next),
            None => it.seek_to_last(),
        }
        let last = match it.key() {
            Some(k) if k.starts_with(&prefix) => keys::split_event_key(k),
            _ => None,
        };
        it.status().map_err(engine)?;
        match (first, last) {
            (Some((a, _)), Some((b, _))) => Ok(Some((a, b))),
            _ => Err(Error::Corrupt("event key".into())),
        }
    }

    fn read_log(
        &self,
        ds: DatasetId,
        from: u64,
        max: usize,
        visit: &mut dyn FnMut(u64, &[u8]),
    ) -> Result<u64> {
        let upper = keys::prefix_successor(&ds.to_be_bytes());
        let log = self.cf(CF_LOG);
        let mut it = self
            .db
            .raw_iterator_cf_opt(self.cf(CF_LOG_INDEX), Self::read_opts(upper));
        // The block holding `from` is the last one starting at or before it.
        let target = keys::log_key(ds, from);
        it.seek_for_prev(target);
        if !it.valid() || !it.key().expect("valid").starts_with(&ds.to_be_bytes()) {
            it.seek(target);
        }
        let mut next = from;
        let mut n = 0;
        while it.valid() && n < max {
            let k = it.key().expect("valid");
            if k.len() != 12 {
                return Err(Error::Corrupt("log key".into()));
            }
            let mut off = keys::read_u64(&k[4..]);
            let number = it.value().expect("valid");
            // Absent when the dataset was dropped since the index was read.
            let Some(value) = self.db.get_pinned_cf(log, number).map_err(engine)? else {
                break;
            };
            let mut block: &[u8] = &value;
            while !block.is_empty() && n < max {
                let (rec, rest) = log_record(block)?;
                block = rest;
                if off >= from {
                    visit(off, rec);
                    next = off + 1;
                    n += 1;
                }
                off += 1;
            }
            it.next();
        }
        it.status().map_err(engine)?;
        Ok(next)
    }

    fn log_end(&self, ds: DatasetId) -> Result<u64> {
        let c = self.counters.lock().expect("writer mutex poisoned");
        Ok(c.log_end.get(&ds).copied().unwrap_or(0))
    }

    fn catalog_get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.db
            .get_cf(self.cf(CF_CATALOG), name.as_bytes())
            .map_err(engine)
    }

    fn catalog_list(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let mut it = self.db.raw_iterator_cf(self.cf(CF_CATALOG));
        it.seek_to_first();
        let mut out = Vec::new();
        while it.valid() {
            let name = String::from_utf8(it.key().expect("valid").to_vec())
                .map_err(|_| Error::Corrupt("catalog name".into()))?;
            out.push((name, it.value().expect("valid").to_vec()));
            it.next();
        }
        it.status().map_err(engine)?;
        Ok(out)
    }

    fn flush(&self) -> Result<()> {
        self.db.clear();
        self.db.flush_wal(true).map_err(engine)?;
        // All column families in one atomic flush (see `open`).
        let cfs: Vec<&ColumnFamily> = ALL_CFS.iter().map(|cf| self.cf(cf)).collect();
        self.db
            .flush_cfs_opt(&cfs, &rocksdb::FlushOptions::default())
            .map_err(engine)
    }
}

#[cfg(test)]
mod tests {
    //! Pooled point-read iterators see every committed write, across
    //! memtable flushes (a new RocksDB version) and range deletes.
    use super::*;

    /// Sorting puts by their 32-byte heads (then whole keys) orders them
    /// as `memcmp` does, for keys shorter and longer than the head, with
    /// zero bytes where padding could be confused with data.
    #[test]
    fn put_order_is_byte_order() {
        use rand::{Rng, SeedableRng};
        let seed = std::env::var("THYME_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(rand::random::<u64>);
        println!("THYME_SEED={seed}");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut puts = SortedPuts::default();
        let mut want = Vec::new();
        for _ in 0..5_000 {
            let len = rng.random_range(0..48);
            // Few distinct byte values: long shared prefixes and zeros.
            let key: Vec<u8> = (0..len)
                .map(|_| [0u8, 1, 255][rng.random_range(0..3)])
                .collect();
            puts.push(&key, &[], b"v");
            want.push(key);
        }
        want.sort();
        puts.sort();
        let got: Vec<Vec<u8>> = puts
            .entries
            .iter()
            .map(|p| p.key(&puts.arena).to_vec())
            .collect();
        assert_eq!(got, want);
    }

    fn latest(store: &RocksStore, key: &[u8]) -> Option<Vec<u8>> {
        let mut got = None;
        store
            .get_as_of(1, &[key], keys::MAX_TS, &mut |_, v| {
                got = v.filter(|v| !v.deleted).map(|v| v.value.to_vec());
            })
            .unwrap();
        got
    }

    fn put(store: &RocksStore, key: &[u8], ts: i64, row: &[u8]) {
        let mut wb = WriteBatch::new();
        wb.put_version(1, key, ts, row);
        store.write(wb).unwrap();
    }

    /// With `direct_io`, flushes and compactions use direct I/O where the
    /// file system allows it and buffered I/O elsewhere (tmpfs before Linux
    /// 6.6 has no `O_DIRECT`): the store works, and keeps what it flushed,
    /// with the option on and off, on disk and in memory.
    #[test]
    fn flushes_with_and_without_direct_io() {
        let mut dirs = vec![];
        for direct_io in [false, true] {
            dirs.push((tempfile::tempdir().unwrap(), direct_io));
            if Path::new("/dev/shm").is_dir() {
                dirs.push((tempfile::tempdir_in("/dev/shm").unwrap(), direct_io));
            }
        }
        for (dir, direct_io) in &dirs {
            let options = StoreOptions {
                direct_io: *direct_io,
                ..Default::default()
            };
            println!(
                "{}: direct I/O {direct_io}, supported {}",
                dir.path().display(),
                supports_direct_io(dir.path())
            );
            {
                let store = RocksStore::open(dir.path(), options.clone()).unwrap();
                for i in 0..100u32 {
                    put(&store, &i.to_be_bytes(), 1, b"row");
                }
                store.flush().unwrap();
                store
                    .db
                    .compact_range_cf(store.cf(CF_VERSIONS), None::<&[u8]>, None::<&[u8]>);
                put(&store, b"k", 2, b"after");
            }
            let store = RocksStore::open(dir.path(), options).unwrap();
            assert_eq!(latest(&store, &7u32.to_be_bytes()), Some(b"row".to_vec()));
            assert_eq!(latest(&store, b"k"), Some(b"after".to_vec()));
        }
    }

    #[test]
    fn pooled_cursors_see_later_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = RocksStore::open(dir.path(), StoreOptions::default()).unwrap();
        put(&store, b"k", 10, b"a");
        assert_eq!(latest(&store, b"k").as_deref(), Some(&b"a"[..]));
        assert_eq!(store.db.pooled(), 1, "the cursor is pooled");

        // A write into the same memtable.
        put(&store, b"k", 20, b"b");
        assert_eq!(latest(&store, b"k").as_deref(), Some(&b"b"[..]));

        // A flush behind the pool's back: the pooled cursor's version is stale.
        store.db.flush_cf(store.cf(CF_VERSIONS)).unwrap();
        put(&store, b"k", 30, b"c");
        assert_eq!(latest(&store, b"k").as_deref(), Some(&b"c"[..]));
        assert_eq!(store.db.pooled(), 1);

        // A range delete (dropping the dataset's data).
        let mut wb = WriteBatch::new();
        wb.drop_data(1);
        store.write(wb).unwrap();
        assert_eq!(latest(&store, b"k"), None);
        put(&store, b"k", 40, b"d");
        assert_eq!(latest(&store, b"k").as_deref(), Some(&b"d"[..]));

        // Concurrent readers each take their own cursor; the pool stays bounded.
        std::thread::scope(|s| {
            for _ in 0..(2 * POOLED_CURSORS) {
                s.spawn(|| {
                    for _ in 0..50 {
                        assert_eq!(latest(&store, b"k").as_deref(), Some(&b"d"[..]));
                    }
                });
            }
        });
        assert!(store.db.pooled() <= POOLED_CURSORS);

        store.flush().unwrap();
        assert!(store.db.pooled() == 0, "flush empties the pool");

        // A write drops cursors idle for longer than CURSOR_IDLE, not others.
        assert_eq!(latest(&store, b"k").as_deref(), Some(&b"d"[..]));
        put(&store, b"k", 50, b"e");
        assert_eq!(store.db.pooled(), 1);
        std::thread::sleep(CURSOR_IDLE + std::time::Duration::from_millis(100));
        put(&store, b"k", 60, b"f");
        assert!(store.db.pooled() == 0, "idle cursor dropped");
        assert_eq!(latest(&store, b"k").as_deref(), Some(&b"f"[..]));
    }

    /// Log records packed into blocks read back one by one from any offset,
    /// across block and batch boundaries, and a drop inside a batch discards
    /// the records appended before it only.
    #[test]
    fn log_blocks_read_from_any_offset() {
        let dir = tempfile::tempdir().unwrap();
        let store = RocksStore::open(dir.path(), StoreOptions::default()).unwrap();
        let rec = |i: u64| format!("record {i}").repeat((i % 7) as usize + 1);
        let mut want: Vec<String> = Vec::new();
        // Batches of 1, 2500 (three blocks) and 700 records, interleaved
        // with another dataset's records.
        for n in [1u64, 2500, 700] {
            let mut wb = WriteBatch::new();
            for _ in 0..n {
                let i = want.len() as u64;
                wb.append_log(5, rec(i).as_bytes());
                wb.append_log(6, b"other");
                want.push(rec(i));
            }
            let r = store.write(wb).unwrap();
            assert_eq!(r.log_appends[0], (5, want.len() as u64 - n, n));
        }
        assert_eq!(store.log_end(5).unwrap(), want.len() as u64);
        let read = |from: u64, max: usize| {
            let mut got = Vec::new();
            let next = store
                .read_log(5, from, max, &mut |o, r| {
                    got.push((o, String::from_utf8(r.to_vec()).unwrap()))
                })
                .unwrap();
            (got, next)
        };
        for (from, max) in [
            (0, 1),
            (0, 5000),
            (1, 1023),
            (1023, 2),
            (1024, 3000),
            (2600, 10),
            (3200, 9),
            (3201, 5),
        ] {
            let (got, next) = read(from, max);
            let end = (from as usize + max).min(want.len());
            let expect: Vec<(u64, String)> = (from as usize..end.max(from as usize))
                .map(|i| (i as u64, want[i].clone()))
                .collect();
            assert_eq!(got, expect, "from {from} max {max}");
            assert_eq!(next, if expect.is_empty() { from } else { end as u64 });
        }

        // Drop in the middle of a batch: the records before it go too.
        let mut wb = WriteBatch::new();
        wb.append_log(5, b"gone");
        wb.drop_data(5);
        wb.append_log(5, b"new 0");
        wb.append_log(5, b"new 1");
        store.write(wb).unwrap();
        assert_eq!(store.log_end(5).unwrap(), 2);
        let (got, next) = read(0, 10);
        assert_eq!(
            got,
            vec![(0, "new 0".to_string()), (1, "new 1".to_string())]
        );
        assert_eq!(next, 2);
        let mut others = 0;
        store
            .read_log(6, 0, usize::MAX, &mut |_, _| others += 1)
            .unwrap();
        assert_eq!(others, want.len());
    }

    /// A store is stamped with its on-disk format when created and refused
    /// at open when it holds another one.
    #[test]
    fn refuses_another_format() {
        let dir = tempfile::tempdir().unwrap();
        let open = || RocksStore::open(dir.path(), StoreOptions::default());
        {
            let store = open().unwrap();
            put(&store, b"k", 1, b"a");
        }
        {
            let store = open().unwrap();
            assert_eq!(latest(&store, b"k").as_deref(), Some(&b"a"[..]));
            // What a store written before format stamps looks like.
            store.db.delete_cf(store.cf(CF_META), META_FORMAT).unwrap();
        }
        match open().err() {
            Some(Error::Format {
                found: 1,
                expected: FORMAT,
                ..
            }) => {}
            other => panic!("expected a format error, got {other:?}"),
        }
    }

    /// A dropped dataset's log blocks are deleted, also the ones written
    /// earlier in the dropping batch, while other datasets' blocks (numbered
    /// among them) stay readable.
    #[test]
    fn dropping_a_dataset_deletes_its_log_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let store = RocksStore::open(dir.path(), StoreOptions::default()).unwrap();
        let count = |cf: &str| {
            let mut it = store.db.raw_iterator_cf(store.cf(cf));
            it.seek_to_first();
            let mut n = 0;
            while it.valid() {
                n += 1;
                it.next();
            }
            n
        };
        for batch in 0..3u64 {
            let mut wb = WriteBatch::new();
            for i in 0..2500u64 {
                let r = (batch * 10_000 + i).to_be_bytes();
                wb.append_log(1, &r);
                wb.append_log(2, &r);
            }
            store.write(wb).unwrap();
        }
        // 3 blocks per dataset and batch (1,024 + 1,024 + 452 records).
        assert_eq!(count(CF_LOG), 18);
        let mut wb = WriteBatch::new();
        for i in 0..2000u64 {
            wb.append_log(1, &i.to_be_bytes());
        }
        wb.drop_data(1);
        wb.append_log(1, b"after");
        store.write(wb).unwrap();
        assert_eq!(count(CF_LOG), 10);
        assert_eq!(count(CF_LOG_INDEX), 10);
        let mut got = Vec::new();
        store
            .read_log(1, 0, usize::MAX, &mut |o, r| got.push((o, r.to_vec())))
            .unwrap();
        assert_eq!(got, vec![(0, b"after".to_vec())]);
        let mut n = 0;
        let end = store
            .read_log(2, 0, usize::MAX, &mut |o, r| {
                let (batch, i) = (o / 2500, o % 2500);
                assert_eq!(r, (batch * 10_000 + i).to_be_bytes());
                n += 1;
            })
            .unwrap();
        assert_eq!((n, end), (7500, 7500));
    }

    /// Batches the crash child writes: each plain one is followed by a
    /// derived one.
    const CRASH_BATCHES: u64 = 3000;
    const CRASH_DIR: &str = "THYME_DERIVED_CRASH_DIR";

    /// The writing half of `derived_batches_survive_a_crash_as_a_prefix`,
    /// run in a child process: it writes, then aborts (no destructors, no
    /// flush), as `kill -9` would stop it.
    #[test]
    #[ignore = "run in a child process by derived_batches_survive_a_crash_as_a_prefix"]
    fn derived_crash_child() {
        let Ok(dir) = std::env::var(CRASH_DIR) else {
            return;
        };
        // Small memtables, so that flushes happen while it writes.
        let options = StoreOptions {
            write_buffer_bytes: 64 << 10,
            ..Default::default()
        };
        let store = RocksStore::open(&dir, options).unwrap();
        let pad = [7u8; 1000];
        for i in 0..CRASH_BATCHES {
            let mut wb = WriteBatch::new();
            wb.put_event(1, i as i64, &i.to_be_bytes());
            wb.append_log(1, &i.to_be_bytes());
            store.write(wb).unwrap();

            let mut wb = WriteBatch::new();
            wb.set_derived();
            wb.put_version(2, b"k\0\x01", i as i64, &i.to_be_bytes());
            let mut rec = i.to_be_bytes().to_vec();
            rec.extend_from_slice(&pad);
            wb.append_log(2, &rec);
            wb.put_catalog("checkpoint", &i.to_be_bytes());
            store.write(wb).unwrap();
        }
        std::process::abort();
    }

    /// After a crash, every plain batch is there and the derived ones (which
    /// skip the write-ahead log) are a prefix of them in commit order, each
    /// whole: the versions, the log and the catalog entry agree.
    #[test]
    fn derived_batches_survive_a_crash_as_a_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "rocks::tests::derived_crash_child", "--ignored"])
            .args(["--test-threads", "1"])
            .env(CRASH_DIR, dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(!status.success(), "the child aborts after writing");

        let store = RocksStore::open(dir.path(), StoreOptions::default()).unwrap();
        let u64_of = |b: &[u8]| u64::from_be_bytes(b[..8].try_into().unwrap());

        let mut plain = Vec::new();
        let end = store
            .read_log(1, 0, usize::MAX, &mut |off, rec| {
                plain.push((off, u64_of(rec)))
            })
            .unwrap();
        assert_eq!(end, CRASH_BATCHES);
        assert!(plain
            .iter()
            .enumerate()
            .all(|(i, &(o, v))| o == i as u64 && v == o));
        let mut events = 0;
        store
            .scan_events(1, TimeRange::ALL, &mut |_| {
                events += 1;
                true
            })
            .unwrap();
        assert_eq!(events, CRASH_BATCHES);

        let mut derived = Vec::new();
        let n = store
            .read_log(2, 0, usize::MAX, &mut |off, rec| {
                derived.push((off, u64_of(rec)))
            })
            .unwrap();
        assert!(derived
            .iter()
            .enumerate()
            .all(|(i, &(o, v))| o == i as u64 && v == o));
        assert_eq!(n, derived.len() as u64);
        assert_eq!(store.log_end(2).unwrap(), n);
        let mut history = Vec::new();
        store
            .scan_history(2, b"", TimeRange::ALL, &mut |v| {
                history.push(u64_of(v.value));
                true
            })
            .unwrap();
        assert_eq!(history, (0..n).collect::<Vec<_>>());
        let checkpoint = store.catalog_get("checkpoint").unwrap().map(|b| u64_of(&b));
        assert_eq!(checkpoint, n.checked_sub(1));
        assert!(n > 0, "flushes made some derived batches durable");
        assert!(
            n < CRASH_BATCHES,
            "the last derived batches were not logged"
        );

        // Writing goes on after the surviving prefix.
        let mut wb = WriteBatch::new();
        wb.set_derived();
        wb.append_log(2, &n.to_be_bytes());
        let receipt = store.write(wb).unwrap();
        assert_eq!(receipt.log_appends, vec![(2, n, 1)]);
    }
}
