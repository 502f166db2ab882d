//! Committed definitions: applying a commit (validated by `thyme-model`)
//! to the catalog, and routing webhook data to the datasets it feeds.
//!
//! Catalog entries written here, all in the same atomic write as the
//! datasets a commit creates:
//! - `def/dataset/<Name>` and `def/featureset/<Name>`: the current
//!   definition ([`StoredDef`]);
//! - `defhist/<kind>/<Name>/<version>`: every dataset version ever
//!   committed (so a bump keeps what it replaced);
//! - `commit/<seq>`: one record per commit (message, time, what changed).
//!
//! A dataset's SQL table is the snake_case of its class name; a version
//! bump recreates it (its old data is dropped: a derived dataset is
//! recomputed from its inputs, a sourced one refilled by its source).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use thyme_model::diff::{self, Change};
use thyme_model::payload::{Commit, Connector, Dataset as DatasetSpec, Featureset};
use thyme_model::Type;

use crate::catalog::{Catalog, DatasetDef, FieldDef};
use crate::error::{Error, Result};
use crate::types::{DType, Elem};

const DEF_DATASET: &str = "def/dataset/";
const DEF_FEATURESET: &str = "def/featureset/";
const COMMIT_PREFIX: &str = "commit/";

/// A committed definition with its bookkeeping.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredDef<T> {
    pub definition: T,
    /// RFC 3339 time of the commit that last changed it.
    pub committed_at: String,
    /// Sequence number of that commit.
    pub commit: u64,
}

/// One line of a commit's outcome.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Changed {
    pub kind: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// For a version bump: the version it replaced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_version: Option<u32>,
    /// The SQL name (datasets and featuresets).
    pub sql_name: String,
}

/// What a commit did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CommitSummary {
    pub commit: u64,
    pub created: Vec<Changed>,
    pub updated: Vec<Changed>,
    pub unchanged: Vec<Changed>,
}

/// Where webhook data for one endpoint goes.
#[derive(Debug, Clone)]
pub struct Route {
    /// The dataset's class name.
    pub dataset: String,
    /// Index of the source in the dataset's definition.
    pub source: usize,
}

#[derive(Default)]
struct Defs {
    datasets: BTreeMap<String, StoredDef<DatasetSpec>>,
    featuresets: BTreeMap<String, StoredDef<Featureset>>,
    webhooks: HashMap<(String, String), Vec<Route>>,
    next_commit: u64,
}

/// The committed definitions, kept in memory and in the store's catalog.
pub struct Registry {
    catalog: Arc<Catalog>,
    defs: RwLock<Arc<Defs>>,
    change: Mutex<()>,
}

impl Registry {
    /// Load every committed definition.
    pub fn load(catalog: Arc<Catalog>) -> Result<Self> {
        let mut defs = Defs::default();
        for (key, bytes) in catalog.store().catalog_list()? {
            let bad = |e: serde_json::Error| {
                Error::Internal(format!("catalog entry {key} does not decode: {e}"))
            };
            if let Some(name) = key.strip_prefix(DEF_DATASET) {
                let d: StoredDef<DatasetSpec> = serde_json::from_slice(&bytes).map_err(bad)?;
                defs.datasets.insert(name.to_string(), d);
            } else if let Some(name) = key.strip_prefix(DEF_FEATURESET) {
                let f: StoredDef<Featureset> = serde_json::from_slice(&bytes).map_err(bad)?;
                defs.featuresets.insert(name.to_string(), f);
            } else if let Some(seq) = key.strip_prefix(COMMIT_PREFIX) {
                if let Ok(n) = seq.parse::<u64>() {
                    defs.next_commit = defs.next_commit.max(n + 1);
                }
            }
        }
        defs.webhooks = routes(&defs.datasets);
        Ok(Registry {
            catalog,
            defs: RwLock::new(Arc::new(defs)),
            change: Mutex::new(()),
        })
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    fn defs(&self) -> Arc<Defs> {
        self.defs.read().expect("registry lock").clone()
    }

    /// Validate and apply a commit atomically.
    pub fn commit(&self, commit: Commit) -> Result<CommitSummary> {
        let _guard = self.change.lock().expect("registry change lock");
        let defs = self.defs();
        let existing_ds: Vec<DatasetSpec> = defs
            .datasets
            .values()
            .filter(|d| !commit.datasets.iter().any(|c| c.name == d.definition.name))
            .map(|d| d.definition.clone())
            .collect();
        let existing_fs: Vec<Featureset> = defs
            .featuresets
            .values()
            .filter(|f| {
                !commit
                    .featuresets
                    .iter()
                    .any(|c| c.name == f.definition.name)
            })
            .map(|f| f.definition.clone())
            .collect();
        thyme_model::validate(&commit, &existing_ds, &existing_fs)
            .map_err(|p| Error::InvalidDefinition(p.to_string()))?;

        let seq = defs.next_commit;
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let mut summary = CommitSummary {
            commit: seq,
            ..Default::default()
        };
        let mut problems = Vec::new();
        let (mut create, mut replace) = (Vec::new(), Vec::new());
        let mut extra: Vec<(String, Vec<u8>)> = Vec::new();
        let mut new_defs_ds = defs.datasets.clone();
        let mut new_defs_fs = defs.featuresets.clone();
        for d in &commit.datasets {
            let sql = thyme_model::snake_case(&d.name);
            let line = |from: Option<u32>| Changed {
                kind: "dataset".into(),
                name: d.name.clone(),
                version: Some(d.version),
                from_version: from,
                sql_name: sql.clone(),
            };
            let change = match defs.datasets.get(&d.name) {
                None => Change::Created,
                Some(old) => match diff::dataset(&old.definition, d) {
                    Ok(c) => c,
                    Err(e) => {
                        problems.push(e);
                        continue;
                    }
                },
            };
            let table_exists = self.catalog.get(&sql).is_some();
            let store_def = match change {
                Change::Created => {
                    if table_exists {
                        problems.push(format!(
                            "dataset {}: a table named {sql} already exists (created with SQL); drop it first",
                            d.name
                        ));
                        continue;
                    }
                    create.push(table_def(d)?);
                    summary.created.push(line(None));
                    true
                }
                Change::Recreated { from } => {
                    let def = table_def(d)?;
                    if table_exists {
                        replace.push(def);
                    } else {
                        create.push(def);
                    }
                    summary.updated.push(line(Some(from)));
                    true
                }
                Change::Updated => {
                    summary.updated.push(line(None));
                    true
                }
                Change::Unchanged => {
                    if !table_exists {
                        // Dropped through SQL since: bring the table back.
                        create.push(table_def(d)?);
                        summary.created.push(line(None));
                    } else {
                        summary.unchanged.push(line(None));
                    }
                    false
                }
            };
            if store_def {
                let stored = StoredDef {
                    definition: d.clone(),
                    committed_at: now.clone(),
                    commit: seq,
                };
                extra.push((format!("{DEF_DATASET}{}", d.name), to_json(&stored)?));
                extra.push((
                    format!("defhist/dataset/{}/{:010}", d.name, d.version),
                    to_json(&stored)?,
                ));
                new_defs_ds.insert(d.name.clone(), stored);
            }
        }
        for f in &commit.featuresets {
            let line = Changed {
                kind: "featureset".into(),
                name: f.name.clone(),
                version: None,
                from_version: None,
                sql_name: thyme_model::snake_case(&f.name),
            };
            let change = match defs.featuresets.get(&f.name) {
                None => Change::Created,
                Some(old) => match diff::featureset(&old.definition, f) {
                    Ok(c) => c,
                    Err(e) => {
                        problems.push(e);
                        continue;
                    }
                },
            };
            match change {
                Change::Unchanged => summary.unchanged.push(line),
                c => {
                    if c == Change::Created {
                        summary.created.push(line);
                    } else {
                        summary.updated.push(line);
                    }
                    let stored = StoredDef {
                        definition: f.clone(),
                        committed_at: now.clone(),
                        commit: seq,
                    };
                    extra.push((format!("{DEF_FEATURESET}{}", f.name), to_json(&stored)?));
                    new_defs_fs.insert(f.name.clone(), stored);
                }
            }
        }
        if !problems.is_empty() {
            let msg = if problems.len() == 1 {
                problems.remove(0)
            } else {
                format!(
                    "{} problems:\n  - {}",
                    problems.len(),
                    problems.join("\n  - ")
                )
            };
            return Err(Error::InvalidDefinition(msg));
        }
        let record = json!({
            "commit": seq,
            "committed_at": now,
            "message": commit.message,
            "summary": summary,
        });
        extra.push((format!("{COMMIT_PREFIX}{seq:020}"), to_json(&record)?));
        self.catalog.apply(create, replace, extra)?;
        let webhooks = routes(&new_defs_ds);
        *self.defs.write().expect("registry lock") = Arc::new(Defs {
            datasets: new_defs_ds,
            featuresets: new_defs_fs,
            webhooks,
            next_commit: seq + 1,
        });
        Ok(summary)
    }

    /// Committed datasets, by class name.
    pub fn datasets(&self) -> Vec<StoredDef<DatasetSpec>> {
        self.defs().datasets.values().cloned().collect()
    }

    /// A number that changes with every commit (for caches of definitions).
    pub fn version(&self) -> u64 {
        self.defs().next_commit
    }

    /// Committed featuresets, by class name.
    pub fn featuresets(&self) -> Vec<StoredDef<Featureset>> {
        self.defs().featuresets.values().cloned().collect()
    }

    /// A committed dataset by class name or SQL name.
    pub fn dataset(&self, name: &str) -> Option<StoredDef<DatasetSpec>> {
        let defs = self.defs();
        defs.datasets.get(name).cloned().or_else(|| {
            defs.datasets
                .values()
                .find(|d| thyme_model::snake_case(&d.definition.name) == name)
                .cloned()
        })
    }

    /// A committed featureset by class name or SQL name.
    pub fn featureset(&self, name: &str) -> Option<StoredDef<Featureset>> {
        let defs = self.defs();
        defs.featuresets.get(name).cloned().or_else(|| {
            defs.featuresets
                .values()
                .find(|f| thyme_model::snake_case(&f.definition.name) == name)
                .cloned()
        })
    }

    /// The datasets fed by a webhook endpoint.
    pub fn routes(&self, webhook: &str, endpoint: &str) -> Option<Vec<(Route, DatasetSpec)>> {
        let defs = self.defs();
        let routes = defs
            .webhooks
            .get(&(webhook.to_string(), endpoint.to_string()))?;
        Some(
            routes
                .iter()
                .filter_map(|r| {
                    Some((r.clone(), defs.datasets.get(&r.dataset)?.definition.clone()))
                })
                .collect(),
        )
    }

    /// Whether any dataset is fed by this webhook (any endpoint).
    pub fn has_webhook(&self, webhook: &str) -> bool {
        self.defs().webhooks.keys().any(|(w, _)| w == webhook)
    }

    /// The commit records, oldest first.
    pub fn commits(&self) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        for (k, v) in self.catalog.store().catalog_list()? {
            if k.starts_with(COMMIT_PREFIX) {
                out.push(serde_json::from_slice(&v).map_err(|e| Error::Internal(e.to_string()))?);
            }
        }
        Ok(out)
    }

    /// The lineage graph: sources -> datasets -> pipelines -> datasets ->
    /// featuresets.
    pub fn lineage(&self) -> Value {
        let defs = self.defs();
        let mut nodes = Vec::new();
        let mut edges = Vec::new();
        for d in defs.datasets.values() {
            let d = &d.definition;
            nodes.push(json!({"kind": "dataset", "name": d.name, "version": d.version}));
            for s in &d.sources {
                let id = format!("{}:{}", s.connector.kind(), s.connector.name());
                let detail = match &s.connector {
                    Connector::Webhook { endpoint, .. } => json!({"endpoint": endpoint}),
                    Connector::Kafka { topic, .. } => json!({"topic": topic}),
                    Connector::Postgres { table, .. } | Connector::Iceberg { table, .. } => {
                        json!({"table": table})
                    }
                    Connector::Files { path, .. } => json!({"path": path}),
                };
                nodes.push(json!({"kind": "source", "name": id, "connector": s.connector.kind()}));
                edges.push(json!({"from": id, "to": d.name, "via": "source", "detail": detail, "cdc": s.cdc}));
            }
            for p in &d.pipelines {
                for i in &p.inputs {
                    edges.push(
                        json!({"from": i, "to": d.name, "via": "pipeline", "pipeline": p.name}),
                    );
                }
            }
        }
        for f in defs.featuresets.values() {
            let f = &f.definition;
            nodes.push(json!({"kind": "featureset", "name": f.name}));
            let mut from: Vec<String> = Vec::new();
            for e in &f.extractors {
                from.extend(e.deps.iter().cloned());
                from.extend(e.dataset.iter().cloned());
                from.extend(
                    e.inputs
                        .iter()
                        .filter_map(|i| i.split_once('.'))
                        .map(|(fs, _)| fs.to_string()),
                );
            }
            from.sort();
            from.dedup();
            for src in from.into_iter().filter(|s| s != &f.name) {
                edges.push(json!({"from": src, "to": f.name, "via": "extractor"}));
            }
        }
        nodes.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        nodes.dedup_by(|a, b| a["name"] == b["name"] && a["kind"] == b["kind"]);
        json!({"nodes": nodes, "edges": edges})
    }
}

fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::Internal(e.to_string()))
}

/// The webhook routing table.
fn routes(
    datasets: &BTreeMap<String, StoredDef<DatasetSpec>>,
) -> HashMap<(String, String), Vec<Route>> {
    let mut out: HashMap<(String, String), Vec<Route>> = HashMap::new();
    for d in datasets.values() {
        for (i, s) in d.definition.sources.iter().enumerate() {
            if let Connector::Webhook { name, endpoint, .. } = &s.connector {
                out.entry((name.clone(), endpoint.clone()))
                    .or_default()
                    .push(Route {
                        dataset: d.definition.name.clone(),
                        source: i,
                    });
            }
        }
    }
    out
}

/// The stored type of a committed type, and whether it is nullable.
pub fn stored_type(t: &Type) -> std::result::Result<(DType, bool), String> {
    use thyme_model::types::Scalar;
    fn scalar(t: &Type) -> Option<DType> {
        Some(match t.scalar()? {
            Scalar::Int => DType::Int,
            Scalar::Float => DType::Float,
            Scalar::Bool => DType::Bool,
            Scalar::Str => DType::Str,
            Scalar::Bytes => DType::Bytes,
            Scalar::Datetime => DType::Datetime,
            Scalar::Date => DType::Date,
        })
    }
    let nullable = t.is_optional();
    let d = match t.non_optional() {
        Type::Map(_) | Type::Struct(_) => DType::Str, // JSON text
        Type::Decimal(s) => DType::Decimal(*s),
        Type::Embedding(_) => DType::List(Elem::Float),
        Type::List(inner) => match scalar(inner.non_optional()).and_then(Elem::of) {
            Some(e) => DType::List(e),
            None => return Err(format!("type {}", t.non_optional())),
        },
        other => scalar(other).ok_or_else(|| format!("type {other}"))?,
    };
    Ok((d, nullable))
}

/// The SQL table of a committed dataset.
pub fn table_def(d: &DatasetSpec) -> Result<DatasetDef> {
    let mut fields = Vec::with_capacity(d.fields.len());
    for f in &d.fields {
        let (dtype, nullable) = stored_type(&f.ty).map_err(|t| {
            Error::InvalidDefinition(format!(
                "dataset {}: field {} has {t}, which the store cannot hold yet (supported: int, float, bool, str, bytes, datetime, date, Decimal, Embedding, List of those scalars but bytes, Optional, Dict, struct, between, oneof, regex)",
                d.name, f.name
            ))
        })?;
        fields.push(FieldDef {
            name: f.name.clone(),
            dtype,
            nullable,
        });
    }
    let ts = thyme_model::validate::timestamp_field(d).ok_or_else(|| {
        Error::InvalidDefinition(format!("dataset {} has no timestamp field", d.name))
    })?;
    Ok(DatasetDef {
        name: thyme_model::snake_case(&d.name),
        fields,
        keys: thyme_model::validate::key_names(d),
        timestamp: ts.name.clone(),
        version: d.version,
        index: d.index,
        decay: decay_fields(d)?,
    })
}

/// The `ExpDecaySum` outputs of a dataset's pipelines, with their
/// half-lives in microseconds.
fn decay_fields(d: &DatasetSpec) -> Result<Vec<(String, i64)>> {
    let mut out = Vec::new();
    for p in &d.pipelines {
        for n in &p.nodes {
            if let thyme_model::payload::Node::Aggregate { aggregates, .. } = n {
                for a in aggregates {
                    if a.kind != thyme_model::payload::AggKind::ExpDecaySum {
                        continue;
                    }
                    let h = a.half_life.as_deref().unwrap_or_default();
                    match thyme_model::duration::parse(h) {
                        Ok(thyme_model::duration::Duration::Micros(m)) if m > 0 => {
                            if !out.iter().any(|(f, _)| f == &a.into) {
                                out.push((a.into.clone(), m));
                            }
                        }
                        _ => {
                            return Err(Error::InvalidDefinition(format!(
                                "dataset {}: {}: half_life must be a positive duration",
                                d.name, a.into
                            )))
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

/// A dataset definition as the control plane shows it (secrets redacted).
pub fn describe_dataset(s: &StoredDef<DatasetSpec>) -> Value {
    let d = &s.definition;
    let ts = thyme_model::validate::timestamp_field(d).map(|f| f.name.clone());
    let sources: Vec<Value> = d
        .sources
        .iter()
        .map(|src| {
            let mut m = Map::new();
            m.insert("connector".into(), src.connector.redacted());
            m.insert("cdc".into(), json!(src.cdc));
            for (k, v) in [
                ("disorder", &src.disorder),
                ("every", &src.every),
                ("since", &src.since),
                ("until", &src.until),
                ("cursor", &src.cursor),
            ] {
                if let Some(v) = v {
                    m.insert(k.into(), json!(v));
                }
            }
            if !src.preproc.is_empty() {
                m.insert("preproc".into(), json!(src.preproc));
            }
            Value::Object(m)
        })
        .collect();
    json!({
        "name": d.name,
        "sql_name": thyme_model::snake_case(&d.name),
        "version": d.version,
        "index": d.index,
        "keys": d.fields.iter().filter(|f| f.key).map(|f| f.name.clone()).collect::<Vec<_>>(),
        "timestamp": ts,
        "fields": d.fields.iter().map(|f| json!({"name": f.name, "type": f.ty, "type_name": f.ty.to_string(), "key": f.key, "timestamp": Some(&f.name) == ts.as_ref()})).collect::<Vec<_>>(),
        "sources": sources,
        "pipelines": d.pipelines.iter().map(|p| json!({"name": p.name, "version": p.version, "inputs": p.inputs, "operators": p.nodes.iter().map(|n| n.op()).collect::<Vec<_>>()})).collect::<Vec<_>>(),
        "owner": d.owner,
        "description": d.description,
        "committed_at": s.committed_at,
        "commit": s.commit,
    })
}

/// A featureset as the control plane shows it.
pub fn describe_featureset(s: &StoredDef<Featureset>) -> Value {
    let f = &s.definition;
    json!({
        "name": f.name,
        "sql_name": thyme_model::snake_case(&f.name),
        "features": f.features.iter().map(|x| json!({"name": x.name, "type": x.ty, "type_name": x.ty.to_string()})).collect::<Vec<_>>(),
        "extractors": f.extractors.iter().map(|e| json!({"name": e.name, "kind": e.kind, "inputs": e.inputs, "outputs": e.outputs, "deps": e.deps, "version": e.version, "dataset": e.dataset, "field": e.field})).collect::<Vec<_>>(),
        "owner": f.owner,
        "description": f.description,
        "committed_at": s.committed_at,
        "commit": s.commit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_types() {
        let t = |j: Value| Type::from_json(&j).unwrap();
        assert_eq!(stored_type(&t(json!("int"))), Ok((DType::Int, false)));
        assert_eq!(
            stored_type(&t(json!({"optional": "float"}))),
            Ok((DType::Float, true))
        );
        assert_eq!(
            stored_type(&t(json!({"regex": "a+"}))),
            Ok((DType::Str, false))
        );
        assert_eq!(
            stored_type(&t(json!({"map": "int"}))),
            Ok((DType::Str, false))
        );
        assert_eq!(
            stored_type(&t(json!({"list": "int"}))),
            Ok((DType::List(Elem::Int), false))
        );
        assert_eq!(
            stored_type(&t(json!({"embedding": 4}))),
            Ok((DType::List(Elem::Float), false))
        );
        assert_eq!(
            stored_type(&t(json!({"decimal": 2}))),
            Ok((DType::Decimal(2), false))
        );
        assert!(stored_type(&t(json!({"list": {"list": "int"}}))).is_err());
        assert!(stored_type(&t(json!({"list": "bytes"}))).is_err());
    }
}
