//! Validation of a commit: every rule of `docs/commit-payload.md`, checked
//! against the payload plus what was committed before (an incremental
//! commit may read datasets committed earlier).
//!
//! Checks run in one pass and every problem is reported, each message
//! naming the definition and the field at fault:
//! - datasets: names, fields, exactly one non-optional datetime timestamp,
//!   keys present, not optional, hashable; `index` needs keys; sources
//!   (durations, `cdc` against keyed/keyless, `preproc`, connector options)
//!   or pipelines, not both;
//! - pipelines: the operator graph is well formed, each operator's input
//!   columns exist with fitting types, and the output schema (fields,
//!   types, keys, timestamp) equals the dataset's;
//! - featuresets: features typed and unique; every feature has at most one
//!   extractor; lookups read an indexed keyed dataset's non-key field with
//!   a fitting default; inputs name existing features; the feature graph
//!   is acyclic.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

use crate::duration::{self, Duration};
use crate::payload::*;
use crate::types::Type;
use crate::values;

/// Everything wrong with a commit.
#[derive(Debug, Clone, PartialEq)]
pub struct Problems(pub Vec<String>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [one] => f.write_str(one),
            many => {
                write!(f, "{} problems:", many.len())?;
                for p in many {
                    write!(f, "\n  - {p}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for Problems {}

/// A dataset's shape as pipelines see it: what flows out of each pipeline
/// node. In JSON (the native module's form) `{"fields": [[name, type],
/// ...], "keys": [...], "timestamp": name}`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Schema {
    pub fields: Vec<(String, Type)>,
    pub keys: Vec<String>,
    pub timestamp: String,
}

impl Schema {
    pub fn get(&self, name: &str) -> Option<&Type> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    fn is_special(&self, name: &str) -> bool {
        name == self.timestamp || self.keys.iter().any(|k| k == name)
    }
}

/// The names of a dataset's key fields, in declaration order.
pub fn key_names(ds: &Dataset) -> Vec<String> {
    ds.fields
        .iter()
        .filter(|f| f.key)
        .map(|f| f.name.clone())
        .collect()
}

/// The timestamp field of a dataset: the one flagged, else the only
/// datetime field.
pub fn timestamp_field(ds: &Dataset) -> Option<&Field> {
    let flagged: Vec<&Field> = ds.fields.iter().filter(|f| f.timestamp).collect();
    match flagged.as_slice() {
        [one] => Some(one),
        [] => {
            let dts: Vec<&Field> = ds
                .fields
                .iter()
                .filter(|f| *f.ty.non_optional() == Type::Datetime)
                .collect();
            match dts.as_slice() {
                [one] => Some(one),
                _ => None,
            }
        }
        _ => None,
    }
}

/// The schema of a dataset definition (assumes it validated).
pub fn schema_of(ds: &Dataset) -> Schema {
    Schema {
        fields: ds
            .fields
            .iter()
            .map(|f| (f.name.clone(), f.ty.clone()))
            .collect(),
        keys: key_names(ds),
        timestamp: timestamp_field(ds)
            .map(|f| f.name.clone())
            .unwrap_or_default(),
    }
}

/// Validate `commit`; `existing_*` are the definitions committed before
/// (those the commit redefines are replaced by the commit's).
pub fn validate(
    commit: &Commit,
    existing_datasets: &[Dataset],
    existing_featuresets: &[Featureset],
) -> Result<(), Problems> {
    let mut v = Validator::default();
    if commit.schema_version != SCHEMA_VERSION {
        v.problem(format!(
            "schema_version {} is not supported (this server reads version {SCHEMA_VERSION})",
            commit.schema_version
        ));
        return Err(Problems(v.problems));
    }
    let mut names = HashSet::new();
    for ds in &commit.datasets {
        if !names.insert(ds.name.as_str()) {
            v.problem(format!(
                "dataset {} is defined twice in this commit",
                ds.name
            ));
        }
    }
    let mut fs_names = HashSet::new();
    for fs in &commit.featuresets {
        if !fs_names.insert(fs.name.as_str()) {
            v.problem(format!(
                "featureset {} is defined twice in this commit",
                fs.name
            ));
        }
        if names.contains(fs.name.as_str()) {
            v.problem(format!("featureset {} has the name of a dataset", fs.name));
        }
    }
    // The world the commit is checked against.
    let mut datasets: BTreeMap<&str, &Dataset> = existing_datasets
        .iter()
        .map(|d| (d.name.as_str(), d))
        .collect();
    for d in &commit.datasets {
        datasets.insert(&d.name, d);
    }
    let mut featuresets: BTreeMap<&str, &Featureset> = existing_featuresets
        .iter()
        .map(|f| (f.name.as_str(), f))
        .collect();
    for f in &commit.featuresets {
        featuresets.insert(&f.name, f);
    }
    let mut sql_names: HashMap<String, &str> = HashMap::new();
    for d in datasets.values() {
        if let Some(other) = sql_names.insert(crate::snake_case(&d.name), &d.name) {
            if other != d.name {
                v.problem(format!(
                    "datasets {other} and {} have the same SQL name {}",
                    d.name,
                    crate::snake_case(&d.name)
                ));
            }
        }
    }

    let mut schemas: BTreeMap<&str, Option<Schema>> = BTreeMap::new();
    for d in datasets.values() {
        let ok = v.dataset_shape(d, commit.datasets.iter().any(|c| std::ptr::eq(c, *d)));
        schemas.insert(&d.name, ok.then(|| schema_of(d)));
    }
    for d in &commit.datasets {
        for p in &d.pipelines {
            v.pipeline(d, p, &datasets, &schemas);
        }
    }
    for fs in &commit.featuresets {
        v.featureset(fs, &datasets, &featuresets);
    }
    v.feature_cycles(&featuresets);
    if v.problems.is_empty() {
        Ok(())
    } else {
        Err(Problems(v.problems))
    }
}

/// A join's column pairs: the left columns and, in the same order, the
/// right columns they meet (`on` names both; else `left_on` with
/// `right_on`).
pub fn join_columns(
    on: &Option<Vec<String>>,
    left_on: &Option<Vec<String>>,
    right_on: &Option<Vec<String>>,
) -> Result<(Vec<String>, Vec<String>), &'static str> {
    match (on, left_on, right_on) {
        (Some(on), None, None) => Ok((on.clone(), on.clone())),
        (None, Some(l), Some(r)) if l.len() == r.len() => Ok((l.clone(), r.clone())),
        (None, Some(_), Some(_)) => Err("left_on and right_on have different lengths"),
        _ => Err("give either on=[...] or both left_on and right_on"),
    }
}

/// The output schema of every node of pipeline `p`, by node id: the one
/// implementation of the schema rules, which the validator applies, the
/// stream engine builds its operators from and the SDK's native module
/// exposes. `datasets` are those the pipeline may read (its inputs and
/// joined datasets; others are ignored). Fails with every problem found,
/// as [`validate`] would report them.
pub fn pipeline_schemas(p: &Pipeline, datasets: &[&Dataset]) -> Result<Vec<Schema>, Problems> {
    let mut v = Validator::default();
    let schemas: BTreeMap<&str, Option<Schema>> = datasets
        .iter()
        .map(|d| (d.name.as_str(), Some(schema_of(d))))
        .collect();
    let what = format!("pipeline {}", p.name);
    let out = v.node_schemas(&what, p, &schemas);
    match out {
        Some(out) if v.problems.is_empty() => Ok(out.into_iter().flatten().collect()),
        _ => Err(Problems(v.problems)),
    }
}

/// The output schema of one operator reading `inputs` (the node's own
/// input ids are ignored: `inputs` are its inputs in order); `joined` is the
/// dataset a `join` reads, by name. This is how the SDK types a pipeline
/// while the user writes it, node by node, with the same rules. Returns the
/// schema when one follows from the node (`None` when a rule leaves it
/// undefined, e.g. an unknown column) and the problems found.
pub fn node_schema(
    node: &Node,
    inputs: &[Schema],
    joined: Option<(&str, &Schema)>,
) -> (Option<Schema>, Vec<String>) {
    let mut v = Validator::default();
    if let Node::Input { .. } = node {
        v.problem("an input node's schema is its dataset's".into());
        return (None, v.problems);
    }
    let mut schemas: BTreeMap<&str, Option<Schema>> = BTreeMap::new();
    let mut names = Vec::new();
    if let Some((name, s)) = joined {
        schemas.insert(name, Some(s.clone()));
        names.push(name.to_string());
    }
    let out = v.node(node.op(), node, inputs, &names, &schemas);
    (out, v.problems)
}

#[derive(Default)]
struct Validator {
    problems: Vec<String>,
}

fn is_identifier(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(x) if x.is_ascii_alphabetic() || x == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

fn list(names: &[String]) -> String {
    format!("[{}]", names.join(", "))
}

impl Validator {
    fn problem(&mut self, p: String) {
        self.problems.push(p);
    }

    /// Names are identifiers and none is declared twice.
    fn unique_identifiers<'a>(
        &mut self,
        what: &str,
        kind: &str,
        names: impl Iterator<Item = &'a str>,
    ) {
        let mut seen = HashSet::new();
        for n in names {
            if !is_identifier(n) {
                self.problem(format!("{what}: {kind} name {n:?} is not an identifier"));
            }
            if !seen.insert(n) {
                self.problem(format!("{what}: {kind} {n} is declared twice"));
            }
        }
    }

    fn duration(&mut self, what: &str, s: &str) -> Option<Duration> {
        match duration::parse(s) {
            Ok(d) => Some(d),
            Err(e) => {
                self.problem(format!("{what}: {e}"));
                None
            }
        }
    }

    /// Fields, timestamp, keys, sources. Returns whether the schema is
    /// usable by pipelines and featuresets. `new` limits source checks to
    /// the commit's own definitions.
    fn dataset_shape(&mut self, ds: &Dataset, new: bool) -> bool {
        let before = self.problems.len();
        let name = &ds.name;
        if !is_identifier(name) {
            self.problem(format!(
                "dataset {name:?}: a name must be a Python identifier"
            ));
        }
        if ds.version == 0 {
            self.problem(format!("dataset {name}: version must be at least 1"));
        }
        if ds.fields.is_empty() {
            self.problem(format!("dataset {name} has no fields"));
        }
        self.unique_identifiers(
            &format!("dataset {name}"),
            "field",
            ds.fields.iter().map(|f| f.name.as_str()),
        );
        for f in &ds.fields {
            if let Some(d) = &f.default {
                if let Err(e) = values::check(&f.ty, d) {
                    self.problem(format!("dataset {name}: default of field {}: {e}", f.name));
                }
            }
        }
        let flagged: Vec<&Field> = ds.fields.iter().filter(|f| f.timestamp).collect();
        match flagged.as_slice() {
            [] => {
                let dts: Vec<&str> = ds
                    .fields
                    .iter()
                    .filter(|f| *f.ty.non_optional() == Type::Datetime)
                    .map(|f| f.name.as_str())
                    .collect();
                match dts.as_slice() {
                    [] => self.problem(format!(
                        "dataset {name} has no timestamp field (add a datetime field, or mark one with field(timestamp=True))"
                    )),
                    [_] => {}
                    many => self.problem(format!(
                        "dataset {name} has several datetime fields ({}) and none is marked field(timestamp=True)",
                        many.join(", ")
                    )),
                }
            }
            [_] => {}
            many => self.problem(format!(
                "dataset {name} has {} timestamp fields ({}); exactly one is allowed",
                many.len(),
                many.iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
        if let Some(ts) = timestamp_field(ds) {
            if ts.ty != Type::Datetime {
                self.problem(format!(
                    "dataset {name}: timestamp field {} must be datetime, not {}",
                    ts.name, ts.ty
                ));
            }
            if ts.key {
                self.problem(format!(
                    "dataset {name}: field {} cannot be both a key and the timestamp",
                    ts.name
                ));
            }
        }
        let keys: Vec<&Field> = ds.fields.iter().filter(|f| f.key).collect();
        for k in &keys {
            if k.ty.is_optional() {
                self.problem(format!(
                    "dataset {name}: key field {} cannot be optional ({})",
                    k.name, k.ty
                ));
            } else if !matches!(
                k.ty.scalar(),
                Some(
                    crate::types::Scalar::Int
                        | crate::types::Scalar::Str
                        | crate::types::Scalar::Bool
                        | crate::types::Scalar::Date
                        | crate::types::Scalar::Datetime
                        | crate::types::Scalar::Bytes
                )
            ) {
                self.problem(format!(
                    "dataset {name}: key field {} has type {}; keys must be int, str, bool, bytes, date or datetime",
                    k.name, k.ty
                ));
            }
        }
        if ds.index && keys.is_empty() {
            self.problem(format!(
                "dataset {name}: index=True needs key fields (a keyless dataset is an event stream and cannot be looked up)"
            ));
        }
        if !ds.sources.is_empty() && !ds.pipelines.is_empty() {
            self.problem(format!("dataset {name} has both a source and a pipeline; a dataset is fed by one or the other"));
        }
        let shape_ok = self.problems.len() == before;
        if new {
            for (i, s) in ds.sources.iter().enumerate() {
                self.source(ds, i, s, !keys.is_empty());
            }
            let mut pnames = HashSet::new();
            for p in &ds.pipelines {
                if !pnames.insert(p.name.as_str()) {
                    self.problem(format!(
                        "dataset {name}: pipeline {} is defined twice",
                        p.name
                    ));
                }
            }
        }
        shape_ok
    }

    fn source(&mut self, ds: &Dataset, i: usize, s: &Source, keyed: bool) {
        let what = format!(
            "dataset {} source {} ({})",
            ds.name,
            i + 1,
            s.connector.kind()
        );
        for (opt, val) in [
            ("disorder", &s.disorder),
            ("every", &s.every),
            ("idleness", &s.idleness),
        ] {
            if let Some(d) = val {
                if let Some(Duration::Forever) = self.duration(&format!("{what}: {opt}"), d) {
                    if opt != "disorder" {
                        self.problem(format!("{what}: {opt} cannot be \"forever\""));
                    }
                }
            }
        }
        let mut bounds = [None, None];
        for (j, (opt, val)) in [("since", &s.since), ("until", &s.until)]
            .into_iter()
            .enumerate()
        {
            if let Some(t) = val {
                match values::parse_timestamp_str(t) {
                    Ok(x) => bounds[j] = Some(x),
                    Err(e) => self.problem(format!("{what}: {opt}: {e}")),
                }
            }
        }
        if let [Some(a), Some(b)] = bounds {
            if a >= b {
                self.problem(format!("{what}: since must be before until"));
            }
        }
        match (s.cdc, keyed) {
            (Cdc::Append, true) => self.problem(format!(
                "{what}: cdc=\"append\" is for keyless datasets; dataset {} has keys, use cdc=\"upsert\"",
                ds.name
            )),
            (Cdc::Upsert | Cdc::Delete | Cdc::Debezium, false) => self.problem(format!(
                "{what}: cdc=\"{}\" needs key fields; dataset {} is keyless (use cdc=\"append\")",
                s.cdc.as_str(),
                ds.name
            )),
            _ => {}
        }
        if s.cdc == Cdc::Debezium && !matches!(s.connector, Connector::Kafka { .. }) {
            self.problem(format!("{what}: cdc=\"debezium\" needs a Kafka source"));
        }
        if s.cdc == Cdc::Native && !matches!(s.connector, Connector::Postgres { .. }) {
            self.problem(format!(
                "{what}: cdc=\"native\" needs a Postgres table source"
            ));
        }
        match &s.connector {
            Connector::Postgres { .. } => match &s.cursor {
                None if s.cdc == Cdc::Native => {}
                Some(_) if s.cdc == Cdc::Native => self.problem(format!(
                    "{what}: cdc=\"native\" reads the change stream; it takes no cursor"
                )),
                None => self.problem(format!(
                    "{what}: a Postgres table source needs cursor=\"<column>\" or cdc=\"native\""
                )),
                Some(c) if c.trim().is_empty() => self.problem(format!("{what}: cursor is empty")),
                _ => {}
            },
            _ if s.cursor.is_some() => self.problem(format!(
                "{what}: cursor is only for table sources (Postgres)"
            )),
            _ => {}
        }
        let nonempty = |x: &str| !x.trim().is_empty();
        match &s.connector {
            Connector::Webhook {
                name,
                endpoint,
                retention,
            } => {
                if !nonempty(name) || !nonempty(endpoint) {
                    self.problem(format!("{what}: webhook name and endpoint cannot be empty"));
                }
                if let Some(r) = retention {
                    self.duration(&format!("{what}: retention"), r);
                }
            }
            Connector::Kafka {
                bootstrap_servers,
                topic,
                format,
                ..
            } => {
                if !nonempty(bootstrap_servers) || !nonempty(topic) {
                    self.problem(format!(
                        "{what}: bootstrap_servers and topic cannot be empty"
                    ));
                }
                if format != "json" {
                    self.problem(format!("{what}: format {format:?} is not supported (json)"));
                }
            }
            Connector::Files { path, format, .. } => {
                if !nonempty(path) {
                    self.problem(format!("{what}: path cannot be empty"));
                }
                if !matches!(format.as_str(), "csv" | "parquet" | "json") {
                    self.problem(format!(
                        "{what}: format {format:?} is not one of csv, parquet, json"
                    ));
                }
            }
            Connector::Postgres {
                host,
                db_name,
                table,
                ..
            } => {
                if !nonempty(host) || !nonempty(db_name) || !nonempty(table) {
                    self.problem(format!("{what}: host, db_name and table cannot be empty"));
                }
            }
            Connector::Iceberg {
                catalog_uri, table, ..
            } => {
                if !nonempty(catalog_uri) || !nonempty(table) {
                    self.problem(format!("{what}: catalog_uri and table cannot be empty"));
                }
            }
        }
        for (col, p) in &s.preproc {
            match ds.fields.iter().find(|f| &f.name == col) {
                None => self.problem(format!(
                    "{what}: preproc names {col}, which is not a field of dataset {}",
                    ds.name
                )),
                Some(f) => {
                    if let Preproc::Const(v) = p {
                        if let Err(e) = values::check(&f.ty, v) {
                            self.problem(format!("{what}: preproc constant for field {col}: {e}"));
                        }
                    }
                }
            }
        }
    }

    fn window(&mut self, what: &str, w: &Window) {
        match w {
            Window::Continuous { duration } => {
                self.duration(what, duration);
            }
            Window::Tumbling { duration, lookback } => {
                if let Some(Duration::Forever) = self.duration(what, duration) {
                    self.problem(format!("{what}: a Tumbling window cannot be \"forever\""));
                }
                if let Some(l) = lookback {
                    self.duration(what, l);
                }
            }
            Window::Hopping {
                duration,
                stride,
                lookback,
            } => {
                let d = self.duration(what, duration);
                let s = self.duration(what, stride);
                if let Some(l) = lookback {
                    self.duration(what, l);
                }
                match (d, s) {
                    (_, Some(Duration::Forever)) => {
                        self.problem(format!("{what}: a Hopping stride cannot be \"forever\""))
                    }
                    (Some(Duration::Micros(d)), Some(Duration::Micros(s))) if s == 0 || s > d => {
                        self.problem(format!(
                            "{what}: a Hopping stride must be positive and at most the duration"
                        ))
                    }
                    _ => {}
                }
            }
            Window::Session { gap } => {
                if let Some(Duration::Forever | Duration::Micros(0)) = self.duration(what, gap) {
                    self.problem(format!("{what}: a Session gap must be a positive duration"));
                }
            }
        }
    }

    fn pipeline(
        &mut self,
        ds: &Dataset,
        p: &Pipeline,
        datasets: &BTreeMap<&str, &Dataset>,
        schemas: &BTreeMap<&str, Option<Schema>>,
    ) {
        let what = format!("pipeline {}.{}", ds.name, p.name);
        let before = self.problems.len();
        if p.version == 0 {
            self.problem(format!("{what}: version must be at least 1"));
        }
        if p.inputs.is_empty() {
            self.problem(format!("{what} has no @inputs"));
        }
        for inp in &p.inputs {
            if !datasets.contains_key(inp.as_str()) {
                self.problem(format!(
                    "{what}: input dataset {inp} is not defined (commit it, or commit it first)"
                ));
            } else if inp == &ds.name {
                self.problem(format!("{what} reads its own dataset {inp}"));
            }
        }
        if p.nodes.is_empty() {
            self.problem(format!("{what} has no operators"));
            return;
        }
        if self.problems.len() > before {
            return;
        }
        let Some(out) = self.node_schemas(&what, p, schemas) else {
            return;
        };
        if p.output >= out.len() {
            self.problem(format!("{what}: output node {} does not exist", p.output));
            return;
        }
        let Some(got) = &out[p.output] else { return };
        let Some(Some(want)) = schemas.get(ds.name.as_str()) else {
            return;
        };
        self.same_schema(&what, &ds.name, got, want);
    }

    /// Every node's output schema, by node id (`None` where a rule failed,
    /// reported); `None` overall when the graph itself is malformed.
    fn node_schemas(
        &mut self,
        what: &str,
        p: &Pipeline,
        schemas: &BTreeMap<&str, Option<Schema>>,
    ) -> Option<Vec<Option<Schema>>> {
        let mut out: Vec<Option<Schema>> = Vec::with_capacity(p.nodes.len());
        for (i, node) in p.nodes.iter().enumerate() {
            let nwhat = format!("{what}: {} (node {i})", node.op());
            if node.id() != i {
                self.problem(format!(
                    "{nwhat}: id {} should be {i} (ids are positions in nodes)",
                    node.id()
                ));
                return None;
            }
            let mut ins = Vec::new();
            for j in node.inputs() {
                if j >= i {
                    self.problem(format!(
                        "{nwhat}: reads node {j}, which does not come before it"
                    ));
                    return None;
                }
                ins.push(out[j].clone());
            }
            if ins.iter().any(Option::is_none) {
                out.push(None); // reported already
                continue;
            }
            let ins: Vec<Schema> = ins.into_iter().map(|s| s.expect("checked")).collect();
            let s = self.node(&nwhat, node, &ins, &p.inputs, schemas);
            out.push(s);
        }
        Some(out)
    }

    fn same_schema(&mut self, what: &str, ds: &str, got: &Schema, want: &Schema) {
        for (n, t) in &want.fields {
            match got.get(n) {
                None => self.problem(format!(
                    "{what}: the output has no field {n}, which dataset {ds} declares ({t})"
                )),
                Some(g) if g != t => self.problem(format!(
                    "{what}: output field {n} has type {g} but dataset {ds} declares {t}"
                )),
                _ => {}
            }
        }
        for (n, t) in &got.fields {
            if want.get(n).is_none() {
                self.problem(format!(
                    "{what}: the output has field {n} ({t}), which is not a field of dataset {ds}"
                ));
            }
        }
        let (mut gk, mut wk) = (got.keys.clone(), want.keys.clone());
        gk.sort();
        wk.sort();
        if gk != wk {
            self.problem(format!(
                "{what}: the output is keyed by {} but dataset {ds} is keyed by {}",
                list(&got.keys),
                list(&want.keys)
            ));
        }
        if got.timestamp != want.timestamp {
            self.problem(format!(
                "{what}: the output's timestamp is {} but dataset {ds}'s is {}",
                got.timestamp, want.timestamp
            ));
        }
    }

    fn columns_exist(&mut self, what: &str, s: &Schema, cols: &[String]) -> bool {
        let mut ok = true;
        for c in cols {
            if !s.has(c) {
                let have: Vec<String> = s.fields.iter().map(|(n, _)| n.clone()).collect();
                self.problem(format!(
                    "{what}: unknown column {c} (columns: {})",
                    list(&have)
                ));
                ok = false;
            }
        }
        ok
    }

    fn expr_columns(&mut self, what: &str, s: &Schema, e: &Expr) -> bool {
        let mut cols = Vec::new();
        e.columns(&mut cols);
        self.columns_exist(what, s, &cols)
    }

    /// The output schema of one operator reading `ins`, checking its rules.
    /// `inputs` are the pipeline's `@inputs`; `schemas` the datasets it may
    /// read (`None`: defined but invalid, reported elsewhere).
    fn node(
        &mut self,
        what: &str,
        node: &Node,
        ins: &[Schema],
        inputs: &[String],
        schemas: &BTreeMap<&str, Option<Schema>>,
    ) -> Option<Schema> {
        let input = ins.first();
        match node {
            Node::Input { dataset, .. } => {
                if !inputs.iter().any(|i| i == dataset) {
                    self.problem(format!(
                        "{what}: dataset {dataset} is not among the pipeline's @inputs"
                    ));
                    return None;
                }
                schemas.get(dataset.as_str()).cloned().flatten()
            }
            Node::Filter { predicate, .. } => {
                let s = input?.clone();
                if let ExprOrFunc::Expr { expr } = predicate {
                    self.expr_columns(what, &s, expr);
                }
                Some(s)
            }
            Node::Assign { columns, .. } => {
                let mut s = input?.clone();
                if columns.is_empty() {
                    self.problem(format!("{what}: assigns no columns"));
                }
                for (name, a) in columns {
                    if !is_identifier(name) {
                        self.problem(format!("{what}: column name {name:?} is not an identifier"));
                    }
                    if s.is_special(name) {
                        self.problem(format!(
                            "{what}: cannot assign to key or timestamp field {name}"
                        ));
                        continue;
                    }
                    if let ExprOrFunc::Expr { expr } = &a.value {
                        self.expr_columns(what, &s, expr);
                    }
                    match s.fields.iter_mut().find(|(n, _)| n == name) {
                        Some(slot) => slot.1 = a.ty.clone(),
                        None => s.fields.push((name.clone(), a.ty.clone())),
                    }
                }
                Some(s)
            }
            Node::Transform { schema, .. } => {
                let s = input?;
                let Some(new) = schema else {
                    return Some(s.clone());
                };
                for k in s.keys.iter().chain(std::iter::once(&s.timestamp)) {
                    match new.get(k) {
                        None => self.problem(format!("{what}: the transform schema must keep key/timestamp field {k}")),
                        Some(t) if Some(t) != s.get(k) => self.problem(format!(
                            "{what}: the transform schema changes the type of key/timestamp field {k}"
                        )),
                        _ => {}
                    }
                }
                Some(Schema {
                    fields: new.iter().map(|(n, t)| (n.clone(), t.clone())).collect(),
                    keys: s.keys.clone(),
                    timestamp: s.timestamp.clone(),
                })
            }
            Node::Select { columns, .. } => {
                let s = input?;
                if !self.columns_exist(what, s, columns) {
                    return None;
                }
                for k in &s.keys {
                    if !columns.contains(k) {
                        self.problem(format!("{what}: select must keep key field {k}"));
                    }
                }
                let keep: Vec<(String, Type)> = s
                    .fields
                    .iter()
                    .filter(|(n, _)| columns.contains(n) || *n == s.timestamp)
                    .cloned()
                    .collect();
                Some(Schema {
                    fields: keep,
                    ..s.clone()
                })
            }
            Node::Drop { columns, .. } => {
                let s = input?;
                if !self.columns_exist(what, s, columns) {
                    return None;
                }
                for c in columns {
                    if s.is_special(c) {
                        self.problem(format!("{what}: cannot drop key or timestamp field {c}"));
                    }
                }
                let keep = s
                    .fields
                    .iter()
                    .filter(|(n, _)| !columns.contains(n))
                    .cloned()
                    .collect();
                Some(Schema {
                    fields: keep,
                    ..s.clone()
                })
            }
            Node::Rename { columns, .. } => {
                let s = input?;
                let olds: Vec<String> = columns.keys().cloned().collect();
                if !self.columns_exist(what, s, &olds) {
                    return None;
                }
                let map = |n: &String| columns.get(n).cloned().unwrap_or_else(|| n.clone());
                let fields: Vec<(String, Type)> =
                    s.fields.iter().map(|(n, t)| (map(n), t.clone())).collect();
                let mut seen = HashSet::new();
                for (n, _) in &fields {
                    if !seen.insert(n.clone()) {
                        self.problem(format!("{what}: renaming makes two columns named {n}"));
                        return None;
                    }
                    if !is_identifier(n) {
                        self.problem(format!("{what}: new name {n:?} is not an identifier"));
                    }
                }
                Some(Schema {
                    fields,
                    keys: s.keys.iter().map(map).collect(),
                    timestamp: map(&s.timestamp),
                })
            }
            Node::DropNull { columns, .. } => {
                let mut s = input?.clone();
                let cols: Vec<String> = match columns {
                    Some(c) => {
                        if !self.columns_exist(what, &s, c) {
                            return None;
                        }
                        for n in c {
                            if !s.get(n).is_some_and(Type::is_optional) {
                                self.problem(format!("{what}: column {n} is not optional"));
                            }
                        }
                        c.clone()
                    }
                    None => s
                        .fields
                        .iter()
                        .filter(|(_, t)| t.is_optional())
                        .map(|(n, _)| n.clone())
                        .collect(),
                };
                for (n, t) in s.fields.iter_mut() {
                    if cols.contains(n) {
                        *t = t.non_optional().clone();
                    }
                }
                Some(s)
            }
            Node::Join {
                dataset,
                how,
                on,
                left_on,
                right_on,
                within,
                fields,
                ..
            } => {
                let s = input?;
                let Some(right) = schemas.get(dataset.as_str()) else {
                    self.problem(format!("{what}: joined dataset {dataset} is not defined"));
                    return None;
                };
                if !inputs.iter().any(|i| i == dataset) {
                    self.problem(format!(
                        "{what}: joined dataset {dataset} is not among the pipeline's @inputs"
                    ));
                }
                let right = right.clone()?;
                if right.keys.is_empty() {
                    self.problem(format!("{what}: the right side of a join must be a keyed dataset; {dataset} is keyless"));
                    return None;
                }
                let (lcols, rcols) = match join_columns(on, left_on, right_on) {
                    Ok(c) => c,
                    Err(e) => {
                        self.problem(format!("{what}: {e}"));
                        return None;
                    }
                };
                if !self.columns_exist(what, s, &lcols) {
                    return None;
                }
                let (mut rs, mut rk) = (rcols.clone(), right.keys.clone());
                rs.sort();
                rk.sort();
                if rs != rk {
                    self.problem(format!(
                        "{what}: the join columns {} must be exactly the keys {} of {dataset}",
                        list(&rcols),
                        list(&right.keys)
                    ));
                    return None;
                }
                for (l, r) in lcols.iter().zip(&rcols) {
                    let (lt, rt) = (s.get(l).expect("checked"), right.get(r).expect("key"));
                    if !lt.non_optional().same_shape(rt) {
                        self.problem(format!(
                            "{what}: join column {l} ({lt}) does not match {dataset}.{r} ({rt})"
                        ));
                    }
                }
                if let Some((a, b)) = within {
                    self.duration(&format!("{what}: within"), a);
                    if let Some(Duration::Forever) = self.duration(&format!("{what}: within"), b) {
                        self.problem(format!(
                            "{what}: the second bound of within cannot be \"forever\""
                        ));
                    }
                }
                let candidates: Vec<&(String, Type)> = right
                    .fields
                    .iter()
                    .filter(|(n, _)| !right.is_special(n))
                    .collect();
                let take: Vec<(String, Type)> = match fields {
                    None => candidates.into_iter().cloned().collect(),
                    Some(fs) => {
                        let mut t = Vec::new();
                        for f in fs {
                            match candidates.iter().find(|(n, _)| n == f) {
                                Some(x) => t.push((*x).clone()),
                                None => self.problem(format!(
                                    "{what}: fields names {f}, which is not a non-key, non-timestamp field of {dataset}"
                                )),
                            }
                        }
                        t
                    }
                };
                let mut out = s.clone();
                for (n, t) in take {
                    if out.has(&n) {
                        self.problem(format!(
                            "{what}: field {n} exists on both sides of the join (rename or drop one)"
                        ));
                        continue;
                    }
                    let t = if *how == JoinHow::Left {
                        t.optional()
                    } else {
                        t
                    };
                    out.fields.push((n, t));
                }
                Some(out)
            }
            Node::Aggregate {
                keys,
                window,
                aggregates,
                emit,
                along,
                ..
            } => {
                let s = input?;
                self.aggregate(
                    what,
                    s,
                    keys,
                    window.as_ref(),
                    aggregates,
                    *emit,
                    along.as_deref(),
                )
            }
            Node::First { keys, .. } | Node::Latest { keys, .. } => {
                let s = input?;
                if keys.is_empty() {
                    self.problem(format!("{what}: groupby needs at least one key"));
                    return None;
                }
                if !self.columns_exist(what, s, keys) {
                    return None;
                }
                self.group_keys(what, s, keys);
                Some(Schema {
                    keys: keys.clone(),
                    ..s.clone()
                })
            }
            Node::Dedup { by, window, .. } => {
                let s = input?;
                if !s.keys.is_empty() {
                    self.problem(format!("{what}: dedup works on keyless datasets"));
                }
                if let Some(b) = by {
                    self.columns_exist(what, s, b);
                }
                if let Some(w) = window {
                    self.window(what, w);
                }
                Some(s.clone())
            }
            Node::Explode { columns, .. } => {
                let mut s = input?.clone();
                if !self.columns_exist(what, &s, columns) {
                    return None;
                }
                if !s.keys.is_empty() {
                    self.problem(format!("{what}: explode works on keyless datasets"));
                }
                for (n, t) in s.fields.iter_mut() {
                    if columns.contains(n) {
                        match t.non_optional() {
                            Type::List(inner) => *t = inner.optional(),
                            other => {
                                self.problem(format!("{what}: column {n} is {other}, not a List"));
                            }
                        }
                    }
                }
                Some(s)
            }
            Node::Union { .. } => {
                let first = ins.first()?;
                if ins.len() < 2 {
                    self.problem(format!("{what}: a union needs at least two inputs"));
                }
                if !first.keys.is_empty() {
                    self.problem(format!("{what}: union works on keyless datasets"));
                }
                for other in &ins[1..] {
                    let mut a = first.fields.clone();
                    let mut b = other.fields.clone();
                    a.sort_by(|x, y| x.0.cmp(&y.0));
                    b.sort_by(|x, y| x.0.cmp(&y.0));
                    if a != b || first.timestamp != other.timestamp || first.keys != other.keys {
                        self.problem(format!(
                            "{what}: the inputs of a union must have the same schema"
                        ));
                        break;
                    }
                }
                Some(first.clone())
            }
            Node::Changelog { delete_column, .. } => {
                let s = input?;
                if s.keys.is_empty() {
                    self.problem(format!("{what}: changelog needs a keyed input"));
                }
                if s.has(delete_column) {
                    self.problem(format!(
                        "{what}: delete column {delete_column} already exists"
                    ));
                }
                let mut out = s.clone();
                out.keys.clear();
                out.fields.push((delete_column.clone(), Type::Bool));
                Some(out)
            }
        }
    }

    fn group_keys(&mut self, what: &str, s: &Schema, keys: &[String]) {
        for k in keys {
            if let Some(t) = s.get(k) {
                if t.is_optional() {
                    self.problem(format!(
                        "{what}: groupby key {k} is optional ({t}); dropnull it first"
                    ));
                } else if !t.is_hashable() {
                    self.problem(format!(
                        "{what}: groupby key {k} has type {t}, which cannot be a key"
                    ));
                }
            }
        }
        let mut seen = HashSet::new();
        for k in keys {
            if !seen.insert(k) {
                self.problem(format!("{what}: groupby key {k} is listed twice"));
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn aggregate(
        &mut self,
        what: &str,
        s: &Schema,
        keys: &[String],
        window: Option<&Window>,
        aggs: &[Agg],
        emit: Option<Emit>,
        along: Option<&str>,
    ) -> Option<Schema> {
        if keys.is_empty() {
            self.problem(format!("{what}: groupby needs at least one key"));
            return None;
        }
        if !self.columns_exist(what, s, keys) {
            return None;
        }
        self.group_keys(what, s, keys);
        if aggs.is_empty() {
            self.problem(format!("{what}: aggregate needs at least one aggregation"));
        }
        if let Some(w) = window {
            self.window(what, w);
        }
        if let Some(a) = along {
            match s.get(a) {
                None => self.problem(format!("{what}: along names unknown column {a}")),
                Some(t) if *t != Type::Datetime => self.problem(format!(
                    "{what}: along column {a} must be datetime, not {t}"
                )),
                _ => {}
            }
        }
        if emit == Some(Emit::Final) {
            let discrete = |w: Option<&Window>| {
                matches!(
                    w,
                    Some(Window::Tumbling { .. } | Window::Hopping { .. } | Window::Session { .. })
                )
            };
            if !discrete(window) && !aggs.iter().all(|a| discrete(a.window.as_ref())) {
                self.problem(format!(
                    "{what}: emit=\"final\" needs Tumbling, Hopping or Session windows"
                ));
            }
        }
        let mut out = Schema {
            fields: Vec::new(),
            keys: keys.to_vec(),
            timestamp: s.timestamp.clone(),
        };
        for k in keys {
            out.fields
                .push((k.clone(), s.get(k).expect("checked").clone()));
        }
        out.fields.push((s.timestamp.clone(), Type::Datetime));
        let mut names: HashSet<&str> = keys.iter().map(String::as_str).collect();
        names.insert(&s.timestamp);
        for a in aggs {
            let awhat = format!(
                "{what}: {}({}) into {}",
                a.kind.class(),
                a.of.as_deref().unwrap_or(""),
                a.into
            );
            if !is_identifier(&a.into) {
                self.problem(format!(
                    "{awhat}: output name {:?} is not an identifier",
                    a.into
                ));
            }
            if !names.insert(&a.into) {
                self.problem(format!(
                    "{awhat}: output field {} is produced twice (or is a key or the timestamp)",
                    a.into
                ));
            }
            match a.window.as_ref().or(window) {
                None => self.problem(format!(
                    "{awhat}: needs a window (e.g. window=Continuous(\"7d\"))"
                )),
                Some(w) => {
                    if a.window.is_some() {
                        self.window(&awhat, w)
                    }
                }
            }
            if let Some(t) = self.agg_type(&awhat, s, a) {
                out.fields.push((a.into.clone(), t));
            }
        }
        Some(out)
    }

    /// The output type of one aggregation, checking its input field.
    fn agg_type(&mut self, what: &str, s: &Schema, a: &Agg) -> Option<Type> {
        let of = match (&a.of, a.kind) {
            (None, AggKind::Count) if !a.unique => None,
            (None, _) => {
                self.problem(format!("{what}: needs of=\"<field>\""));
                return None;
            }
            (Some(f), _) => match s.get(f) {
                None => {
                    let have: Vec<String> = s.fields.iter().map(|(n, _)| n.clone()).collect();
                    self.problem(format!(
                        "{what}: of names unknown field {f} (fields: {})",
                        list(&have)
                    ));
                    return None;
                }
                Some(t) => Some((f.as_str(), t)),
            },
        };
        let numeric = |v: &mut Self| -> Option<Type> {
            let (f, t) = of?;
            if t.is_optional() {
                v.problem(format!(
                    "{what}: field {f} is optional ({t}); dropnull or fill it first"
                ));
                return None;
            }
            if !t.is_numeric() {
                v.problem(format!(
                    "{what}: field {f} has type {t}; {} needs int or float",
                    a.kind.class()
                ));
                return None;
            }
            Some(match t.scalar() {
                Some(crate::types::Scalar::Int) => Type::Int,
                _ => Type::Float,
            })
        };
        let default_fits = |v: &mut Self, t: &Type| {
            if let Some(d) = &a.default {
                if let Err(e) = values::check(t, d) {
                    v.problem(format!("{what}: default: {e}"));
                }
            }
        };
        let with_default = |t: Type| {
            if a.default.as_ref().is_some_and(|d| !d.is_null()) {
                t
            } else {
                t.optional()
            }
        };
        match a.kind {
            AggKind::Count => {
                if a.unique {
                    if let Some((f, t)) = of {
                        if !t.is_hashable() {
                            self.problem(format!(
                                "{what}: Count(unique=True) needs a hashable field; {f} is {t}"
                            ));
                        }
                    }
                }
                Some(Type::Int)
            }
            AggKind::Sum => numeric(self),
            AggKind::Average | AggKind::Stddev => {
                numeric(self)?;
                default_fits(self, &Type::Float);
                Some(with_default(Type::Float))
            }
            AggKind::Min | AggKind::Max => {
                let t = numeric(self)?;
                default_fits(self, &t);
                Some(with_default(t))
            }
            AggKind::Quantile => {
                numeric(self)?;
                match a.p {
                    Some(p) if (0.0..=1.0).contains(&p) => {}
                    Some(p) => self.problem(format!("{what}: p={p} is not between 0 and 1")),
                    None => {
                        self.problem(format!("{what}: needs p (the quantile, between 0 and 1)"))
                    }
                }
                default_fits(self, &Type::Float);
                Some(with_default(Type::Float))
            }
            AggKind::ExpDecaySum => {
                numeric(self)?;
                match &a.half_life {
                    None => self.problem(format!("{what}: needs half_life (e.g. \"1d\")")),
                    Some(h) => {
                        if let Some(Duration::Forever | Duration::Micros(0)) =
                            self.duration(what, h)
                        {
                            self.problem(format!("{what}: half_life must be a positive duration"));
                        }
                    }
                }
                Some(Type::Float)
            }
            AggKind::Distinct => {
                let (f, t) = of?;
                if !t.is_hashable() {
                    self.problem(format!(
                        "{what}: Distinct needs a hashable field; {f} is {t}"
                    ));
                }
                Some(Type::List(Box::new(t.clone())))
            }
            AggKind::LastK | AggKind::FirstK => {
                let (_, t) = of?;
                match a.limit {
                    Some(n) if n > 0 => {}
                    _ => self.problem(format!("{what}: needs limit >= 1")),
                }
                let elem = if a.dropnull {
                    t.non_optional().clone()
                } else {
                    t.clone()
                };
                Some(Type::List(Box::new(elem)))
            }
        }
    }

    fn featureset(
        &mut self,
        fs: &Featureset,
        datasets: &BTreeMap<&str, &Dataset>,
        featuresets: &BTreeMap<&str, &Featureset>,
    ) {
        let name = &fs.name;
        if !is_identifier(name) {
            self.problem(format!(
                "featureset {name:?}: a name must be a Python identifier"
            ));
        }
        if fs.features.is_empty() {
            self.problem(format!("featureset {name} has no features"));
        }
        self.unique_identifiers(
            &format!("featureset {name}"),
            "feature",
            fs.features.iter().map(|f| f.name.as_str()),
        );
        let feature = |n: &str| fs.features.iter().find(|f| f.name == n);
        let mut extractor_of: HashMap<&str, &str> = HashMap::new();
        let mut enames = HashSet::new();
        for e in &fs.extractors {
            let what = format!("featureset {name}: extractor {}", e.name);
            if !enames.insert(e.name.as_str()) {
                self.problem(format!("{what} is defined twice"));
            }
            if e.outputs.is_empty() {
                self.problem(format!("{what} has no outputs"));
            }
            for o in &e.outputs {
                if feature(o).is_none() {
                    self.problem(format!("{what}: output {o} is not a feature of {name}"));
                }
                if let Some(prev) = extractor_of.insert(o, &e.name) {
                    self.problem(format!(
                        "featureset {name}: feature {o} is computed by two extractors ({prev} and {}); a feature has at most one extractor",
                        e.name
                    ));
                }
            }
            let mut input_types = Vec::new();
            for i in &e.inputs {
                match resolve_feature(i, featuresets) {
                    Ok(t) => input_types.push(t),
                    Err(msg) => self.problem(format!("{what}: input {msg}")),
                }
            }
            for d in &e.deps {
                if !datasets.contains_key(d.as_str()) {
                    self.problem(format!("{what}: dependency dataset {d} is not defined"));
                }
            }
            match e.kind {
                ExtractorKind::Lookup => self.lookup(&what, fs, e, &input_types, datasets),
                ExtractorKind::Alias => {
                    if e.inputs.len() != 1 || e.outputs.len() != 1 {
                        self.problem(format!("{what}: an alias has one input and one output"));
                    } else if let (Some(t), Some(o)) = (input_types.first(), feature(&e.outputs[0]))
                    {
                        if *t != o.ty {
                            self.problem(format!(
                                "{what}: alias of {} ({t}) into feature {} ({})",
                                e.inputs[0], o.name, o.ty
                            ));
                        }
                    }
                }
                ExtractorKind::Expr => match &e.expr {
                    None => self.problem(format!("{what}: an expr extractor needs expr")),
                    Some(x) => {
                        let mut cols = Vec::new();
                        x.columns(&mut cols);
                        for c in cols {
                            if feature(&c).is_none() {
                                self.problem(format!("{what}: the expression reads {c}, which is not a feature of {name}"));
                            } else if e.outputs.contains(&c) {
                                self.problem(format!(
                                    "{what}: the expression for {c} reads itself"
                                ));
                            }
                        }
                    }
                },
                ExtractorKind::Python => {
                    if e.source.as_deref().is_none_or(|s| s.trim().is_empty()) {
                        self.problem(format!("{what}: a Python extractor ships its source text"));
                    }
                    if e.version == 0 {
                        self.problem(format!("{what}: version must be at least 1"));
                    }
                }
            }
        }
    }

    fn lookup(
        &mut self,
        what: &str,
        fs: &Featureset,
        e: &Extractor,
        input_types: &[Type],
        datasets: &BTreeMap<&str, &Dataset>,
    ) {
        let (Some(dname), Some(field)) = (&e.dataset, &e.field) else {
            self.problem(format!("{what}: a lookup names a dataset and a field"));
            return;
        };
        let Some(ds) = datasets.get(dname.as_str()) else {
            self.problem(format!(
                "{what}: looks up dataset {dname}, which is not defined"
            ));
            return;
        };
        let s = schema_of(ds);
        if s.keys.is_empty() {
            self.problem(format!(
                "{what}: dataset {dname} is keyless and cannot be looked up"
            ));
            return;
        }
        if !ds.index {
            self.problem(format!("{what}: dataset {dname} is not indexed; declare it with @dataset(index=True) to look it up"));
        }
        let Some(ft) = s.get(field) else {
            self.problem(format!("{what}: dataset {dname} has no field {field}"));
            return;
        };
        if s.is_special(field) {
            self.problem(format!(
                "{what}: field {field} of {dname} is a key or the timestamp; look up a value field"
            ));
        }
        if e.inputs.len() != s.keys.len() {
            self.problem(format!(
                "{what}: dataset {dname} is keyed by {}; the lookup needs {} input feature(s), got {}",
                list(&s.keys),
                s.keys.len(),
                e.inputs.len()
            ));
        } else {
            for ((k, t), i) in s.keys.iter().zip(input_types).zip(&e.inputs) {
                let kt = s.get(k).expect("key");
                if !t.non_optional().same_shape(kt) {
                    self.problem(format!(
                        "{what}: input {i} ({t}) does not fit key {dname}.{k} ({kt})"
                    ));
                }
            }
        }
        if e.outputs.len() != 1 {
            self.problem(format!("{what}: a lookup has one output"));
            return;
        }
        let out = &e.outputs[0];
        let Some(of) = fs.features.iter().find(|f| &f.name == out) else {
            return;
        };
        match &e.default {
            Some(d) if !d.is_null() => {
                if let Err(err) = values::check(ft, d) {
                    self.problem(format!("{what}: default for feature {out}: {err}"));
                }
                if !of.ty.same_shape(ft) && !of.ty.same_shape(&ft.optional()) {
                    self.problem(format!(
                        "{what}: feature {out} is {} but {dname}.{field} is {ft}",
                        of.ty
                    ));
                }
            }
            _ => {
                if !of.ty.same_shape(&ft.optional()) {
                    self.problem(format!(
                        "{what}: feature {out} must be {} (a lookup without a default is empty for absent keys)",
                        ft.optional()
                    ));
                }
            }
        }
    }

    /// Features form a DAG: an extractor's outputs depend on its inputs.
    fn feature_cycles(&mut self, featuresets: &BTreeMap<&str, &Featureset>) {
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for fs in featuresets.values() {
            for e in &fs.extractors {
                let mut ins: Vec<String> = e.inputs.clone();
                if let (ExtractorKind::Expr, Some(x)) = (e.kind, &e.expr) {
                    let mut cols = Vec::new();
                    x.columns(&mut cols);
                    ins.extend(cols.into_iter().map(|c| format!("{}.{c}", fs.name)));
                }
                for o in &e.outputs {
                    let q = format!("{}.{o}", fs.name);
                    for i in &ins {
                        edges.entry(q.clone()).or_default().insert(i.clone());
                    }
                }
            }
        }
        // Iterative DFS with colours; report each cycle once.
        let mut state: HashMap<&str, u8> = HashMap::new();
        let mut reported = false;
        for start in edges.keys() {
            if reported || state.get(start.as_str()).copied().unwrap_or(0) != 0 {
                continue;
            }
            let mut stack: Vec<(&str, Vec<&str>)> =
                vec![(start, edges[start].iter().map(String::as_str).collect())];
            state.insert(start, 1);
            while let Some((node, next)) = stack.last_mut() {
                let node = *node;
                match next.pop() {
                    None => {
                        state.insert(node, 2);
                        stack.pop();
                    }
                    Some(n) => match state.get(n).copied().unwrap_or(0) {
                        0 => {
                            state.insert(n, 1);
                            let succ = edges
                                .get(n)
                                .map(|s| s.iter().map(String::as_str).collect())
                                .unwrap_or_default();
                            stack.push((n, succ));
                        }
                        1 => {
                            let pos = stack.iter().position(|(x, _)| *x == n).unwrap_or(0);
                            let mut path: Vec<&str> =
                                stack[pos..].iter().map(|(x, _)| *x).collect();
                            path.push(n);
                            path.reverse();
                            self.problem(format!(
                                "features form a cycle: {} (each is computed from the next)",
                                path.join(" <- ")
                            ));
                            reported = true;
                            break;
                        }
                        _ => {}
                    },
                }
            }
        }
    }
}

/// The type of a qualified feature `Featureset.feature`.
fn resolve_feature(q: &str, featuresets: &BTreeMap<&str, &Featureset>) -> Result<Type, String> {
    let Some((fs, f)) = q.split_once('.') else {
        return Err(format!(
            "{q:?} is not a qualified feature name (Featureset.feature)"
        ));
    };
    let Some(set) = featuresets.get(fs) else {
        return Err(format!("{q}: featureset {fs} is not defined"));
    };
    set.features
        .iter()
        .find(|x| x.name == f)
        .map(|x| x.ty.clone())
        .ok_or_else(|| format!("{q}: featureset {fs} has no feature {f}"))
}
