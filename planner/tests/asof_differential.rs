//! `AsOfJoinExec` (merge) and `AsOfHashJoinExec` (hash) against a
//! nested-loop reference: random inputs with duplicate times, NULL keys and
//! times, empty sides, an integer key, a string key and both, every
//! comparison, inner and left, at batch sizes 1, 2, 7 and 8192 and with 1
//! and 3 partitions. Ties (right rows with the same key and time)
//! may be matched to any of them, so the reference gives the set of
//! acceptable right rows.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use datafusion::datasource::MemTable;
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use thyme_planner::asof::{AsOfRule, AsOfStrategy, ThymeQueryPlanner};
use thyme_planner::schema::AsOfRelationPlanner;
use thyme_planner::sql::asof::marker_udfs;
use thyme_planner::sql::SqlParser;

#[derive(Clone, Debug)]
struct Row {
    id: i64,
    k1: Option<i64>,
    k2: Option<String>,
    ts: Option<i64>,
}

fn gen(rng: &mut StdRng, n: usize, keys: i64) -> Vec<Row> {
    (0..n)
        .map(|i| Row {
            id: i as i64,
            k1: (rng.random_range(0..10) > 0).then(|| rng.random_range(0..keys)),
            k2: (rng.random_range(0..10) > 0)
                .then(|| ["a", "b"][rng.random_range(0..2)].to_string()),
            ts: (rng.random_range(0..10) > 0).then(|| rng.random_range(0..30)),
        })
        .collect()
}

fn table(rows: &[Row], id: &str, batch: usize) -> MemTable {
    let schema = Arc::new(Schema::new(vec![
        Field::new(id, DataType::Int64, false),
        Field::new("k1", DataType::Int64, true),
        Field::new("k2", DataType::Utf8, true),
        Field::new("ts", DataType::Int64, true),
    ]));
    let mut batches = Vec::new();
    for chunk in rows.chunks(batch.max(1)) {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(
                chunk.iter().map(|r| r.id).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(
                chunk.iter().map(|r| r.k1).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                chunk.iter().map(|r| r.k2.clone()).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(
                chunk.iter().map(|r| r.ts).collect::<Vec<_>>(),
            )),
        ];
        batches.push(RecordBatch::try_new(schema.clone(), cols).unwrap());
    }
    // Spread the batches over two input partitions.
    let mut parts = vec![Vec::new(), Vec::new()];
    for (i, b) in batches.into_iter().enumerate() {
        parts[i % 2].push(b);
    }
    MemTable::try_new(schema, parts).unwrap()
}

/// Which columns the join's `ON` compares.
#[derive(Clone, Copy, Debug)]
enum Keys {
    Int,
    Text,
    Both,
}

/// Acceptable right ids per left id (`None`: no match).
fn reference(
    left: &[Row],
    right: &[Row],
    op: &str,
    keys: Keys,
) -> BTreeMap<i64, Option<HashSet<i64>>> {
    let (use_k1, use_k2) = match keys {
        Keys::Int => (true, false),
        Keys::Text => (false, true),
        Keys::Both => (true, true),
    };
    let mut out = BTreeMap::new();
    for l in left {
        let Some(t) = l.ts else {
            out.insert(l.id, None);
            continue;
        };
        if (use_k1 && l.k1.is_none()) || (use_k2 && l.k2.is_none()) {
            out.insert(l.id, None);
            continue;
        }
        let ok: Vec<&Row> = right
            .iter()
            .filter(|r| !use_k1 || r.k1 == l.k1)
            .filter(|r| !use_k2 || r.k2 == l.k2)
            .filter(|r| match (r.ts, op) {
                (None, _) => false,
                (Some(rt), ">=") => t >= rt,
                (Some(rt), ">") => t > rt,
                (Some(rt), "<=") => t <= rt,
                (Some(rt), "<") => t < rt,
                _ => unreachable!(),
            })
            .collect();
        let best = if op.starts_with('>') {
            ok.iter().filter_map(|r| r.ts).max()
        } else {
            ok.iter().filter_map(|r| r.ts).min()
        };
        out.insert(
            l.id,
            best.map(|b| {
                ok.iter()
                    .filter(|r| r.ts == Some(b))
                    .map(|r| r.id)
                    .collect()
            }),
        );
    }
    out
}

async fn run(ctx: &SessionContext, sql: &str) -> Vec<RecordBatch> {
    let parsed = SqlParser::new().parse(sql).unwrap().remove(0);
    let plan = ctx
        .state()
        .statement_to_plan(DfStatement::Statement(Box::new(parsed.statement)))
        .await
        .unwrap();
    ctx.execute_logical_plan(plan)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap()
}

async fn explain(ctx: &SessionContext, sql: &str) -> String {
    let e = run(ctx, &format!("EXPLAIN {sql}")).await;
    arrow::util::pretty::pretty_format_batches(&e)
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asof_join_matches_nested_loop_reference() {
    let seed: u64 = std::env::var("THYME_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    println!("asof_join_matches_nested_loop_reference: THYME_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut cases = 0;
    for &(nl, nr) in &[(0usize, 20usize), (20, 0), (1, 1), (60, 80), (300, 200)] {
        for &batch in &[1usize, 2, 7, 8192] {
            for (partitions, strategy) in [1usize, 3]
                .into_iter()
                .flat_map(|p| [(p, AsOfStrategy::Hash), (p, AsOfStrategy::Merge)])
            {
                let keys = rng.random_range(1..6);
                let left = gen(&mut rng, nl, keys);
                let right = gen(&mut rng, nr, keys);
                let config = SessionConfig::new()
                    .with_target_partitions(partitions)
                    .with_batch_size(batch.max(2))
                    .with_extension(Arc::new(strategy));
                let state = SessionStateBuilder::new()
                    .with_config(config)
                    .with_default_features()
                    .with_relation_planners(vec![Arc::new(AsOfRelationPlanner)])
                    .with_analyzer_rule(Arc::new(AsOfRule))
                    .with_query_planner(Arc::new(ThymeQueryPlanner))
                    .build();
                let ctx = SessionContext::new_with_state(state);
                for udf in marker_udfs() {
                    ctx.register_udf(udf);
                }
                ctx.register_table("l", Arc::new(table(&left, "id", batch)))
                    .unwrap();
                ctx.register_table("r", Arc::new(table(&right, "rid", batch)))
                    .unwrap();
                // The session's strategy is the operator that runs.
                let plan = explain(
                    &ctx,
                    "SELECT l.id FROM l ASOF JOIN r ON l.k1 = r.k1 AND l.ts >= r.ts",
                )
                .await;
                let operator = match strategy {
                    AsOfStrategy::Hash => "AsOfHashJoinExec",
                    _ => "AsOfJoinExec",
                };
                assert!(
                    plan.contains(&format!("{operator}: ")),
                    "{strategy:?}: {plan}"
                );
                for op in [">=", ">", "<=", "<"] {
                    for keys in [Keys::Int, Keys::Text, Keys::Both] {
                        for left_join in [false, true] {
                            let on = match keys {
                                Keys::Int => "l.k1 = r.k1",
                                Keys::Text => "r.k2 = l.k2",
                                Keys::Both => "l.k1 = r.k1 AND r.k2 = l.k2",
                            };
                            let join = if left_join {
                                "ASOF LEFT JOIN"
                            } else {
                                "ASOF JOIN"
                            };
                            // Alternate the two spellings.
                            let sql = if cases % 2 == 0 {
                                format!("SELECT l.id, r.rid FROM l {join} r MATCH_CONDITION (l.ts {op} r.ts) ON {on}")
                            } else {
                                format!(
                                    "SELECT l.id, r.rid FROM l {join} r ON {on} AND l.ts {op} r.ts"
                                )
                            };
                            cases += 1;
                            let want = reference(&left, &right, op, keys);
                            let mut got: BTreeMap<i64, Option<i64>> = BTreeMap::new();
                            for b in run(&ctx, &sql).await {
                                let ids = b.column(0).as_primitive::<Int64Type>();
                                let rids = b.column(1).as_primitive::<Int64Type>();
                                for i in 0..b.num_rows() {
                                    let prev = got.insert(
                                        ids.value(i),
                                        (!rids.is_null(i)).then(|| rids.value(i)),
                                    );
                                    assert!(
                                        prev.is_none(),
                                        "left row {} twice: {sql}",
                                        ids.value(i)
                                    );
                                }
                            }
                            for (id, acceptable) in &want {
                                let g = got.get(id);
                                match (acceptable, g) {
                                    (None, None) => assert!(!left_join, "{sql}: left {id} missing (seed {seed}, {strategy:?})"),
                                    (None, Some(None)) => assert!(left_join),
                                    (None, Some(Some(r))) => panic!("{sql}: left {id} matched {r}, expected none (seed {seed}, {strategy:?})"),
                                    (Some(_), None) => {
                                        panic!("{sql}: left {id} missing (seed {seed}, nl {nl} nr {nr} batch {batch} partitions {partitions} {strategy:?})\n{}", explain(&ctx, &sql).await)
                                    }
                                    (Some(_), Some(None)) => panic!("{sql}: left {id} unmatched (seed {seed}, {strategy:?})"),
                                    (Some(set), Some(Some(r))) => assert!(set.contains(r), "{sql}: left {id} matched {r}, expected one of {set:?} (seed {seed}, {strategy:?})"),
                                }
                            }
                            assert!(got.keys().all(|k| want.contains_key(k)));
                        }
                    }
                }
            }
        }
    }
    assert!(cases > 500);
}
