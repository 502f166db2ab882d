//! Property test: random writes, reads and reopens of [`RocksStore`], and
//! the same operations on the in-memory [`MemoryStore`] the crates above
//! test with, each checked against a brute-force model of the
//! temporal-store semantics.
//!
//! `THYME_SEED` replays a run; `THYME_PROPTEST_OPS` sets its length.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use thyme_storage::memory::MemoryStore;
use thyme_storage::{RocksStore, StoreOptions, TemporalStore, TimeRange, WriteBatch};

/// One version in the model: (event time, write sequence, row or `None` for a delete).
type ModelVersion = (i64, u64, Option<Vec<u8>>);

#[derive(Default)]
struct Model {
    /// (ds, key) -> versions in write order: (ts, seq, row or None for delete)
    versions: BTreeMap<(u32, Vec<u8>), Vec<ModelVersion>>,
    /// ds -> events in write order: (ts, seq, row)
    events: BTreeMap<u32, Vec<(i64, u64, Vec<u8>)>>,
    logs: BTreeMap<u32, Vec<Vec<u8>>>,
    seq: u64,
}

impl Model {
    fn as_of(&self, ds: u32, key: &[u8], t: i64) -> Option<ModelVersion> {
        let vs = self.versions.get(&(ds, key.to_vec()))?;
        vs.iter()
            .filter(|v| v.0 <= t)
            .max_by_key(|v| (v.0, v.1))
            .cloned()
    }
}

/// Prefix-free keys: 1..=3 bytes from {1,2,3} then a 0 terminator.
fn random_key(rng: &mut StdRng) -> Vec<u8> {
    let n = rng.random_range(1..=3);
    let mut k: Vec<u8> = (0..n).map(|_| rng.random_range(1..=3u8)).collect();
    k.push(0);
    k
}

fn random_ts(rng: &mut StdRng) -> i64 {
    match rng.random_range(0..10) {
        0 => i64::MIN + rng.random_range(0..3),
        1 => i64::MAX - rng.random_range(0..3),
        _ => rng.random_range(-50..50),
    }
}

fn random_row(rng: &mut StdRng) -> Vec<u8> {
    let n = rng.random_range(0..6);
    (0..n).map(|_| rng.random()).collect()
}

#[test]
fn random_operations_match_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run_against_model("rocksdb", move || {
        Box::new(RocksStore::open(&path, StoreOptions::default()).unwrap())
    });
}

#[test]
fn memory_store_matches_the_model() {
    // "Reopening" an in-memory store hands back a clone: the same store.
    let store = MemoryStore::new();
    run_against_model("memory", move || Box::new(store.clone()));
}

fn run_against_model(name: &str, open: impl Fn() -> Box<dyn TemporalStore>) {
    let seed: u64 = std::env::var("THYME_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let ops: usize = std::env::var("THYME_PROPTEST_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5000);
    println!("storage model test ({name}): THYME_SEED={seed} ops={ops}");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut store = Some(open());
    let mut model = Model::default();
    let datasets = [1u32, 2, 3];
    let mut checks = 0usize;
    let mut mismatches = 0usize;

    for step in 0..ops {
        let s = store.as_ref().unwrap();
        match rng.random_range(0..100) {
            // A batch of writes (versions, deletes, events, log records).
            0..=39 => {
                let mut wb = WriteBatch::new();
                // Derived batches skip the write-ahead log; a clean close
                // keeps them all the same.
                if rng.random_bool(0.5) {
                    wb.set_derived();
                }
                let n = rng.random_range(1..8);
                for _ in 0..n {
                    let ds = datasets[rng.random_range(0..datasets.len())];
                    match rng.random_range(0..10) {
                        0..=4 => {
                            let (k, t, r) = (
                                random_key(&mut rng),
                                random_ts(&mut rng),
                                random_row(&mut rng),
                            );
                            wb.put_version(ds, &k, t, &r);
                            model.seq += 1;
                            model.versions.entry((ds, k)).or_default().push((
                                t,
                                model.seq,
                                Some(r),
                            ));
                        }
                        5 | 6 => {
                            let (k, t) = (random_key(&mut rng), random_ts(&mut rng));
                            wb.delete_version(ds, &k, t, &[]);
                            model.seq += 1;
                            model
                                .versions
                                .entry((ds, k))
                                .or_default()
                                .push((t, model.seq, None));
                        }
                        7 | 8 => {
                            let (t, r) = (random_ts(&mut rng), random_row(&mut rng));
                            wb.put_event(ds, t, &r);
                            model.seq += 1;
                            model.events.entry(ds).or_default().push((t, model.seq, r));
                        }
                        _ => {
                            let r = random_row(&mut rng);
                            wb.append_log(ds, &r);
                            model.logs.entry(ds).or_default().push(r);
                        }
                    }
                }
                s.write(wb).unwrap();
            }
            // Batched as-of reads.
            40..=59 => {
                let ds = datasets[rng.random_range(0..datasets.len())];
                let t = random_ts(&mut rng);
                let keys: Vec<Vec<u8>> = (0..rng.random_range(1..6))
                    .map(|_| random_key(&mut rng))
                    .collect();
                let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
                let mut got = Vec::new();
                s.get_as_of(ds, &refs, t, &mut |i, v| {
                    got.push((
                        i,
                        v.map(|v| (v.ts, v.seq, (!v.deleted).then(|| v.value.to_vec()))),
                    ))
                })
                .unwrap();
                for (i, g) in got {
                    checks += 1;
                    let want = model.as_of(ds, &keys[i], t);
                    if g != want {
                        mismatches += 1;
                        eprintln!("step {step}: get_as_of ds={ds} key={:?} t={t}: got {g:?}, want {want:?}", keys[i]);
                    }
                }
                // The same keys, each at its own time.
                let times: Vec<i64> = keys.iter().map(|_| random_ts(&mut rng)).collect();
                let mut got = Vec::new();
                s.get_as_of_each(ds, &refs, &times, &mut |i, v| {
                    got.push((
                        i,
                        v.map(|v| (v.ts, v.seq, (!v.deleted).then(|| v.value.to_vec()))),
                    ))
                })
                .unwrap();
                assert_eq!(got.len(), keys.len());
                for (i, g) in got {
                    checks += 1;
                    let want = model.as_of(ds, &keys[i], times[i]);
                    if g != want {
                        mismatches += 1;
                        eprintln!(
                            "step {step}: get_as_of_each ds={ds} key={:?} t={}: got {g:?}, want {want:?}",
                            keys[i], times[i]
                        );
                    }
                }
            }
            // Latest-as-of scans with a key prefix.
            60..=69 => {
                let ds = datasets[rng.random_range(0..datasets.len())];
                let t = random_ts(&mut rng);
                let prefix: Vec<u8> = if rng.random_bool(0.5) {
                    vec![]
                } else {
                    vec![rng.random_range(1..=3u8)]
                };
                let mut got = Vec::new();
                s.scan_latest(ds, &prefix, t, &mut |v| {
                    got.push((v.key.to_vec(), v.ts, v.seq, v.value.to_vec()));
                    true
                })
                .unwrap();
                let mut want = Vec::new();
                for ((d, k), _) in model.versions.range((ds, vec![])..) {
                    if *d != ds {
                        break;
                    }
                    if !k.starts_with(&prefix) {
                        continue;
                    }
                    if let Some((ts, seq, Some(r))) = model.as_of(ds, k, t) {
                        want.push((k.clone(), ts, seq, r));
                    }
                }
                checks += 1;
                if got != want {
                    mismatches += 1;
                    eprintln!("step {step}: scan_latest ds={ds} t={t} prefix={prefix:?}:\n got {got:?}\nwant {want:?}");
                }
            }
            // History scans.
            70..=77 => {
                let ds = datasets[rng.random_range(0..datasets.len())];
                let (a, b) = (random_ts(&mut rng), random_ts(&mut rng));
                let range = if rng.random_bool(0.3) {
                    TimeRange::ALL
                } else {
                    TimeRange {
                        start: a.min(b),
                        end: a.max(b),
                    }
                };
                let mut got = Vec::new();
                s.scan_history(ds, &[], range, &mut |v| {
                    got.push((
                        v.key.to_vec(),
                        v.ts,
                        v.seq,
                        (!v.deleted).then(|| v.value.to_vec()),
                    ));
                    true
                })
                .unwrap();
                let mut want = Vec::new();
                for ((d, k), vs) in model.versions.range((ds, vec![])..) {
                    if *d != ds {
                        break;
                    }
                    let mut vs: Vec<_> =
                        vs.iter().filter(|v| range.contains(v.0)).cloned().collect();
                    vs.sort_by_key(|v| (v.0, v.1));
                    want.extend(vs.into_iter().map(|(t, q, r)| (k.clone(), t, q, r)));
                }
                checks += 1;
                if got != want {
                    mismatches += 1;
                    eprintln!(
                        "step {step}: scan_history ds={ds} {range:?}:\n got {got:?}\nwant {want:?}"
                    );
                }
            }
            // Event scans.
            78..=85 => {
                let ds = datasets[rng.random_range(0..datasets.len())];
                let (a, b) = (random_ts(&mut rng), random_ts(&mut rng));
                let range = TimeRange {
                    start: a.min(b),
                    end: a.max(b),
                };
                let mut got = Vec::new();
                s.scan_events(ds, range, &mut |v| {
                    got.push((v.ts, v.seq, v.value.to_vec()));
                    true
                })
                .unwrap();
                let mut want: Vec<_> = model.events.get(&ds).cloned().unwrap_or_default();
                want.retain(|e| range.contains(e.0));
                want.sort_by_key(|e| (e.0, e.1));
                checks += 1;
                if got != want {
                    mismatches += 1;
                    eprintln!(
                        "step {step}: scan_events ds={ds} {range:?}:\n got {got:?}\nwant {want:?}"
                    );
                }
            }
            // Log reads.
            86..=93 => {
                let ds = datasets[rng.random_range(0..datasets.len())];
                let log = model.logs.get(&ds).cloned().unwrap_or_default();
                let from = rng.random_range(0..=log.len() as u64);
                let max = rng.random_range(1..10);
                let mut got = Vec::new();
                let next = s
                    .read_log(ds, from, max, &mut |o, r| got.push((o, r.to_vec())))
                    .unwrap();
                let want: Vec<_> = log
                    .iter()
                    .enumerate()
                    .skip(from as usize)
                    .take(max)
                    .map(|(i, r)| (i as u64, r.clone()))
                    .collect();
                checks += 1;
                let want_next = from + want.len() as u64;
                if got != want || next != want_next || s.log_end(ds).unwrap() != log.len() as u64 {
                    mismatches += 1;
                    eprintln!(
                        "step {step}: read_log ds={ds} from={from}: got {got:?}, want {want:?}"
                    );
                }
            }
            // Drop a dataset's data.
            94 => {
                let ds = datasets[rng.random_range(0..datasets.len())];
                let mut wb = WriteBatch::new();
                wb.drop_data(ds);
                s.write(wb).unwrap();
                model.versions.retain(|(d, _), _| *d != ds);
                model.events.remove(&ds);
                model.logs.remove(&ds);
            }
            // Close and reopen.
            _ => {
                drop(store.take());
                store = Some(open());
            }
        }
    }
    println!(
        "storage model test ({name}): {checks} checks, {mismatches} mismatches (THYME_SEED={seed})"
    );
    assert_eq!(mismatches, 0, "replay with THYME_SEED={seed}");
    assert!(checks > ops / 4);
}

#[test]
fn second_open_of_a_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _a = RocksStore::open(dir.path(), StoreOptions::default()).unwrap();
    let err = RocksStore::open(dir.path(), StoreOptions::default())
        .err()
        .expect("must fail");
    assert!(err.to_string().contains("already in use"), "{err}");
}

#[test]
fn catalog_and_dataset_ids_persist() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = RocksStore::open(dir.path(), StoreOptions::default()).unwrap();
        assert_eq!(s.allocate_dataset_id().unwrap(), 1);
        assert_eq!(s.allocate_dataset_id().unwrap(), 2);
        let mut wb = WriteBatch::new();
        wb.put_catalog("b", b"2");
        wb.put_catalog("a", b"1");
        s.write(wb).unwrap();
    }
    let s = RocksStore::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(s.allocate_dataset_id().unwrap(), 3);
    assert_eq!(
        s.catalog_list().unwrap(),
        vec![
            ("a".to_string(), b"1".to_vec()),
            ("b".to_string(), b"2".to_vec())
        ]
    );
    let mut wb = WriteBatch::new();
    wb.delete_catalog("a");
    s.write(wb).unwrap();
    assert_eq!(s.catalog_get("a").unwrap(), None);
}
