//! Tests of the aggregation operator, each file on its own subject; they
//! run the operator directly and, where state is stored, on the in-memory
//! store (`thyme_storage::memory`).

use std::sync::Arc;

use thyme_table::catalog::Dataset;
use thyme_table::types::DType;

mod cursor;
mod oracle;
mod session;
mod state;

/// The keyed output dataset `out` (key `k`, time `ts`) the operator tests
/// write: `fields` are (name, type, nullable).
pub(super) fn test_output(fields: &[(&str, DType, bool)]) -> Arc<Dataset> {
    use thyme_table::catalog::{DatasetDef, FieldDef};
    let fields = fields
        .iter()
        .map(|(name, dtype, nullable)| FieldDef {
            name: name.to_string(),
            dtype: *dtype,
            nullable: *nullable,
        })
        .collect();
    Arc::new(
        Dataset::new(
            1,
            DatasetDef {
                name: "out".into(),
                fields,
                keys: vec!["k".into()],
                timestamp: "ts".into(),
                version: 1,
                index: true,
                decay: vec![],
            },
        )
        .expect("dataset"),
    )
}
