//! `join`: the as-of join with a keyed dataset. Each left row meets the
//! right row of its key as of the left row's event time (plus `after`), if
//! that row is no older than `before` (the `within` bounds); an inner join
//! drops the rows that meet none, a left join keeps them with nulls. The
//! right rows are read in one batched store lookup per flow.

use std::sync::Arc;

use arrow::array::UInt32Array;
use arrow::compute::take;
use thyme_model::payload::{JoinHow, Node};
use thyme_model::validate::{join_columns, Schema};
use thyme_table::catalog::{Catalog, Dataset};
use thyme_table::error::{Error, Result};

use super::{micros, OpEnv};
use crate::flow::arrow_err;
use crate::flow::Flow;

/// The as-of join (see the module docs).
pub struct JoinOp {
    right: Arc<Dataset>,
    /// Left column of each right key field, in key order.
    left_keys: Vec<String>,
    /// Right fields brought in, by position in the right dataset.
    fields: Vec<usize>,
    how: JoinHow,
    before: Option<i64>,
    after: i64,
}

impl JoinOp {
    /// The join of a `join` node, whose output schema is `node` and
    /// input's `left`.
    pub fn new(catalog: &Catalog, n: &Node, node: &Schema, left: &Schema) -> Result<Self> {
        let Node::Join {
            dataset,
            how,
            on,
            left_on,
            right_on,
            within,
            ..
        } = n
        else {
            return Err(Error::Internal(format!("{} is not a join", n.op())));
        };
        let what = |e: String| Error::InvalidDefinition(format!("join with {dataset}: {e}"));
        let sql = thyme_model::snake_case(dataset);
        let right = catalog
            .get(&sql)
            .ok_or_else(|| Error::UnknownTable(sql.clone()))?;
        let (lcols, rcols) = join_columns(on, left_on, right_on).map_err(|e| what(e.into()))?;
        let left_keys = right
            .key_indices()
            .iter()
            .map(|&k| {
                let name = &right.fields()[k].name;
                rcols
                    .iter()
                    .position(|r| r == name)
                    .map(|i| lcols[i].clone())
                    .ok_or_else(|| what(format!("key {name} is not joined on")))
            })
            .collect::<Result<Vec<_>>>()?;
        // The right fields brought in: what the node's schema adds to its
        // input's, in its order.
        let fields = node
            .fields
            .iter()
            .filter(|(f, _)| left.get(f).is_none())
            .map(|(f, _)| {
                right
                    .fields()
                    .iter()
                    .position(|x| &x.name == f)
                    .ok_or_else(|| what(format!("no field {f}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let (before, after) = match within {
            Some((b, a)) => (micros(b)?, micros(a)?.unwrap_or(i64::MAX)),
            None => (None, 0),
        };
        Ok(JoinOp {
            right,
            left_keys,
            fields,
            how: *how,
            before,
            after,
        })
    }

    pub fn apply(&self, env: &OpEnv, f: &Flow) -> Result<Flow> {
        let ts = f.ts()?;
        let mut projection = self.fields.clone();
        projection.push(self.right.ts_index());
        let key_cols =
            self.left_keys
                .iter()
                .map(|c| {
                    f.batch.column_by_name(c).cloned().ok_or_else(|| {
                        Error::InvalidDefinition(format!("join: no left column {c}"))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
        // Every left row's key read as of its event time (plus `after`).
        let read_at: Vec<i64> = ts.iter().map(|&t| t.saturating_add(self.after)).collect();
        let (right, found) = thyme_table::read::lookup_rows(
            env.store.as_ref(),
            &self.right,
            &key_cols,
            &read_at,
            &projection,
        )?;
        let right_ts = right
            .column(self.fields.len())
            .as_any()
            .downcast_ref::<arrow::array::TimestampMicrosecondArray>()
            .ok_or_else(|| Error::Internal("join: right event time column".into()))?;
        let mut left_idx: Vec<u32> = Vec::with_capacity(f.len());
        let mut right_idx: Vec<Option<u32>> = Vec::with_capacity(f.len());
        for (r, &t) in ts.iter().enumerate() {
            let matched = found[r]
                && self
                    .before
                    .is_none_or(|b| right_ts.value(r) >= t.saturating_sub(b));
            match (matched, self.how) {
                (false, JoinHow::Inner) => {}
                (m, _) => {
                    left_idx.push(r as u32);
                    right_idx.push(m.then_some(r as u32));
                }
            }
        }
        let base = f.take(&UInt32Array::from(left_idx))?;
        let (mut fields, mut cols) = base.parts();
        let ridx = UInt32Array::from(right_idx);
        let rschema = right.schema();
        for (j, field) in rschema.fields().iter().enumerate().take(self.fields.len()) {
            let c = take(right.column(j), &ridx, None).map_err(arrow_err)?;
            match fields.iter().position(|x| x.name() == field.name()) {
                Some(p) => {
                    fields[p] = field.as_ref().clone();
                    cols[p] = c;
                }
                None => {
                    fields.push(field.as_ref().clone());
                    cols.push(c);
                }
            }
        }
        base.with_columns(fields, cols)
    }
}
