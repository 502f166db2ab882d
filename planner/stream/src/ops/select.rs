//! `select`: keep the named columns, in the input's order; the event-time
//! column is always kept.

use thyme_table::error::Result;

use crate::flow::Flow;

/// `select`.
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
