//! Commit validation on a seed-shaped example (events, an aggregated keyed
//! dataset with a join, a featureset with lookup, expression and Python
//! extractors) and on targeted breakages of it.

use serde_json::{json, Value};
use thyme_model::Commit;

fn seed() -> Value {
    json!({
        "schema_version": 1,
        "datasets": [
            {"name": "Transaction", "fields": [
                {"name": "uid", "type": "int"},
                {"name": "amount", "type": "float"},
                {"name": "ts", "type": "datetime", "timestamp": true}],
             "sources": [{"connector": {"kind": "webhook", "name": "main", "endpoint": "Transaction"}, "disorder": "14d"}]},
            {"name": "UserInfo", "index": true, "fields": [
                {"name": "uid", "type": "int", "key": true},
                {"name": "country", "type": {"optional": "str"}},
                {"name": "ts", "type": "datetime"}],
             "sources": [{"connector": {"kind": "webhook", "name": "main", "endpoint": "UserInfo"}, "cdc": "upsert"}]},
            {"name": "UserStats", "index": true, "fields": [
                {"name": "uid", "type": "int", "key": true},
                {"name": "txn_count_7d", "type": "int"},
                {"name": "total_7d", "type": "float"},
                {"name": "avg_7d", "type": "float"},
                {"name": "recent", "type": {"list": "float"}},
                {"name": "ts", "type": "datetime", "timestamp": true}],
             "pipelines": [{"name": "compute", "inputs": ["Transaction", "UserInfo"], "output": 4, "nodes": [
                {"id": 0, "op": "input", "dataset": "Transaction"},
                {"id": 1, "op": "filter", "input": 0, "predicate": {"expr": {"binary": ">", "left": {"col": "amount"}, "right": {"lit": 0}}}},
                {"id": 2, "op": "join", "input": 1, "dataset": "UserInfo", "how": "left", "on": ["uid"]},
                {"id": 3, "op": "assign", "input": 2, "columns": {"double": {"type": "float", "func": {"name": "f", "source": "lambda df: df.amount * 2"}}}},
                {"id": 4, "op": "aggregate", "input": 3, "keys": ["uid"], "aggregates": [
                    {"kind": "count", "into": "txn_count_7d", "window": {"kind": "continuous", "duration": "7d"}},
                    {"kind": "sum", "into": "total_7d", "of": "amount", "window": {"kind": "continuous", "duration": "7d"}},
                    {"kind": "average", "into": "avg_7d", "of": "amount", "default": 0.0, "window": {"kind": "continuous", "duration": "7d"}},
                    {"kind": "lastk", "into": "recent", "of": "double", "limit": 3, "window": {"kind": "continuous", "duration": "forever"}}]}]}]}
        ],
        "featuresets": [
            {"name": "UserFeatures", "features": [
                {"name": "uid", "type": "int"},
                {"name": "txn_count_7d", "type": "int"},
                {"name": "total_7d", "type": "float"},
                {"name": "avg", "type": "float"},
                {"name": "is_big", "type": "bool"}],
             "extractors": [
                {"name": "l1", "kind": "lookup", "inputs": ["UserFeatures.uid"], "outputs": ["txn_count_7d"], "dataset": "UserStats", "field": "txn_count_7d", "default": 0},
                {"name": "l2", "kind": "lookup", "inputs": ["UserFeatures.uid"], "outputs": ["total_7d"], "dataset": "UserStats", "field": "total_7d", "default": 0.0},
                {"name": "e1", "kind": "expr", "outputs": ["avg"], "expr": {"binary": "/", "left": {"col": "total_7d"}, "right": {"col": "txn_count_7d"}}},
                {"name": "big", "kind": "python", "inputs": ["UserFeatures.total_7d"], "outputs": ["is_big"], "deps": ["UserStats"], "source": "def big(cls, ts, total):\n    return total > 100\n"}]}
        ]
    })
}

fn check(v: &Value) -> Result<(), String> {
    let c: Commit = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    thyme_model::validate(&c, &[], &[]).map_err(|p| p.to_string())
}

#[test]
fn the_seed_example_is_valid() {
    check(&seed()).unwrap();
}

#[test]
fn breakages_are_named() {
    type Edit = fn(&mut Value);
    let cases: Vec<(Edit, &str)> = vec![
        (|v| v["datasets"][0]["fields"][2] = json!({"name": "ts", "type": "int"}), "dataset Transaction has no timestamp field"),
        (|v| v["datasets"][0]["fields"][2]["type"] = json!("int"), "dataset Transaction: timestamp field ts must be datetime, not int"),
        (|v| v["datasets"][1]["fields"][0]["type"] = json!({"optional": "int"}), "dataset UserInfo: key field uid cannot be optional"),
        (|v| v["datasets"][2]["fields"][2]["type"] = json!("int"), "pipeline UserStats.compute: output field total_7d has type float but dataset UserStats declares int"),
        (|v| { v["datasets"][2]["fields"].as_array_mut().unwrap().remove(3); }, "the output has field avg_7d (float), which is not a field of dataset UserStats"),
        (|v| v["datasets"][2]["pipelines"][0]["nodes"][4]["aggregates"][1]["of"] = json!("amt"), "of names unknown field amt"),
        (|v| v["datasets"][2]["pipelines"][0]["nodes"][4]["aggregates"][0]["window"] = Value::Null, "Count() into txn_count_7d: needs a window"),
        (|v| v["datasets"][2]["pipelines"][0]["nodes"][2]["dataset"] = json!("Transaction"), "must be a keyed dataset; Transaction is keyless"),
        (|v| v["featuresets"][0]["extractors"][2]["outputs"] = json!(["txn_count_7d"]), "feature txn_count_7d is computed by two extractors"),
        (|v| v["datasets"][2]["index"] = json!(false), "dataset UserStats is not indexed"),
        (|v| v["datasets"][0]["sources"][0]["cdc"] = json!("upsert"), "cdc=\"upsert\" needs key fields; dataset Transaction is keyless"),
        (|v| v["datasets"][0]["sources"][0]["disorder"] = json!("2 weeks"), "\"2 weeks\" is not a duration"),
        (|v| {
            v["featuresets"][0]["extractors"][3]["inputs"] = json!(["UserFeatures.is_big"]);
        }, "features form a cycle: UserFeatures.is_big <- UserFeatures.is_big"),
    ];
    for (edit, want) in cases {
        let mut v = seed();
        edit(&mut v);
        let err = check(&v).expect_err(want);
        assert!(err.contains(want), "expected {want:?} in {err:?}");
    }
}

#[test]
fn cycles_across_extractors_are_found() {
    let mut v = seed();
    v["featuresets"][0]["extractors"][3]["inputs"] = json!(["UserFeatures.avg"]);
    v["featuresets"][0]["extractors"][3]["outputs"] = json!(["total_7d"]);
    v["featuresets"][0]["extractors"]
        .as_array_mut()
        .unwrap()
        .remove(1);
    let err = check(&v).unwrap_err();
    assert!(err.contains("features form a cycle"), "{err}");
    assert!(
        err.contains("UserFeatures.avg") && err.contains("UserFeatures.total_7d"),
        "{err}"
    );
}
