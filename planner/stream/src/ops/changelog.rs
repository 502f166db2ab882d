//! `changelog`: a keyed stream's upserts and deletes as plain events, with
//! a boolean column saying which were deletes.

use std::sync::Arc;

use arrow::array::BooleanArray;
use arrow::datatypes::{DataType, Field};
use thyme_table::error::Result;

use crate::flow::Flow;

/// `changelog`: a keyed stream's upserts and deletes as events with a
/// boolean delete column.
pub fn changelog(f: &Flow, delete_column: &str) -> Result<Flow> {
    let (mut fields, mut cols) = f.parts();
    fields.push(Field::new(delete_column, DataType::Boolean, false));
    cols.push(Arc::new(f.del.clone()));
    let mut out = f.with_columns(fields, cols)?;
    out.del = BooleanArray::from(vec![false; f.len()]);
    Ok(out)
}
