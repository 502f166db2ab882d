//! `rename`: rename columns (renaming the event-time column moves the
//! flow's event time with it).

use std::collections::BTreeMap;

use thyme_table::error::Result;

use crate::flow::Flow;

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
