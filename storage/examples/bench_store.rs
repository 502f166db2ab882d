//! Storage micro-benchmark: batched ingest, latest and as-of lookups.
//!
//! `cargo run --release -p thyme-storage --example bench_store -- [keys] [versions_per_key]`
//! Prints a Markdown table row per measurement.

use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use thyme_storage::{RocksStore, StoreOptions, TemporalStore, WriteBatch};

fn key(k: u64) -> [u8; 8] {
    k.to_be_bytes()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let keys: u64 = args
        .get(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let versions: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(4);
    let dir = tempfile::tempdir().unwrap();
    let store = RocksStore::open(dir.path(), StoreOptions::default()).unwrap();
    let row = [7u8; 48];
    let ds = store.allocate_dataset_id().unwrap();

    // Ingest: versions in batches of 10k rows, each with a log record.
    let total = keys * versions;
    let start = Instant::now();
    let mut wb = WriteBatch::with_capacity(20_000, 2 << 20);
    let mut written = 0u64;
    for v in 0..versions {
        for k in 0..keys {
            let ts = (v as i64) * 1_000_000 + (k % 1000) as i64;
            wb.put_version(ds, &key(k), ts, &row);
            wb.append_log(ds, &row);
            written += 1;
            if wb.len() >= 20_000 {
                store.write(std::mem::take(&mut wb)).unwrap();
            }
        }
    }
    if !wb.is_empty() {
        store.write(wb).unwrap();
    }
    let ingest = written as f64 / start.elapsed().as_secs_f64();

    let mut rng = StdRng::seed_from_u64(42);
    let lookups = 200_000.min(keys * 4) as usize;
    let probe: Vec<[u8; 8]> = (0..lookups)
        .map(|_| key(rng.random_range(0..keys)))
        .collect();
    let refs: Vec<&[u8]> = probe.iter().map(|k| k.as_slice()).collect();
    let bench = |as_of: i64| {
        let start = Instant::now();
        let mut found = 0usize;
        for chunk in refs.chunks(1000) {
            store
                .get_as_of(ds, chunk, as_of, &mut |_, v| found += v.is_some() as usize)
                .unwrap();
        }
        assert!(found > 0);
        lookups as f64 / start.elapsed().as_secs_f64()
    };
    let latest = bench(i64::MAX);
    let as_of = bench((versions as i64 / 2) * 1_000_000 + 500);

    println!("| measurement | keys | versions/key | rate |");
    println!("|---|---|---|---|");
    println!("| batched ingest (10k-row batches, version + log) | {keys} | {versions} | {ingest:.0} rows/s |");
    println!(
        "| latest lookups (batches of 1000 seeks) | {keys} | {versions} | {latest:.0} lookups/s |"
    );
    println!("| as-of lookups, mid-history (batches of 1000) | {keys} | {versions} | {as_of:.0} lookups/s |");
    let _ = total;
}
