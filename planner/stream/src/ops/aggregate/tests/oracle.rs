//! Every aggregation x every window kind against a brute-force oracle, at
//! the operator level: random events for a few keys arrive out of order in
//! random chunks (each followed by an advance to the newest event time),
//! the rows the operator emits are replayed as versions (the last write at
//! a time wins), and the value in effect at random times, event times and
//! window edges is compared with a recomputation from the raw events. The
//! seed is printed; `THYME_SEED=<n>` replays a run.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Float64Array, Int64Array, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use super::test_output;
use crate::ops::aggregate::*;
use thyme_table::types::Elem;

const M: i64 = 60_000_000;

#[derive(Clone, Debug)]
struct Ev {
    key: i64,
    ts: i64,
    seq: u64,
    v: Option<f64>,
    s: String,
}

fn windows() -> Vec<(serde_json::Value, &'static str)> {
    vec![
        (json!({"kind": "continuous", "duration": "30m"}), "c30"),
        (json!({"kind": "continuous", "duration": "forever"}), "cf"),
        (json!({"kind": "tumbling", "duration": "20m"}), "t20"),
        (
            json!({"kind": "tumbling", "duration": "15m", "lookback": "7m"}),
            "t15l",
        ),
        (
            json!({"kind": "hopping", "duration": "30m", "stride": "10m", "lookback": "3m"}),
            "h30",
        ),
        (json!({"kind": "session", "gap": "6m"}), "s6"),
    ]
}

/// (kind, extra fields, output type)
fn kinds() -> Vec<(&'static str, serde_json::Value, DType, bool)> {
    let list = DType::List(Elem::Str);
    vec![
        ("count", json!({}), DType::Int, false),
        ("count", json!({"of": "v"}), DType::Int, false),
        (
            "count",
            json!({"of": "s", "unique": true}),
            DType::Int,
            false,
        ),
        ("sum", json!({"of": "v"}), DType::Float, false),
        ("average", json!({"of": "v"}), DType::Float, true),
        ("min", json!({"of": "v"}), DType::Float, true),
        ("max", json!({"of": "v"}), DType::Float, true),
        ("stddev", json!({"of": "v"}), DType::Float, true),
        ("distinct", json!({"of": "s"}), list, false),
        ("lastk", json!({"of": "s", "limit": 2}), list, false),
        (
            "firstk",
            json!({"of": "s", "limit": 2, "dedup": true}),
            list,
            false,
        ),
        ("quantile", json!({"of": "v", "p": 0.5}), DType::Float, true),
        (
            "expdecaysum",
            json!({"of": "v", "half_life": "10m"}),
            DType::Float,
            false,
        ),
    ]
}

/// The events of one key that count at `t` under window `w`.
fn members<'a>(evs: &'a [Ev], w: &str, t: i64) -> Vec<&'a Ev> {
    let mut sorted: Vec<&Ev> = evs.iter().collect();
    sorted.sort_by_key(|e| (e.ts, e.seq));
    let hop = |d: i64, s: i64, l: i64| {
        let j = (t - l - d).div_euclid(s);
        (j * s, j * s + d)
    };
    let range = match w {
        "c30" => Some((t - 30 * M, t + 1)),
        "cf" => Some((i64::MIN, t + 1)),
        "t20" => Some(hop(20 * M, 20 * M, 0)),
        "t15l" => Some(hop(15 * M, 15 * M, 7 * M)),
        "h30" => Some(hop(30 * M, 10 * M, 3 * M)),
        _ => None,
    };
    if let Some((lo, hi)) = range {
        return sorted
            .into_iter()
            .filter(|e| e.ts >= lo && e.ts < hi)
            .collect();
    }
    // Session: the most recent session closed by t.
    let gap = 6 * M;
    let mut sessions: Vec<Vec<&Ev>> = Vec::new();
    for e in sorted {
        match sessions.last_mut() {
            Some(cur) if e.ts - cur.last().expect("non-empty").ts <= gap => cur.push(e),
            _ => sessions.push(vec![e]),
        }
    }
    sessions
        .into_iter()
        .rfind(|s| s.last().expect("non-empty").ts + gap < t)
        .unwrap_or_default()
}

#[derive(Debug, PartialEq)]
enum Exp {
    I(i64),
    F(Option<f64>),
    Q(Option<f64>),
    L(Vec<String>),
}

fn expected(kind: usize, evs: &[&Ev], t: i64) -> Exp {
    let vs: Vec<f64> = evs.iter().filter_map(|e| e.v).collect();
    let n = vs.len() as f64;
    let mean = vs.iter().sum::<f64>() / n;
    let opt = |x: f64| (!vs.is_empty()).then_some(x);
    match kind {
        0 => Exp::I(evs.len() as i64),
        1 => Exp::I(vs.len() as i64),
        2 => {
            let mut s: Vec<&str> = evs.iter().map(|e| e.s.as_str()).collect();
            s.sort();
            s.dedup();
            Exp::I(s.len() as i64)
        }
        3 => Exp::F(Some(vs.iter().sum())),
        4 => Exp::F(opt(mean)),
        5 => Exp::F(vs.iter().copied().reduce(f64::min)),
        6 => Exp::F(vs.iter().copied().reduce(f64::max)),
        7 => Exp::F(opt((vs.iter().map(|x| (x - mean).powi(2)).sum::<f64>()
            / n)
            .sqrt())),
        8 => {
            let mut s: Vec<String> = evs.iter().map(|e| e.s.clone()).collect();
            s.sort();
            s.dedup();
            Exp::L(s)
        }
        9 => Exp::L(evs.iter().rev().take(2).map(|e| e.s.clone()).collect()),
        10 => {
            let mut out: Vec<String> = Vec::new();
            for e in evs {
                if !out.contains(&e.s) && out.len() < 2 {
                    out.push(e.s.clone());
                }
            }
            Exp::L(out)
        }
        11 => {
            let mut s = vs.clone();
            s.sort_by(f64::total_cmp);
            Exp::Q(
                s.get(((s.len().max(1) - 1) as f64 * 0.5).floor() as usize)
                    .copied(),
            )
        }
        12 => Exp::F(Some(
            evs.iter()
                .filter_map(|e| {
                    e.v.map(|v| v * (-((t - e.ts) as f64) / (10 * M) as f64).exp2())
                })
                .sum(),
        )),
        _ => unreachable!(),
    }
}

fn got(c: &Cell, out_type: DType, decay_from: Option<(i64, i64)>) -> Exp {
    match (c, out_type) {
        (Cell::V(V::I(i)), DType::Int) => Exp::I(*i),
        (Cell::V(v), DType::Float) => {
            let x = v.as_f64();
            Exp::F(match decay_from {
                Some((c, t)) => x.map(|x| x * (-((t - c) as f64) / (10 * M) as f64).exp2()),
                None => x,
            })
        }
        (Cell::List(items), _) => Exp::L(
            items
                .iter()
                .map(|v| match v {
                    V::S(s) => s.to_string(),
                    other => format!("{other:?}"),
                })
                .collect(),
        ),
        other => panic!("unexpected cell {other:?}"),
    }
}

fn matches(g: &Exp, e: &Exp) -> bool {
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 + 1e-9 * b.abs();
    match (g, e) {
        (Exp::F(Some(a)), Exp::F(Some(b))) => close(*a, *b),
        (Exp::F(Some(a)), Exp::Q(Some(b))) => (a - b).abs() <= 0.0101 * b.abs() + 1e-9,
        (Exp::F(None), Exp::Q(None)) => true,
        (a, b) => a == b,
    }
}

#[test]
fn every_aggregation_and_window_matches_brute_force() {
    let seed: u64 = std::env::var("THYME_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("every_aggregation_and_window_matches_brute_force: THYME_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);

    let mut aggs: Vec<Agg> = Vec::new();
    let mut fields: Vec<(String, DType, bool)> = vec![("k".into(), DType::Int, false)];
    let mut spec: Vec<(usize, &'static str, DType)> = Vec::new();
    for (w, wname) in windows() {
        for (ki, (kind, extra, dtype, nullable)) in kinds().into_iter().enumerate() {
            let into = format!("{kind}{ki}_{wname}");
            let mut a = json!({"kind": kind, "into": into, "window": w});
            for (k, v) in extra.as_object().expect("object") {
                a[k] = v.clone();
            }
            aggs.push(serde_json::from_value(a).expect("agg"));
            fields.push((into, dtype, nullable));
            spec.push((ki, wname, dtype));
        }
    }
    fields.push(("ts".into(), DType::Datetime, false));
    let fields: Vec<(&str, DType, bool)> = fields
        .iter()
        .map(|(n, d, b)| (n.as_str(), *d, *b))
        .collect();
    let out = test_output(&fields);
    let input = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("v", DataType::Float64, true),
        Field::new("s", DataType::Utf8, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]));
    let mut op = AggregateOp::new(&input, &["k".into()], None, &aggs, out, 2).expect("operator");

    // Events: 3 keys over 4 hours, arriving shuffled within ~25 minutes,
    // some at equal times.
    let n = 240;
    let mut evs: Vec<Ev> = Vec::new();
    for i in 0..n {
        let ts = if i > 0 && rng.random_bool(0.08) {
            evs[i - 1].ts
        } else {
            i as i64 * M + rng.random_range(-25 * M..25 * M)
        };
        evs.push(Ev {
            key: rng.random_range(0..3),
            ts,
            seq: (i as u64) << 16,
            v: (!rng.random_bool(0.1)).then(|| (rng.random_range(-500..2000) as f64) / 10.0),
            s: ["a", "b", "c", "d"][rng.random_range(0..4)].to_string(),
        });
    }
    let mut rows: BTreeMap<(i64, i64), Vec<Cell>> = BTreeMap::new();
    let mut newest = i64::MIN;
    let mut i = 0;
    while i < n {
        let m = rng.random_range(1..12).min(n - i);
        let chunk = &evs[i..i + m];
        let batch = RecordBatch::try_new(
            input.clone(),
            vec![
                Arc::new(Int64Array::from(
                    chunk.iter().map(|e| e.key).collect::<Vec<_>>(),
                )),
                Arc::new(Float64Array::from(
                    chunk.iter().map(|e| e.v).collect::<Vec<_>>(),
                )),
                Arc::new(StringArray::from(
                    chunk.iter().map(|e| e.s.as_str()).collect::<Vec<_>>(),
                )),
                Arc::new(
                    TimestampMicrosecondArray::from(chunk.iter().map(|e| e.ts).collect::<Vec<_>>())
                        .with_timezone("UTC"),
                ),
            ],
        )
        .expect("batch");
        let ts: Vec<i64> = chunk.iter().map(|e| e.ts).collect();
        let seq = UInt64Array::from(chunk.iter().map(|e| e.seq).collect::<Vec<_>>());
        let mut wb = WriteBatch::new();
        op.push(
            &batch,
            &ts,
            &seq,
            &BooleanArray::from(vec![false; m]),
            &mut wb,
        )
        .expect("push");
        newest = newest.max(ts.iter().copied().max().expect("rows"));
        // Sometimes the clock runs ahead of the events (an idle input).
        let horizon = if rng.random_bool(0.1) {
            newest + 40 * M
        } else {
            newest
        };
        op.advance(horizon).expect("advance");
        for (id, t, row) in op.take_rows() {
            let key = match op.states[id as usize].key[0] {
                V::I(k) => k,
                _ => unreachable!(),
            };
            rows.insert((key, t), row);
        }
        i += m;
    }
    op.advance(i64::MAX / 4).expect("advance");
    for (id, t, row) in op.take_rows() {
        let key = match op.states[id as usize].key[0] {
            V::I(k) => k,
            _ => unreachable!(),
        };
        rows.insert((key, t), row);
    }

    let mut times: Vec<i64> = (0..150)
        .map(|_| rng.random_range(-30 * M..n as i64 * M + 120 * M))
        .collect();
    for e in evs.iter().step_by(5) {
        times.extend([
            e.ts,
            e.ts - 1,
            e.ts + 30 * M,
            e.ts + 30 * M + 1,
            e.ts + 6 * M,
            e.ts + 6 * M + 1,
        ]);
    }
    let mut checked = 0;
    for &t in &times {
        for key in 0..3 {
            let mine: Vec<Ev> = evs.iter().filter(|e| e.key == key).cloned().collect();
            let at = rows.range((key, i64::MIN)..=(key, t)).next_back();
            if !mine.iter().any(|e| e.ts <= t) {
                assert!(
                    at.is_none(),
                    "seed {seed}: key {key} at {t}: unexpected row"
                );
                continue;
            }
            let ((_, c), row) =
                at.unwrap_or_else(|| panic!("seed {seed}: key {key} at {t}: no row"));
            for (j, (ki, w, dtype)) in spec.iter().enumerate() {
                let m = members(&mine, w, t);
                let exp = expected(*ki, &m, t);
                let g = got(&row[j], *dtype, (*ki == 12).then_some((*c, t)));
                assert!(
                    matches(&g, &exp),
                    "seed {seed}: key {key} at {t} (row of {c}): {} over {w} = {g:?}, expected {exp:?}",
                    kinds()[*ki].0
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 10_000, "{checked}");
}
