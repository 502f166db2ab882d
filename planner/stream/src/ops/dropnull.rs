//! `dropnull`: drop the rows with a null in any of the named columns
//! (default: every column).

use arrow::array::{Array, BooleanArray};
use thyme_table::error::Result;

use crate::flow::Flow;

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
