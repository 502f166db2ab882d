//! `thyme._native`: the Rust half of the `thyme` Python package. It exposes
//! the server's own definition rules (the `thyme-model` crate) so that the
//! SDK judges a feature file exactly as the control plane will:
//!
//! - `validate_commit(payload_json, existing_json=None)`: every commit rule;
//!   raises `ValueError` naming the definition and field at fault;
//! - `check_columns(dataset_json, data_json, preproc_json=None)`: ingestion
//!   data against a dataset's schema; raises `ValueError` naming the row,
//!   field and value; returns the number of rows;
//! - `type_name(type_json)`: a type as Python writes it;
//! - `snake_case(name)`: the SQL name of a class;
//! - `node_schema(node_json, inputs_json, joined_name=None, joined_json=None)`:
//!   the output schema of one pipeline operator (the model's schema rules,
//!   the same the control plane and the stream engine use), or `None` when
//!   the rules leave it undefined (their problems are reported by
//!   `validate_commit`);
//! - `parse_duration(s)`: microseconds (`None` for `"forever"`);
//! - `json_schema()`: the payload's JSON Schema.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use serde_json::{Map, Value};
use thyme_model::payload::{Commit, Dataset, Featureset, Preproc};

fn value_error(msg: impl Into<String>) -> PyErr {
    PyValueError::new_err(msg.into())
}

/// Validate a commit payload (JSON text). `existing_json` is an optional
/// `{"datasets": [...], "featuresets": [...]}` of definitions committed
/// before, for incremental commits.
#[pyfunction]
#[pyo3(signature = (payload_json, existing_json=None))]
fn validate_commit(payload_json: &str, existing_json: Option<&str>) -> PyResult<()> {
    let commit: Commit = serde_json::from_str(payload_json)
        .map_err(|e| value_error(format!("invalid commit payload: {e}")))?;
    #[derive(serde::Deserialize, Default)]
    struct Existing {
        #[serde(default)]
        datasets: Vec<Dataset>,
        #[serde(default)]
        featuresets: Vec<Featureset>,
    }
    let existing: Existing = match existing_json {
        None => Existing::default(),
        Some(s) => serde_json::from_str(s)
            .map_err(|e| value_error(format!("invalid existing definitions: {e}")))?,
    };
    thyme_model::validate(&commit, &existing.datasets, &existing.featuresets)
        .map_err(|p| value_error(p.to_string()))
}

/// Check column-oriented data (`{column: [values]}`) against a dataset
/// definition; returns the number of rows.
#[pyfunction]
#[pyo3(signature = (dataset_json, data_json, preproc_json=None))]
fn check_columns(
    dataset_json: &str,
    data_json: &str,
    preproc_json: Option<&str>,
) -> PyResult<usize> {
    let ds: Dataset = serde_json::from_str(dataset_json)
        .map_err(|e| value_error(format!("invalid dataset definition: {e}")))?;
    let data: Map<String, Value> = serde_json::from_str(data_json)
        .map_err(|e| value_error(format!("data must be a JSON object of columns: {e}")))?;
    let preproc: Option<std::collections::BTreeMap<String, Preproc>> = preproc_json
        .map(serde_json::from_str)
        .transpose()
        .map_err(|e| value_error(format!("invalid preproc: {e}")))?;
    let (cols, rows) = thyme_model::columns::resolve(&ds, preproc.as_ref(), &data)
        .map_err(|e| value_error(e.message))?;
    thyme_model::columns::check(&ds, &cols, rows).map_err(|e| value_error(e.message))?;
    Ok(rows)
}

/// A type (JSON text) as Python writes it, e.g. `Optional[List[int]]`.
#[pyfunction]
fn type_name(type_json: &str) -> PyResult<String> {
    let v: Value = serde_json::from_str(type_json).map_err(|e| value_error(e.to_string()))?;
    thyme_model::Type::from_json(&v)
        .map(|t| t.to_string())
        .map_err(value_error)
}

/// The SQL name of a class name (`UserStats` -> `user_stats`).
#[pyfunction]
fn snake_case(name: &str) -> String {
    thyme_model::snake_case(name)
}

/// The output schema of one pipeline node (JSON text) reading
/// `inputs_json` (a JSON list of schemas, in the node's input order);
/// `joined_name` / `joined_json`: the dataset a join reads and its schema.
/// Returns the schema (JSON text), or `None` when no schema follows (the
/// problems are `validate_commit`'s to report, with the pipeline named).
#[pyfunction]
#[pyo3(signature = (node_json, inputs_json, joined_name=None, joined_json=None))]
fn node_schema(
    node_json: &str,
    inputs_json: &str,
    joined_name: Option<&str>,
    joined_json: Option<&str>,
) -> PyResult<Option<String>> {
    use thyme_model::validate::Schema;
    let node: thyme_model::payload::Node = serde_json::from_str(node_json)
        .map_err(|e| value_error(format!("invalid pipeline node: {e}")))?;
    let inputs: Vec<Schema> = serde_json::from_str(inputs_json)
        .map_err(|e| value_error(format!("invalid input schemas: {e}")))?;
    let joined: Option<Schema> = joined_json
        .map(serde_json::from_str)
        .transpose()
        .map_err(|e| value_error(format!("invalid joined schema: {e}")))?;
    let joined = match (joined_name, &joined) {
        (Some(n), Some(s)) => Some((n, s)),
        _ => None,
    };
    let (out, _problems) = thyme_model::validate::node_schema(&node, &inputs, joined);
    out.map(|s| serde_json::to_string(&s))
        .transpose()
        .map_err(|e| value_error(e.to_string()))
}

/// Microseconds of a duration string; `None` for `"forever"`.
#[pyfunction]
fn parse_duration(s: &str) -> PyResult<Option<i64>> {
    thyme_model::duration::parse(s)
        .map(thyme_model::duration::Duration::micros)
        .map_err(value_error)
}

/// The commit payload's JSON Schema (JSON text).
#[pyfunction]
fn json_schema() -> String {
    serde_json::to_string_pretty(&thyme_model::payload::json_schema()).unwrap_or_default()
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(validate_commit, m)?)?;
    m.add_function(wrap_pyfunction!(check_columns, m)?)?;
    m.add_function(wrap_pyfunction!(type_name, m)?)?;
    m.add_function(wrap_pyfunction!(snake_case, m)?)?;
    m.add_function(wrap_pyfunction!(parse_duration, m)?)?;
    m.add_function(wrap_pyfunction!(node_schema, m)?)?;
    m.add_function(wrap_pyfunction!(json_schema, m)?)?;
    m.add("SCHEMA_VERSION", thyme_model::payload::SCHEMA_VERSION)?;
    Ok(())
}
