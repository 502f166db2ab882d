//! What a commit changes relative to the committed definitions, and the
//! version rule: a dataset whose shape (fields, types, keys, timestamp,
//! index, pipelines) changes must bump `version`; a bump recreates it.
//! Sources, expectations and descriptions change without a bump. A Python
//! extractor whose code changes must bump its own `version`.

use crate::payload::{Dataset, Featureset, Pipeline};

/// What happens to one definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Created,
    /// Same version, only non-shape parts (sources, docs) changed.
    Updated,
    /// Version bumped: the dataset is recreated (its data recomputed).
    Recreated {
        from: u32,
    },
    Unchanged,
}

/// Compare a committed dataset with its new definition.
pub fn dataset(old: &Dataset, new: &Dataset) -> Result<Change, String> {
    let name = &new.name;
    if new.version < old.version {
        return Err(format!(
            "dataset {name}: version {} is older than the committed version {}",
            new.version, old.version
        ));
    }
    if new == old {
        return Ok(Change::Unchanged);
    }
    if new.version > old.version {
        return Ok(Change::Recreated { from: old.version });
    }
    let changes = shape_changes(old, new);
    if changes.is_empty() {
        return Ok(Change::Updated);
    }
    Err(format!(
        "dataset {name} changed without a version bump: {}; bump version to {} (this recreates the dataset)",
        changes.join("; "),
        old.version + 1
    ))
}

fn shape_changes(old: &Dataset, new: &Dataset) -> Vec<String> {
    let mut out = Vec::new();
    for f in &old.fields {
        match new.fields.iter().find(|n| n.name == f.name) {
            None => out.push(format!("field {} was removed", f.name)),
            Some(n) => {
                if n.ty != f.ty {
                    out.push(format!(
                        "field {} changed type from {} to {}",
                        f.name, f.ty, n.ty
                    ));
                }
                if n.key != f.key {
                    out.push(format!(
                        "field {} {} a key",
                        f.name,
                        if n.key { "became" } else { "is no longer" }
                    ));
                }
                if n.timestamp != f.timestamp {
                    out.push(format!(
                        "field {} {} the timestamp",
                        f.name,
                        if n.timestamp {
                            "became"
                        } else {
                            "is no longer"
                        }
                    ));
                }
                if n.default != f.default {
                    out.push(format!("field {} changed its default", f.name));
                }
            }
        }
    }
    for n in &new.fields {
        if !old.fields.iter().any(|f| f.name == n.name) {
            out.push(format!("field {} was added", n.name));
        }
    }
    let order = |d: &Dataset| d.fields.iter().map(|f| f.name.clone()).collect::<Vec<_>>();
    if out.is_empty() && order(old) != order(new) {
        out.push("the fields were reordered".into());
    }
    if old.index != new.index {
        out.push(format!("index changed from {} to {}", old.index, new.index));
    }
    for p in &old.pipelines {
        match new.pipelines.iter().find(|n| n.name == p.name) {
            None => out.push(format!("pipeline {} was removed", p.name)),
            Some(n) if !same_pipeline(p, n) => out.push(format!("pipeline {} changed", p.name)),
            _ => {}
        }
    }
    for n in &new.pipelines {
        if !old.pipelines.iter().any(|p| p.name == n.name) {
            out.push(format!("pipeline {} was added", n.name));
        }
    }
    out
}

/// Pipelines are the same when their graphs are; the whole function's
/// source text (comments, formatting) does not matter.
fn same_pipeline(a: &Pipeline, b: &Pipeline) -> bool {
    a.version == b.version && a.inputs == b.inputs && a.nodes == b.nodes && a.output == b.output
}

/// Compare a committed featureset with its new definition. Featuresets hold
/// no data, so they change freely, except Python extractor code, which
/// needs the extractor's version bumped (so served values are traceable to
/// code).
pub fn featureset(old: &Featureset, new: &Featureset) -> Result<Change, String> {
    if old == new {
        return Ok(Change::Unchanged);
    }
    for e in &new.extractors {
        if let Some(o) = old.extractors.iter().find(|o| o.name == e.name) {
            if e.version < o.version {
                return Err(format!(
                    "featureset {}: extractor {} version {} is older than the committed version {}",
                    new.name, e.name, e.version, o.version
                ));
            }
            if e.version == o.version
                && (e.source != o.source || e.inputs != o.inputs || e.outputs != o.outputs)
            {
                return Err(format!(
                    "featureset {}: extractor {} changed without a version bump; bump it to @extractor(version={})",
                    new.name,
                    e.name,
                    o.version + 1
                ));
            }
        }
    }
    Ok(Change::Updated)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::Commit;

    fn ds(json: serde_json::Value) -> Dataset {
        let c: Commit =
            serde_json::from_value(serde_json::json!({"schema_version": 1, "datasets": [json]}))
                .unwrap();
        c.datasets.into_iter().next().unwrap()
    }

    #[test]
    fn version_rule() {
        let base = serde_json::json!({"name": "U", "fields": [
            {"name": "uid", "type": "int", "key": true},
            {"name": "n", "type": "int"},
            {"name": "ts", "type": "datetime", "timestamp": true}]});
        let old = ds(base.clone());
        assert_eq!(dataset(&old, &old.clone()), Ok(Change::Unchanged));
        let mut changed = base.clone();
        changed["fields"][1]["type"] = "float".into();
        let err = dataset(&old, &ds(changed.clone())).unwrap_err();
        assert!(
            err.contains(
                "dataset U changed without a version bump: field n changed type from int to float"
            ),
            "{err}"
        );
        changed["version"] = 2.into();
        assert_eq!(
            dataset(&old, &ds(changed)),
            Ok(Change::Recreated { from: 1 })
        );
        let mut doc = base.clone();
        doc["description"] = "users".into();
        assert_eq!(dataset(&old, &ds(doc)), Ok(Change::Updated));
        let mut older = base;
        older["version"] = 0.into();
        assert!(dataset(
            &ds(serde_json::json!({"name": "U", "version": 3, "fields": []})),
            &ds(older)
        )
        .is_err());
    }
}
