//! The featureset planner and evaluator on the in-memory store: the
//! extractors a query runs, the errors of queries that cannot be answered,
//! and lookup / alias / expression features at random times against a
//! brute-force recomputation from the written versions (with late,
//! out-of-order writes and equal times, where the last write wins).
//!
//! The definitions are `sql/fixtures/featuresets.json` (the SQL tests'
//! fixture). `THYME_SEED=<n>` replays a run.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array, Int64Array, StringArray};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};
use thyme_error::ErrorKind;
use thyme_features::Features;
use thyme_storage::memory::MemoryStore;
use thyme_table::catalog::Catalog;
use thyme_table::registry::Registry;

const FIXTURE: &str = include_str!("../../../sql/fixtures/featuresets.json");
const DAY: i64 = 86_400_000_000;
const T0: i64 = 1_704_067_200_000_000; // 2024-01-01T00:00:00Z

fn committed() -> (Arc<Registry>, Features) {
    let catalog = Arc::new(Catalog::load(MemoryStore::shared()).unwrap());
    let registry = Arc::new(Registry::load(catalog).unwrap());
    registry
        .commit(serde_json::from_str(FIXTURE).unwrap())
        .unwrap();
    let features = Features::new(registry.clone());
    (registry, features)
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn rfc3339(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

#[test]
fn plans_run_only_the_extractors_needed_in_dependency_order() {
    let (_, features) = committed();
    let plan = features
        .plan(
            &names(&["AccountFeatures.id"]),
            &names(&["AccountFeatures.doubled"]),
        )
        .unwrap();
    assert_eq!(
        plan.extractor_names(),
        [
            "AccountFeatures._lookup_balance",
            "AccountFeatures._expr_doubled"
        ]
    );
    // A whole featureset: every feature, the lookups before the expression
    // that reads one of them.
    let plan = features
        .plan(
            &names(&["AccountFeatures.id"]),
            &names(&["AccountFeatures"]),
        )
        .unwrap();
    let steps = plan.extractor_names();
    let pos = |n: &str| steps.iter().position(|s| s.ends_with(n)).unwrap();
    assert_eq!(steps.len(), 3);
    assert!(pos("_lookup_balance") < pos("_expr_doubled"));
    // Across featuresets: the alias reads AccountFeatures.owner, found by
    // its lookup from the supplied id.
    let plan = features
        .plan(&names(&["AccountFeatures.id"]), &names(&["Request.owner"]))
        .unwrap();
    assert_eq!(
        plan.extractor_names(),
        ["AccountFeatures._lookup_owner", "Request._alias_owner"]
    );
    // A supplied feature is read from the inputs, not computed.
    let plan = features
        .plan(
            &names(&["AccountFeatures.id", "AccountFeatures.balance"]),
            &names(&["AccountFeatures.doubled"]),
        )
        .unwrap();
    assert_eq!(plan.extractor_names(), ["AccountFeatures._expr_doubled"]);
}

#[test]
fn queries_that_cannot_be_answered_say_why() {
    let (_, features) = committed();
    let kind = |inputs: &[&str], outputs: &[&str]| {
        let e = features.plan(&names(inputs), &names(outputs)).unwrap_err();
        (e.kind(), e.to_string())
    };
    let (k, m) = kind(&["Request.account"], &["Request.owner"]);
    assert_eq!(k, ErrorKind::UnboundInputs, "{m}");
    assert!(m.contains("AccountFeatures.id"), "{m}");
    let (k, m) = kind(&["AccountFeatures.id"], &["AccountFeatures.nope"]);
    assert_eq!(k, ErrorKind::UnknownFeature, "{m}");
    let (k, _) = kind(&["Nope.id"], &["AccountFeatures"]);
    assert_eq!(k, ErrorKind::UnknownFeature);
    let (k, _) = kind(
        &["AccountFeatures.id", "AccountFeatures.id"],
        &["AccountFeatures"],
    );
    assert_eq!(k, ErrorKind::UnboundInputs);
    let (k, _) = kind(&["AccountFeatures.id"], &[]);
    assert_eq!(k, ErrorKind::UnboundInputs);
}

/// One written version of an account: (id, time, write order, balance, owner).
type Version = (i64, i64, usize, f64, String);

#[test]
fn lookups_aliases_and_expressions_match_brute_force_at_random_times() {
    let seed: u64 = std::env::var("THYME_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("featureset evaluation: THYME_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let (registry, features) = committed();

    // Versions of 8 accounts in random batches; times out of order, some
    // equal (the later write wins).
    let mut versions: Vec<Version> = Vec::new();
    for _ in 0..12 {
        let n = rng.random_range(1..20);
        let mut cols: [Vec<Value>; 4] = Default::default();
        for _ in 0..n {
            let id = rng.random_range(0..8i64);
            let t = T0 + rng.random_range(0..30) * DAY / 2;
            let balance = rng.random_range(-1000..1000) as f64 / 4.0;
            let owner = format!("o{}", rng.random_range(0..100));
            cols[0].push(json!(id));
            cols[1].push(json!(balance));
            cols[2].push(json!(owner));
            cols[3].push(json!(rfc3339(t)));
            versions.push((id, t, versions.len(), balance, owner));
        }
        let mut data = Map::new();
        for (name, c) in ["id", "balance", "owner", "ts"].iter().zip(cols) {
            data.insert(name.to_string(), Value::Array(c));
        }
        thyme_table::webhook::ingest(&registry, "slt", "Account", &data).unwrap();
    }
    let truth = |id: i64, t: i64| -> Option<&Version> {
        versions
            .iter()
            .filter(|v| v.0 == id && v.1 <= t)
            .max_by_key(|v| (v.1, v.2))
    };

    // Rows: unknown ids, times before any write, on write times, between.
    let rows = 400;
    let ids: Vec<i64> = (0..rows).map(|_| rng.random_range(0..10)).collect();
    let ts: Vec<i64> = (0..rows)
        .map(|_| match rng.random_range(0..3) {
            0 => versions[rng.random_range(0..versions.len())].1,
            1 => T0 - DAY + rng.random_range(0..20 * DAY),
            _ => T0 + rng.random_range(0..16 * DAY),
        })
        .collect();
    let plan = features
        .plan(
            &names(&["AccountFeatures.id"]),
            &names(&["AccountFeatures", "Request.owner"]),
        )
        .unwrap();
    let input: ArrayRef = Arc::new(Int64Array::from(ids.clone()));
    let out = features.evaluate(&plan, vec![input], &ts).unwrap();
    assert_eq!(out.num_rows(), rows);
    let col = |name: &str| out.column(out.schema().index_of(name).unwrap()).clone();
    let balance = col("AccountFeatures.balance");
    let balance = balance.as_any().downcast_ref::<Float64Array>().unwrap();
    let doubled = col("AccountFeatures.doubled");
    let doubled = doubled.as_any().downcast_ref::<Float64Array>().unwrap();
    let owner = col("AccountFeatures.owner");
    let owner = owner.as_any().downcast_ref::<StringArray>().unwrap();
    let alias = col("Request.owner");
    let alias = alias.as_any().downcast_ref::<StringArray>().unwrap();
    let mut found = 0;
    for i in 0..rows {
        let want = truth(ids[i], ts[i]);
        found += want.is_some() as usize;
        let want_balance = want.map_or(0.0, |v| v.3); // the lookup's default
        let want_owner = want.map(|v| v.4.as_str());
        let ctx = format!("row {i}: id {} at {} (THYME_SEED={seed})", ids[i], ts[i]);
        assert_eq!(balance.value(i), want_balance, "{ctx}");
        assert_eq!(doubled.value(i), want_balance * 2.0, "{ctx}");
        assert_eq!(
            owner.is_valid(i).then(|| owner.value(i)),
            want_owner,
            "{ctx}"
        );
        assert_eq!(
            alias.is_valid(i).then(|| alias.value(i)),
            want_owner,
            "{ctx}"
        );
    }
    assert!(
        found > rows / 4 && found < rows,
        "{found} of {rows} rows found"
    );
}
