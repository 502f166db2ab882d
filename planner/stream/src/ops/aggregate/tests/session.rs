//! Session windows: merging sessions rewrites the close it removed.

use super::test_output;
use crate::ops::aggregate::*;
use arrow::array::{Int64Array, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use thyme_model::payload::{Agg, AggKind, Window};

fn agg(kind: AggKind, into: &str, w: Window) -> Agg {
    serde_json::from_value(serde_json::json!({"kind": "count", "into": into, "window": w}))
        .map(|mut a: Agg| {
            a.kind = kind;
            a
        })
        .unwrap()
}

/// One key; count over 1h and over a 4-minute session, fed one event
/// per step; reads the value in effect at `t` from the written rows.
#[test]
fn session_merge_rewrites_the_close_it_removed() {
    let out = test_output(&[
        ("k", DType::Int, false),
        ("n", DType::Int, false),
        ("s", DType::Int, false),
        ("ts", DType::Datetime, false),
    ]);
    let input = Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]);
    let m = 60_000_000i64;
    let aggs = vec![
        agg(
            AggKind::Count,
            "n",
            Window::Continuous {
                duration: "1h".into(),
            },
        ),
        agg(AggKind::Count, "s", Window::Session { gap: "4m".into() }),
    ];
    let mut a = AggregateOp::new(&input, &["k".into()], None, &aggs, out, 99).unwrap();
    let mut rows: Vec<(i64, i64, i64)> = Vec::new();
    let now = 100 * m;
    for (i, t) in [10 * m, 13 * m].into_iter().enumerate() {
        let b = RecordBatch::try_new(
            Arc::new(input.clone()),
            vec![
                Arc::new(Int64Array::from(vec![1])),
                Arc::new(TimestampMicrosecondArray::from(vec![t]).with_timezone("UTC")),
            ],
        )
        .unwrap();
        let mut wb = WriteBatch::new();
        a.push(
            &b,
            &[t],
            &UInt64Array::from(vec![i as u64 * 65536]),
            &BooleanArray::from(vec![false]),
            &mut wb,
        )
        .unwrap();
        a.advance(now).unwrap();
        let out = a.take_output().unwrap().unwrap();
        let col = |c: usize| {
            let a = out.column(c).as_any().downcast_ref::<Int64Array>().unwrap();
            a.values().to_vec()
        };
        let ts = out
            .column(3)
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .unwrap();
        for ((n, s), t) in col(1).into_iter().zip(col(2)).zip(ts.values().iter()) {
            rows.push((*t, n, s));
        }
    }
    // Last write per time wins; the value in effect at t.
    let at = |t: i64| {
        let mut best: Option<(i64, i64, i64)> = None;
        for r in &rows {
            if r.0 <= t && best.is_none_or(|b| r.0 >= b.0) {
                best = Some(*r);
            }
        }
        best.map(|b| (b.1, b.2))
    };
    // The first event's session (closing at 14m + 1µs) merged with the
    // second's (closing at 17m + 1µs).
    assert_eq!(at(14 * m + 1), Some((2, 0)));
    assert_eq!(at(17 * m + 1), Some((2, 2)));
    assert_eq!(at(71 * m), Some((1, 2)));
}
