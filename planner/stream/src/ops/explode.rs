//! `explode`: one row per element of the list columns, zipped; an empty or
//! null list gives one row of nulls. The elements of one row keep its
//! input order, one after another.

use arrow::array::{Array, ListArray, UInt32Array, UInt64Array};
use arrow::compute::take;
use arrow::datatypes::Field;
use thyme_table::error::{Error, Result};

use crate::flow::arrow_err;
use crate::flow::Flow;

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
