//! State records in both layouts: a runner restored from its state log
//! continues exactly like one that never stopped, and the legacy layout
//! holds one value per aggregation (what stores written before values
//! were shared contain).
use super::test_output;
use crate::ops::aggregate::*;
use arrow::array::{Float64Array, Int64Array, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

const M: i64 = 60_000_000;

fn operator(legacy: bool) -> (AggregateOp, Arc<Schema>) {
    let out = test_output(&[
        ("k", DType::Int, false),
        ("n", DType::Int, true),
        ("total", DType::Float, true),
        ("mean", DType::Float, true),
        ("most", DType::Float, true),
        ("ts", DType::Datetime, false),
    ]);
    let aggs: Vec<Agg> = serde_json::from_value(serde_json::json!([
        {"kind": "count", "into": "n", "window": {"kind": "continuous", "duration": "30m"}},
        {"kind": "sum", "of": "v", "into": "total", "window": {"kind": "continuous", "duration": "30m"}},
        {"kind": "average", "of": "v", "into": "mean", "window": {"kind": "continuous", "duration": "1h"}},
        {"kind": "max", "of": "w", "into": "most", "window": {"kind": "continuous", "duration": "1h"}},
    ]))
    .unwrap();
    let input = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("v", DataType::Float64, true),
        Field::new("w", DataType::Float64, true),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]));
    let mut op = AggregateOp::new(&input, &["k".into()], None, &aggs, out, 7).unwrap();
    op.set_legacy_state(legacy);
    (op, input)
}

/// Push events `from..to` (3 keys, a minute apart, some out of order)
/// and advance; returns the output rows.
fn feed(
    op: &mut AggregateOp,
    input: &Arc<Schema>,
    from: i64,
    to: i64,
    wb: &mut WriteBatch,
) -> Vec<(u32, i64, Vec<Cell>)> {
    let idx: Vec<i64> = (from..to).collect();
    let ts: Vec<i64> = idx.iter().map(|i| (i + (i % 4) * 2) * M).collect();
    let batch = RecordBatch::try_new(
        input.clone(),
        vec![
            Arc::new(Int64Array::from(
                idx.iter().map(|i| i % 3).collect::<Vec<_>>(),
            )),
            Arc::new(Float64Array::from(
                idx.iter()
                    .map(|i| (i % 5 != 0).then_some(*i as f64))
                    .collect::<Vec<_>>(),
            )),
            Arc::new(Float64Array::from(
                idx.iter().map(|i| Some(-(*i as f64))).collect::<Vec<_>>(),
            )),
            Arc::new(TimestampMicrosecondArray::from(ts.clone()).with_timezone("UTC")),
        ],
    )
    .unwrap();
    let seq = UInt64Array::from(idx.iter().map(|i| (*i as u64) << 16).collect::<Vec<_>>());
    op.push(
        &batch,
        &ts,
        &seq,
        &BooleanArray::from(vec![false; idx.len()]),
        wb,
    )
    .unwrap();
    op.advance(*ts.iter().max().unwrap()).unwrap();
    op.take_rows()
}

fn same(a: &[(u32, i64, Vec<Cell>)], b: &[(u32, i64, Vec<Cell>)]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.0 == y.0 && x.1 == y.1 && format!("{:?}", x.2) == format!("{:?}", y.2))
}

#[test]
fn restored_state_continues_in_both_layouts() {
    for legacy in [false, true] {
        let store = thyme_storage::memory::MemoryStore::shared();
        let (mut live, input) = operator(legacy);
        let mut wb = WriteBatch::new();
        feed(&mut live, &input, 0, 120, &mut wb);
        store.write(wb).unwrap();

        // Each record: the key, time and order, then one value per slot
        // (v and w: 2) or, in the legacy layout, per aggregation (4).
        let per_record = if legacy { 4 } else { 2 };
        let mut records = 0;
        store
            .read_log(7, 0, 1_000, &mut |_, rec| {
                let mut r = rec;
                V::decode(&mut r).unwrap();
                r = &r[16..];
                for _ in 0..per_record {
                    V::decode(&mut r).unwrap();
                }
                assert!(r.is_empty(), "legacy {legacy}: {} bytes left", r.len());
                records += 1;
            })
            .unwrap();
        assert_eq!(records, 120);

        let (mut restored, _) = operator(legacy);
        restored
            .restore(
                store.as_ref(),
                live.states.iter().map(|s| s.t).max().unwrap(),
            )
            .unwrap();
        let mut wb = WriteBatch::new();
        let a = feed(&mut live, &input, 120, 300, &mut wb);
        let b = feed(&mut restored, &input, 120, 300, &mut WriteBatch::new());
        assert!(!a.is_empty());
        assert!(same(&a, &b), "legacy {legacy}: restored runner differs");
    }
}

/// Events fed in random chunks, each step's state log written to the
/// in-memory store; at random steps a new operator is restored from the
/// store (as a restarted runner would be) and continues. From every cut
/// on, its output equals the output of the operator that never stopped.
#[test]
fn restore_at_random_cuts_continues_like_an_uninterrupted_run() {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    let seed: u64 = std::env::var("THYME_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("aggregation restore: THYME_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    for legacy in [false, true] {
        let store = thyme_storage::memory::MemoryStore::shared();
        let (mut live, input) = operator(legacy);
        let mut restored: Option<AggregateOp> = None;
        let mut at = 0i64;
        let mut cuts = 0;
        for step in 0..30 {
            let n = rng.random_range(1..40);
            let mut wb = WriteBatch::new();
            let want = feed(&mut live, &input, at, at + n, &mut wb);
            if let Some(r) = restored.as_mut() {
                let got = feed(r, &input, at, at + n, &mut WriteBatch::new());
                assert!(
                    same(&want, &got),
                    "legacy {legacy}, step {step}: the restored operator differs (THYME_SEED={seed})"
                );
            }
            store.write(wb).unwrap();
            at += n;
            if rng.random_bool(0.25) {
                let (mut r, _) = operator(legacy);
                r.restore(
                    store.as_ref(),
                    live.states.iter().map(|s| s.t).max().unwrap(),
                )
                .unwrap();
                restored = Some(r);
                cuts += 1;
            }
        }
        assert!(cuts > 0 || restored.is_none());
    }
}
