//! `drop`: remove the named columns.

use thyme_table::error::Result;

use crate::flow::Flow;

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
