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
//! [`lookup_rows`] is the batch form the feature server uses: one key and
//! one read time per row, answered with one multi-key seek per distinct
//! read time.

use std::any::Any;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, UInt32Array};
use arrow::compute::take;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::common::{Column, ParamValues, ScalarValue};
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::{BinaryExpr, Expr, LogicalPlan, Operator};

use crate::catalog::Dataset;
use crate::codec::{encode_key_scalar, Col, RowDecoder};
use crate::error::{Error, Result};
use crate::provider::{split_conjunction, DatasetTable, View};
use thyme_storage::TemporalStore;

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

/// Read a keyed dataset for many rows: row `i` gets the version of key
/// `(keys[0][i], keys[1][i], ...)` with the greatest event time `<= ts[i]`
/// (decayed fields as read at `ts[i]`). Returns the `projection` fields
/// (dataset positions), null where the key is absent (never written, a
/// delete, or a null key value), and whether each row was found. One read
/// cursor serves all rows, visited in key then time order.
pub fn lookup_rows(
    store: &dyn TemporalStore,
    ds: &Dataset,
    keys: &[ArrayRef],
    ts: &[i64],
    projection: &[usize],
) -> Result<(RecordBatch, Vec<bool>)> {
    let n = ts.len();
    if keys.len() != ds.key_indices().len() {
        return Err(Error::Internal(format!(
            "lookup of {}: {} key columns for {} key fields",
            ds.name(),
            keys.len(),
            ds.key_indices().len()
        )));
    }
    // Keys cast to the key fields' types, encoded into one buffer.
    let mut cast_keys = Vec::with_capacity(keys.len());
    for (k, &fi) in keys.iter().zip(ds.key_indices()) {
        if k.len() != n {
            return Err(Error::Internal(
                "lookup: key and time lengths differ".into(),
            ));
        }
        let target = ds.fields()[fi].dtype.arrow();
        let c = if k.data_type() == &target {
            k.clone()
        } else {
            arrow::compute::cast(k, &target)?
        };
        cast_keys.push(c);
    }
    let cols = cast_keys
        .iter()
        .zip(ds.key_indices())
        .map(|(a, &fi)| Col::new(ds.fields()[fi].dtype, a))
        .collect::<Result<Vec<_>>>()?;
    let mut buf: Vec<u8> = Vec::with_capacity(n * 16);
    let mut ends: Vec<usize> = Vec::with_capacity(n);
    let mut valid = vec![true; n];
    for (i, ok) in valid.iter_mut().enumerate() {
        for c in &cols {
            if c.is_null(i) {
                *ok = false;
            } else {
                c.encode_key(i, &mut buf);
            }
        }
        ends.push(buf.len());
    }
    let key_of = |i: usize| &buf[if i == 0 { 0 } else { ends[i - 1] }..ends[i]];
    let mut order: Vec<u32> = (0..n as u32).filter(|&i| valid[i as usize]).collect();
    let one_time = ts.windows(2).all(|w| w[0] == w[1]);
    if !one_time {
        // Ordered by key, then time: neighbouring reads share blocks.
        order.sort_unstable_by(|&a, &b| {
            key_of(a as usize)
                .cmp(key_of(b as usize))
                .then(ts[a as usize].cmp(&ts[b as usize]))
        });
    }
    let schema = Arc::new(arrow::datatypes::Schema::new(
        projection
            .iter()
            .map(|&p| {
                let f = &ds.fields()[p];
                arrow::datatypes::Field::new(&f.name, f.dtype.arrow(), true)
            })
            .collect::<Vec<_>>(),
    ));
    let mut decoder = RowDecoder::new(ds, projection, schema, n);
    let mut slot: Vec<Option<u32>> = vec![None; n];
    let decay = ds.decay();
    let refs: Vec<&[u8]> = order.iter().map(|&i| key_of(i as usize)).collect();
    let mut err = None;
    let mut visit = |j: usize, v: Option<thyme_storage::VersionRef<'_>>| {
        let Some(v) = v else { return };
        if v.deleted || err.is_some() {
            return;
        }
        let row = order[j] as usize;
        let res = if decay.is_empty() {
            decoder.append(v.value)
        } else {
            decay
                .apply(ds, v.value, ts[row])
                .and_then(|r| decoder.append(&r))
        };
        match res {
            Ok(()) => slot[row] = Some(decoder.len() as u32 - 1),
            Err(e) => err = Some(e),
        }
    };
    if let Some(&first) = order.first() {
        if one_time {
            // The online case: every row read now (or at one time).
            store.get_as_of(ds.id, &refs, ts[first as usize], &mut visit)?;
        } else {
            let times: Vec<i64> = order.iter().map(|&i| ts[i as usize]).collect();
            store.get_as_of_each(ds.id, &refs, &times, &mut visit)?;
        }
    }
    if let Some(e) = err {
        return Err(e);
    }
    let dense = decoder.finish(vec![])?;
    let found: Vec<bool> = slot.iter().map(Option::is_some).collect();
    let indices = UInt32Array::from(slot);
    let columns = dense
        .columns()
        .iter()
        .map(|c| take(c.as_ref(), &indices, None).map_err(Error::from))
        .collect::<Result<Vec<ArrayRef>>>()?;
    let opts = arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(n));
    let batch = RecordBatch::try_new_with_options(dense.schema(), columns, &opts)?;
    debug_assert!(batch.columns().iter().all(|c| c.len() == n));
    Ok((batch, found))
}
