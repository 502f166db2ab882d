//! The commit payload, version 1: what `thyme commit` posts to
//! `POST /api/v1/commit` (documented in `docs/commit-payload.md`; the JSON
//! Schema in `docs/commit-payload.schema.json` is generated from these
//! types).
//!
//! Every struct refuses unknown keys, so a typo in a hand-written payload is
//! an error rather than a silently ignored option.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::types::Type;

/// The only payload version this server reads.
pub const SCHEMA_VERSION: u32 = 1;

/// One commit: definitions to create or change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Commit {
    /// Payload version; must be 1.
    pub schema_version: u32,
    /// What the commit is for (kept with the commit record).
    #[serde(default)]
    pub message: Option<String>,
    /// Accepted for compatibility: commits never remove definitions that
    /// are not in the payload.
    #[serde(default)]
    pub incremental: bool,
    #[serde(default)]
    pub datasets: Vec<Dataset>,
    #[serde(default)]
    pub featuresets: Vec<Featureset>,
}

/// A dataset definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Dataset {
    /// The Python class name; the SQL table is its snake_case.
    pub name: String,
    /// Bumping it recomputes the dataset; changes need a bump.
    #[serde(default = "one")]
    pub version: u32,
    /// Whether it can be looked up (online and point in time).
    #[serde(default)]
    pub index: bool,
    pub fields: Vec<Field>,
    #[serde(default)]
    pub sources: Vec<Source>,
    #[serde(default)]
    pub pipelines: Vec<Pipeline>,
    /// Data expectations, stored as given.
    #[serde(default)]
    pub expectations: Option<Value>,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// Free-form metadata (tags, ...), stored as given.
    #[serde(default)]
    pub meta: Option<Value>,
}

fn one() -> u32 {
    1
}

/// A dataset field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Field {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: Type,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub key: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub timestamp: bool,
    /// A default filled in when a source row lacks the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A source feeding a dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub connector: Connector,
    /// Allowed lateness of events.
    #[serde(default)]
    pub disorder: Option<String>,
    #[serde(default = "append")]
    pub cdc: Cdc,
    /// Poll period (table and file sources).
    #[serde(default)]
    pub every: Option<String>,
    #[serde(default)]
    pub since: Option<String>,
    #[serde(default)]
    pub until: Option<String>,
    /// Cursor column of table sources.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Columns filled before schema checks: a constant or another column.
    #[serde(default)]
    pub preproc: BTreeMap<String, Preproc>,
    /// Accepted for compatibility with Fennel definitions; not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Value>,
    /// Accepted for compatibility with Fennel definitions; not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bounded: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idleness: Option<String>,
}

fn append() -> Cdc {
    Cdc::Append
}

/// How source rows change a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Cdc {
    /// Every row is a new event (keyless datasets).
    Append,
    /// Every row is the new version of its key.
    Upsert,
    /// Every row deletes its key at its timestamp.
    Delete,
    /// Debezium change events (Kafka sources).
    Debezium,
    /// The connector's own change stream.
    Native,
}

impl Cdc {
    pub fn as_str(&self) -> &'static str {
        match self {
            Cdc::Append => "append",
            Cdc::Upsert => "upsert",
            Cdc::Delete => "delete",
            Cdc::Debezium => "debezium",
            Cdc::Native => "native",
        }
    }
}

/// How `preproc` fills a column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum Preproc {
    /// A constant.
    Const(Value),
    /// Another column of the source data.
    Ref(String),
}

/// Where a source reads from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Connector {
    /// HTTP push: `POST /api/v1/log` with this webhook and endpoint.
    Webhook {
        name: String,
        endpoint: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retention: Option<String>,
    },
    /// A Kafka topic of JSON messages.
    Kafka {
        name: String,
        bootstrap_servers: String,
        topic: String,
        #[serde(default = "json_format")]
        format: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        security_protocol: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sasl_mechanism: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sasl_plain_username: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sasl_plain_password: Option<String>,
    },
    /// A Postgres table polled by cursor.
    Postgres {
        name: String,
        host: String,
        #[serde(default = "pg_port")]
        port: u16,
        db_name: String,
        username: String,
        #[serde(default)]
        password: Option<String>,
        table: String,
    },
    /// CSV / Parquet / JSON-lines files in a directory (local or `s3://`).
    Files {
        name: String,
        path: String,
        format: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prefix: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        aws_access_key_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        aws_secret_access_key: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint: Option<String>,
    },
    /// An Iceberg table.
    Iceberg {
        name: String,
        catalog_uri: String,
        table: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        warehouse: Option<String>,
    },
}

fn json_format() -> String {
    "json".into()
}
fn pg_port() -> u16 {
    5432
}

impl Connector {
    pub fn kind(&self) -> &'static str {
        match self {
            Connector::Webhook { .. } => "webhook",
            Connector::Kafka { .. } => "kafka",
            Connector::Postgres { .. } => "postgres",
            Connector::Files { .. } => "files",
            Connector::Iceberg { .. } => "iceberg",
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Connector::Webhook { name, .. }
            | Connector::Kafka { name, .. }
            | Connector::Postgres { name, .. }
            | Connector::Files { name, .. }
            | Connector::Iceberg { name, .. } => name,
        }
    }

    /// The connector as JSON with secrets replaced by `"***"` (what the
    /// control plane shows).
    pub fn redacted(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut v {
            for k in ["password", "sasl_plain_password", "aws_secret_access_key"] {
                if let Some(x) = m.get_mut(k) {
                    if !x.is_null() {
                        *x = Value::String("***".into());
                    }
                }
            }
        }
        v
    }
}

/// A pipeline: an operator graph over input datasets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    pub name: String,
    #[serde(default = "one")]
    pub version: u32,
    /// Names of the input datasets (in `@inputs` order).
    pub inputs: Vec<String>,
    /// The operator graph in creation order; `nodes[i].id == i`.
    pub nodes: Vec<Node>,
    /// Id of the node whose result the pipeline returns.
    pub output: usize,
    /// The pipeline function's source text.
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub env: Option<Env>,
}

/// What shipped Python code needs to run in the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Env {
    /// The import lines of the defining module.
    #[serde(default)]
    pub imports: Option<String>,
}

/// A Python function shipped as source text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Func {
    pub name: String,
    pub source: String,
    #[serde(default = "lambda")]
    pub kind: String,
}

fn lambda() -> String {
    "lambda".into()
}

/// An expression (`thyme.expr`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Expr {
    Col {
        col: String,
    },
    Lit {
        lit: Value,
        #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
        ty: Option<Type>,
    },
    Binary {
        binary: String,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    Unary {
        unary: String,
        expr: Box<Expr>,
    },
    IsNull {
        isnull: Box<Expr>,
    },
    FillNull {
        fillnull: Box<Expr>,
        value: Box<Expr>,
    },
    When {
        when: Vec<(Expr, Expr)>,
        otherwise: Box<Expr>,
    },
    Cast {
        cast: Box<Expr>,
        #[serde(rename = "type")]
        ty: Type,
    },
    Fn {
        #[serde(rename = "fn")]
        name: String,
        #[serde(default)]
        args: Vec<Expr>,
    },
}

impl Expr {
    /// Column names the expression reads.
    pub fn columns(&self, out: &mut Vec<String>) {
        match self {
            Expr::Col { col } => out.push(col.clone()),
            Expr::Lit { .. } => {}
            Expr::Binary { left, right, .. } => {
                left.columns(out);
                right.columns(out);
            }
            Expr::Unary { expr, .. }
            | Expr::IsNull { isnull: expr }
            | Expr::Cast { cast: expr, .. } => expr.columns(out),
            Expr::FillNull { fillnull, value } => {
                fillnull.columns(out);
                value.columns(out);
            }
            Expr::When { when, otherwise } => {
                for (c, v) in when {
                    c.columns(out);
                    v.columns(out);
                }
                otherwise.columns(out);
            }
            Expr::Fn { args, .. } => args.iter().for_each(|a| a.columns(out)),
        }
    }
}

/// A filter predicate or assign value: an expression or a Python function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ExprOrFunc {
    Func { func: Func },
    Expr { expr: Expr },
}

/// A column added by `assign`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Assigned {
    #[serde(rename = "type")]
    pub ty: Type,
    #[serde(flatten)]
    pub value: ExprOrFunc,
}

/// A window of an aggregation or dedup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Window {
    Continuous {
        duration: String,
    },
    Tumbling {
        duration: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lookback: Option<String>,
    },
    Hopping {
        duration: String,
        stride: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lookback: Option<String>,
    },
    Session {
        gap: String,
    },
}

/// One aggregation of `groupby(...).aggregate(...)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Agg {
    pub kind: AggKind,
    /// The output field.
    pub into: String,
    /// The input field (none for a plain `Count`).
    #[serde(default)]
    pub of: Option<String>,
    /// The window; when absent, the groupby's window.
    #[serde(default)]
    pub window: Option<Window>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unique: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub approx: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dedup: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dropnull: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub half_life: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unordered: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AggKind {
    Count,
    Sum,
    Average,
    Min,
    Max,
    Stddev,
    Distinct,
    LastK,
    FirstK,
    Quantile,
    ExpDecaySum,
}

impl AggKind {
    /// The Python class name.
    pub fn class(&self) -> &'static str {
        match self {
            AggKind::Count => "Count",
            AggKind::Sum => "Sum",
            AggKind::Average => "Average",
            AggKind::Min => "Min",
            AggKind::Max => "Max",
            AggKind::Stddev => "Stddev",
            AggKind::Distinct => "Distinct",
            AggKind::LastK => "LastK",
            AggKind::FirstK => "FirstK",
            AggKind::Quantile => "Quantile",
            AggKind::ExpDecaySum => "ExpDecaySum",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum JoinHow {
    Inner,
    Left,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Emit {
    Eager,
    Final,
}

/// One node of a pipeline's operator graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Node {
    Input {
        id: usize,
        dataset: String,
    },
    Filter {
        id: usize,
        input: usize,
        predicate: ExprOrFunc,
    },
    Assign {
        id: usize,
        input: usize,
        columns: BTreeMap<String, Assigned>,
    },
    Transform {
        id: usize,
        input: usize,
        func: Func,
        #[serde(default)]
        schema: Option<BTreeMap<String, Type>>,
    },
    Select {
        id: usize,
        input: usize,
        columns: Vec<String>,
    },
    Drop {
        id: usize,
        input: usize,
        columns: Vec<String>,
    },
    Rename {
        id: usize,
        input: usize,
        columns: BTreeMap<String, String>,
    },
    DropNull {
        id: usize,
        input: usize,
        #[serde(default)]
        columns: Option<Vec<String>>,
    },
    Join {
        id: usize,
        input: usize,
        dataset: String,
        how: JoinHow,
        #[serde(default)]
        on: Option<Vec<String>>,
        #[serde(default)]
        left_on: Option<Vec<String>>,
        #[serde(default)]
        right_on: Option<Vec<String>>,
        #[serde(default)]
        within: Option<(String, String)>,
        #[serde(default)]
        fields: Option<Vec<String>>,
    },
    Aggregate {
        id: usize,
        input: usize,
        keys: Vec<String>,
        #[serde(default)]
        window: Option<Window>,
        aggregates: Vec<Agg>,
        #[serde(default)]
        emit: Option<Emit>,
        #[serde(default)]
        along: Option<String>,
    },
    First {
        id: usize,
        input: usize,
        keys: Vec<String>,
    },
    Latest {
        id: usize,
        input: usize,
        keys: Vec<String>,
    },
    Dedup {
        id: usize,
        input: usize,
        #[serde(default)]
        by: Option<Vec<String>>,
        #[serde(default)]
        window: Option<Window>,
    },
    Explode {
        id: usize,
        input: usize,
        columns: Vec<String>,
    },
    Union {
        id: usize,
        inputs: Vec<usize>,
    },
    Changelog {
        id: usize,
        input: usize,
        delete_column: String,
    },
}

impl Node {
    pub fn id(&self) -> usize {
        match self {
            Node::Input { id, .. }
            | Node::Filter { id, .. }
            | Node::Assign { id, .. }
            | Node::Transform { id, .. }
            | Node::Select { id, .. }
            | Node::Drop { id, .. }
            | Node::Rename { id, .. }
            | Node::DropNull { id, .. }
            | Node::Join { id, .. }
            | Node::Aggregate { id, .. }
            | Node::First { id, .. }
            | Node::Latest { id, .. }
            | Node::Dedup { id, .. }
            | Node::Explode { id, .. }
            | Node::Union { id, .. }
            | Node::Changelog { id, .. } => *id,
        }
    }

    /// The operator name as written in the payload.
    pub fn op(&self) -> &'static str {
        match self {
            Node::Input { .. } => "input",
            Node::Filter { .. } => "filter",
            Node::Assign { .. } => "assign",
            Node::Transform { .. } => "transform",
            Node::Select { .. } => "select",
            Node::Drop { .. } => "drop",
            Node::Rename { .. } => "rename",
            Node::DropNull { .. } => "dropnull",
            Node::Join { .. } => "join",
            Node::Aggregate { .. } => "aggregate",
            Node::First { .. } => "first",
            Node::Latest { .. } => "latest",
            Node::Dedup { .. } => "dedup",
            Node::Explode { .. } => "explode",
            Node::Union { .. } => "union",
            Node::Changelog { .. } => "changelog",
        }
    }

    /// Ids of the nodes this one reads.
    pub fn inputs(&self) -> Vec<usize> {
        match self {
            Node::Input { .. } => vec![],
            Node::Union { inputs, .. } => inputs.clone(),
            Node::Filter { input, .. }
            | Node::Assign { input, .. }
            | Node::Transform { input, .. }
            | Node::Select { input, .. }
            | Node::Drop { input, .. }
            | Node::Rename { input, .. }
            | Node::DropNull { input, .. }
            | Node::Join { input, .. }
            | Node::Aggregate { input, .. }
            | Node::First { input, .. }
            | Node::Latest { input, .. }
            | Node::Dedup { input, .. }
            | Node::Explode { input, .. }
            | Node::Changelog { input, .. } => vec![*input],
        }
    }
}

/// A featureset definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Featureset {
    pub name: String,
    pub features: Vec<Feature>,
    #[serde(default)]
    pub extractors: Vec<Extractor>,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub meta: Option<Value>,
}

/// A feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Feature {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: Type,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExtractorKind {
    Lookup,
    Alias,
    Expr,
    Python,
}

/// An extractor: computes `outputs` from `inputs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Extractor {
    pub name: String,
    pub kind: ExtractorKind,
    /// Qualified input features (`Featureset.feature`).
    #[serde(default)]
    pub inputs: Vec<String>,
    /// Output features of this featureset (unqualified).
    pub outputs: Vec<String>,
    /// Datasets the extractor reads.
    #[serde(default)]
    pub deps: Vec<String>,
    #[serde(default = "one")]
    pub version: u32,
    /// lookup: the dataset and field read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// lookup: the value when the key is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// expr: the expression over this featureset's features.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expr: Option<Expr>,
    /// python: the function's source text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Env>,
}

/// The JSON Schema of [`Commit`] (what `docs/commit-payload.schema.json`
/// holds).
pub fn json_schema() -> Value {
    let mut s = serde_json::to_value(schemars::schema_for!(Commit)).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut s {
        m.insert(
            "title".into(),
            Value::String("Thyme commit payload, version 1".into()),
        );
    }
    s
}
