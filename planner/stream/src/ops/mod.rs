//! The row-at-a-batch pipeline operators: `filter`, `assign`, `select`,
//! `drop`, `rename`, `dropnull`, `explode`, `union`, `changelog` and the
//! as-of `join` with a keyed dataset.
//!
//! Data moves between operators as a [`Flow`]: an Arrow batch of the
//! operator's schema plus, per row, its input order (`seq`, which orders
//! equal timestamps and survives restarts) and whether it is a delete.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, ListArray, UInt32Array, UInt64Array};
use arrow::compute::{filter_record_batch, take};
use arrow::datatypes::{Field, Schema};
use arrow::record_batch::RecordBatch;
use thyme_model::payload::JoinHow;
use thyme_storage::TemporalStore;

use thyme_table::catalog::Dataset;
use thyme_table::error::{Error, Result};

/// Rows moving between operators.
#[derive(Debug, Clone)]
pub struct Flow {
    pub batch: RecordBatch,
    pub seq: UInt64Array,
    pub del: BooleanArray,
    /// Name of the event-time column.
    pub ts_col: String,
}

fn arrow_err(e: arrow::error::ArrowError) -> Error {
    Error::Internal(e.to_string())
}

fn u64s(a: ArrayRef) -> UInt64Array {
    a.as_any()
        .downcast_ref::<UInt64Array>()
        .expect("u64 column")
        .clone()
}

fn bools(a: ArrayRef) -> BooleanArray {
    a.as_any()
        .downcast_ref::<BooleanArray>()
        .expect("bool column")
        .clone()
}

impl Flow {
    pub fn len(&self) -> usize {
        self.batch.num_rows()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Event times, microseconds.
    pub fn ts(&self) -> Result<Vec<i64>> {
        let c = self
            .batch
            .column_by_name(&self.ts_col)
            .ok_or_else(|| Error::Internal(format!("no timestamp column {}", self.ts_col)))?;
        let c = arrow::compute::cast(c, &arrow::datatypes::DataType::Int64).map_err(arrow_err)?;
        let c = c
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .expect("int64");
        Ok(c.iter().map(|v| v.unwrap_or(i64::MIN)).collect())
    }

    pub fn filter(&self, mask: &BooleanArray) -> Result<Flow> {
        let f = |a: &dyn Array| arrow::compute::filter(a, mask).map_err(arrow_err);
        Ok(Flow {
            batch: filter_record_batch(&self.batch, mask).map_err(arrow_err)?,
            seq: u64s(f(&self.seq)?),
            del: bools(f(&self.del)?),
            ts_col: self.ts_col.clone(),
        })
    }

    pub fn take(&self, idx: &UInt32Array) -> Result<Flow> {
        let cols = self
            .batch
            .columns()
            .iter()
            .map(|c| take(c, idx, None))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(arrow_err)?;
        Ok(Flow {
            batch: RecordBatch::try_new(self.batch.schema(), cols).map_err(arrow_err)?,
            seq: u64s(take(&self.seq, idx, None).map_err(arrow_err)?),
            del: bools(take(&self.del, idx, None).map_err(arrow_err)?),
            ts_col: self.ts_col.clone(),
        })
    }

    /// Same rows, other columns.
    pub fn with_columns(&self, fields: Vec<Field>, cols: Vec<ArrayRef>) -> Result<Flow> {
        let schema = Arc::new(Schema::new(fields));
        let opts = arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(self.len()));
        Ok(Flow {
            batch: RecordBatch::try_new_with_options(schema, cols, &opts).map_err(arrow_err)?,
            seq: self.seq.clone(),
            del: self.del.clone(),
            ts_col: self.ts_col.clone(),
        })
    }

    fn parts(&self) -> (Vec<Field>, Vec<ArrayRef>) {
        (
            self.batch
                .schema()
                .fields()
                .iter()
                .map(|f| f.as_ref().clone())
                .collect(),
            self.batch.columns().to_vec(),
        )
    }
}

/// A boolean mask with nulls as false.
pub fn mask(a: &ArrayRef) -> Result<BooleanArray> {
    let b = a.as_any().downcast_ref::<BooleanArray>().ok_or_else(|| {
        Error::InvalidDefinition(format!(
            "a filter must give booleans, not {}",
            a.data_type()
        ))
    })?;
    Ok(if b.null_count() > 0 {
        arrow::compute::prep_null_mask_filter(b)
    } else {
        b.clone()
    })
}

/// `assign`: add or replace columns.
pub fn assign(f: &Flow, new: Vec<(String, ArrayRef)>) -> Result<Flow> {
    let (mut fields, mut cols) = f.parts();
    for (name, a) in new {
        let field = Field::new(&name, a.data_type().clone(), true);
        match fields.iter().position(|x| x.name() == &name) {
            Some(i) => {
                fields[i] = field;
                cols[i] = a;
            }
            None => {
                fields.push(field);
                cols.push(a);
            }
        }
    }
    f.with_columns(fields, cols)
}

/// `select` (the event-time column is always kept).
pub fn select(f: &Flow, columns: &[String]) -> Result<Flow> {
    let (fields, cols) = f.parts();
    let keep: Vec<usize> = (0..fields.len())
        .filter(|&i| columns.contains(fields[i].name()) || fields[i].name() == &f.ts_col)
        .collect();
    f.with_columns(
        keep.iter().map(|&i| fields[i].clone()).collect(),
        keep.iter().map(|&i| cols[i].clone()).collect(),
    )
}

/// `drop`.
pub fn drop(f: &Flow, columns: &[String]) -> Result<Flow> {
    let (fields, cols) = f.parts();
    let keep: Vec<usize> = (0..fields.len())
        .filter(|&i| !columns.contains(fields[i].name()))
        .collect();
    f.with_columns(
        keep.iter().map(|&i| fields[i].clone()).collect(),
        keep.iter().map(|&i| cols[i].clone()).collect(),
    )
}

/// `rename`.
pub fn rename(f: &Flow, columns: &BTreeMap<String, String>) -> Result<Flow> {
    let (fields, cols) = f.parts();
    let fields = fields
        .into_iter()
        .map(|x| match columns.get(x.name()) {
            Some(n) => x.with_name(n),
            None => x,
        })
        .collect();
    let mut out = f.with_columns(fields, cols)?;
    if let Some(n) = columns.get(&f.ts_col) {
        out.ts_col = n.clone();
    }
    Ok(out)
}

/// `dropnull`: rows with a null in any of `columns` (default: every column)
/// are dropped.
pub fn dropnull(f: &Flow, columns: Option<&[String]>) -> Result<Flow> {
    let mut keep = vec![true; f.len()];
    for (i, field) in f.batch.schema().fields().iter().enumerate() {
        if columns.is_some_and(|c| !c.contains(field.name())) {
            continue;
        }
        let c = f.batch.column(i);
        if c.null_count() == 0 {
            continue;
        }
        for (r, k) in keep.iter_mut().enumerate() {
            if c.is_null(r) {
                *k = false;
            }
        }
    }
    f.filter(&BooleanArray::from(keep))
}

/// `explode`: one row per element of the list columns (zipped; an empty or
/// null list gives one row of nulls).
pub fn explode(f: &Flow, columns: &[String]) -> Result<Flow> {
    let schema = f.batch.schema();
    let lists: Vec<(usize, &ListArray)> = columns
        .iter()
        .map(|c| {
            let i = schema
                .index_of(c)
                .map_err(|_| Error::InvalidDefinition(format!("explode: no column {c}")))?;
            let l = f
                .batch
                .column(i)
                .as_any()
                .downcast_ref::<ListArray>()
                .ok_or_else(|| {
                    Error::InvalidDefinition(format!("explode: column {c} is not a list"))
                })?;
            Ok((i, l))
        })
        .collect::<Result<_>>()?;
    let mut rows = Vec::new();
    let mut subs: Vec<u64> = Vec::new();
    let mut elems: Vec<Vec<Option<u32>>> = vec![Vec::new(); lists.len()];
    for r in 0..f.len() {
        let n = lists
            .iter()
            .map(|(_, l)| {
                if l.is_null(r) {
                    0
                } else {
                    l.value_length(r) as usize
                }
            })
            .max()
            .unwrap_or(0);
        for k in 0..n.max(1) {
            rows.push(r as u32);
            subs.push(k as u64);
            for (j, (_, l)) in lists.iter().enumerate() {
                let len = if l.is_null(r) {
                    0
                } else {
                    l.value_length(r) as usize
                };
                elems[j].push((k < len).then(|| l.value_offsets()[r] as u32 + k as u32));
            }
        }
    }
    let mut base = f.take(&UInt32Array::from(rows))?;
    // Elements of one row keep its input order, one after another.
    base.seq =
        UInt64Array::from_iter_values(base.seq.values().iter().zip(&subs).map(|(s, k)| s + k));
    let (mut fields, mut cols) = base.parts();
    for (j, (i, l)) in lists.iter().enumerate() {
        let idx = UInt32Array::from(std::mem::take(&mut elems[j]));
        let values = take(l.values(), &idx, None).map_err(arrow_err)?;
        fields[*i] = Field::new(fields[*i].name(), values.data_type().clone(), true);
        cols[*i] = values;
    }
    base.with_columns(fields, cols)
}

/// `union`: the rows of every input, columns in the first input's order.
pub fn union(flows: &[Flow]) -> Result<Flow> {
    let first = &flows[0];
    let schema = first.batch.schema();
    let mut batches = Vec::with_capacity(flows.len());
    for f in flows {
        let cols = schema
            .fields()
            .iter()
            .map(|field| {
                let c = f.batch.column_by_name(field.name()).ok_or_else(|| {
                    Error::InvalidDefinition(format!(
                        "union: an input has no column {}",
                        field.name()
                    ))
                })?;
                arrow::compute::cast(c, field.data_type()).map_err(arrow_err)
            })
            .collect::<Result<Vec<_>>>()?;
        batches.push(RecordBatch::try_new(schema.clone(), cols).map_err(arrow_err)?);
    }
    let batch = arrow::compute::concat_batches(&schema, &batches).map_err(arrow_err)?;
    let seq: Vec<&dyn Array> = flows.iter().map(|f| &f.seq as &dyn Array).collect();
    let del: Vec<&dyn Array> = flows.iter().map(|f| &f.del as &dyn Array).collect();
    Ok(Flow {
        batch,
        seq: u64s(arrow::compute::concat(&seq).map_err(arrow_err)?),
        del: bools(arrow::compute::concat(&del).map_err(arrow_err)?),
        ts_col: first.ts_col.clone(),
    })
}

/// `changelog`: a keyed stream's upserts and deletes as events with a
/// boolean delete column.
pub fn changelog(f: &Flow, delete_column: &str) -> Result<Flow> {
    let (mut fields, mut cols) = f.parts();
    fields.push(Field::new(
        delete_column,
        arrow::datatypes::DataType::Boolean,
        false,
    ));
    cols.push(Arc::new(f.del.clone()));
    let mut out = f.with_columns(fields, cols)?;
    out.del = BooleanArray::from(vec![false; f.len()]);
    Ok(out)
}

/// The as-of join with a keyed dataset: each left row meets the right row
/// of its key as of the left row's event time (plus `after`), if that row
/// is no older than `before` (the `within` bounds).
pub struct JoinOp {
    pub right: Arc<Dataset>,
    /// Left column of each right key field, in key order.
    pub left_keys: Vec<String>,
    /// Right fields brought in, by position in the right dataset.
    pub fields: Vec<usize>,
    pub how: JoinHow,
    pub before: Option<i64>,
    pub after: i64,
}

impl JoinOp {
    pub fn execute(&self, store: &dyn TemporalStore, f: &Flow) -> Result<Flow> {
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
        let (right, found) =
            thyme_table::read::lookup_rows(store, &self.right, &key_cols, &read_at, &projection)?;
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
