//! The point-lookup fast path.
//!
//! `SELECT <columns> FROM t WHERE k1 = $1 [AND k2 = ...]`, with every key
//! field bound to a parameter or a literal and nothing else in the query, is
//! the online-serving shape. Such statements are recognised once, when they
//! are prepared, and executed without DataFusion: bind the key, one seek in
//! the temporal store as of the query time, decode the projected fields.
//! Anything else (other predicates, expressions, joins, aliases) takes the
//! general DataFusion path, which gives the same answer.
//!
//! Its batch counterpart, `thyme_table::read::lookup_rows`, is the store
//! read that featuresets, pipeline joins and ASOF seeks use.

use std::any::Any;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::common::{Column, ParamValues, ScalarValue};
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::{BinaryExpr, Expr, LogicalPlan, Operator};

use crate::provider::{split_conjunction, DatasetTable, View};
use thyme_storage::TemporalStore;
use thyme_table::catalog::Dataset;
use thyme_table::codec::{encode_key_scalar, RowDecoder};
use thyme_table::error::{Error, Result};

/// Where a key field's value comes from.
#[derive(Debug, Clone)]
enum KeyValue {
    Param(String),
    Literal(ScalarValue),
}

/// A prepared point lookup.
#[derive(Debug, Clone)]
pub struct PointLookup {
    ds: Arc<Dataset>,
    /// One entry per key field, in key order.
    key: Vec<KeyValue>,
    /// Dataset field positions of the output columns.
    projection: Vec<usize>,
    schema: SchemaRef,
}

fn column_of(e: &Expr) -> Option<&Column> {
    match e {
        Expr::Column(c) => Some(c),
        _ => None,
    }
}

fn value_of(e: &Expr) -> Option<KeyValue> {
    match e {
        Expr::Placeholder(p) => Some(KeyValue::Param(p.id.clone())),
        Expr::Literal(v, _) if !v.is_null() => Some(KeyValue::Literal(v.clone())),
        Expr::Cast(c) => value_of(&c.expr),
        _ => None,
    }
}

impl PointLookup {
    /// Recognise the point-lookup shape in an (unoptimized) logical plan.
    pub fn recognise(plan: &LogicalPlan) -> Option<PointLookup> {
        let LogicalPlan::Projection(proj) = plan else {
            return None;
        };
        let LogicalPlan::Filter(filter) = proj.input.as_ref() else {
            return None;
        };
        let LogicalPlan::TableScan(scan) = filter.input.as_ref() else {
            return None;
        };
        if !scan.filters.is_empty() || scan.fetch.is_some() || scan.projection.is_some() {
            return None;
        }
        let provider = source_as_provider(&scan.source).ok()?;
        let any: &dyn Any = provider.as_ref();
        let table = any.downcast_ref::<DatasetTable>()?;
        if table.view() != View::Current || table.pinned_as_of().is_some() {
            return None;
        }
        let ds = table.dataset().clone();
        if !ds.is_keyed() {
            return None;
        }
        let field_index = |c: &Column| ds.fields().iter().position(|f| f.name == c.name);
        let mut projection = Vec::with_capacity(proj.expr.len());
        for e in &proj.expr {
            projection.push(field_index(column_of(e)?)?);
        }
        let parts = split_conjunction(&filter.predicate);
        let mut key: Vec<Option<KeyValue>> = vec![None; ds.key_indices().len()];
        for p in parts {
            let Expr::BinaryExpr(BinaryExpr {
                left,
                op: Operator::Eq,
                right,
            }) = p
            else {
                return None;
            };
            let (col, val) = match (column_of(left), column_of(right)) {
                (Some(c), None) => (c, value_of(right)?),
                (None, Some(c)) => (c, value_of(left)?),
                _ => return None,
            };
            let f = field_index(col)?;
            let k = ds.key_indices().iter().position(|&i| i == f)?;
            if key[k].is_some() {
                return None;
            }
            key[k] = Some(val);
        }
        let key: Option<Vec<KeyValue>> = key.into_iter().collect();
        Some(PointLookup {
            ds,
            key: key?,
            projection,
            schema: Arc::new(plan.schema().as_arrow().clone()),
        })
    }

    /// Run the lookup as of `as_of` with bound `params`.
    pub fn execute(
        &self,
        store: &dyn TemporalStore,
        as_of: i64,
        params: Option<&ParamValues>,
    ) -> Result<RecordBatch> {
        let mut key = Vec::with_capacity(32);
        let mut matches = true;
        for (k, v) in self.key.iter().enumerate() {
            let scalar = match v {
                KeyValue::Literal(s) => s.clone(),
                KeyValue::Param(id) => {
                    let p = params
                        .ok_or_else(|| Error::Syntax(format!("parameter {id} was not bound")))?;
                    p.get_placeholders_with_values(id)?.value
                }
            };
            let dtype = self.ds.fields()[self.ds.key_indices()[k]].dtype;
            if scalar.is_null() || encode_key_scalar(dtype, &scalar, &mut key).is_none() {
                matches = false;
                break;
            }
        }
        let mut decoder = RowDecoder::new(&self.ds, &self.projection, self.schema.clone(), 1);
        if matches {
            let mut err = None;
            let decay = self.ds.decay();
            store.get_as_of(self.ds.id, &[key.as_slice()], as_of, &mut |_, v| {
                if let Some(v) = v {
                    if !v.deleted {
                        let res = if decay.is_empty() {
                            decoder.append(v.value)
                        } else {
                            decay
                                .apply(&self.ds, v.value, as_of)
                                .and_then(|row| decoder.append(&row))
                        };
                        if let Err(e) = res {
                            err = Some(e);
                        }
                    }
                }
            })?;
            if let Some(e) = err {
                return Err(e);
            }
        }
        decoder.finish(vec![])
    }
}
