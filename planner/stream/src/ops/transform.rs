//! `transform`: a Python function from a pandas frame to a frame, called on
//! each batch. A result with as many rows as the input keeps their order
//! and deletes; one of another length is new rows, in its order, after the
//! batch's first.

use arrow::array::{BooleanArray, UInt64Array};
use arrow::datatypes::{Field, Schema, SchemaRef};
use std::sync::Arc;
use thyme_model::payload::Func;
use thyme_model::validate::Schema as NodeSchema;
use thyme_table::error::{Error, Result};

use super::OpEnv;
use crate::flow::Flow;

pub struct TransformOp {
    func: Func,
    /// The result's Arrow schema; `None`: the input's (the node declared
    /// no schema, so the frame comes back with the input's columns).
    schema: Option<SchemaRef>,
}

impl TransformOp {
    /// `declared`: whether the node declares a schema; `node` is its output
    /// schema by the model's rules.
    pub fn new(func: Func, declared: bool, node: &NodeSchema) -> Result<Self> {
        let schema = if declared {
            let fields = node
                .fields
                .iter()
                .map(|(n, t)| {
                    let (d, _) =
                        thyme_table::registry::stored_type(t).map_err(Error::InvalidDefinition)?;
                    Ok(Field::new(n, d.arrow(), true))
                })
                .collect::<Result<Vec<_>>>()?;
            Some(Arc::new(Schema::new(fields)))
        } else {
            None
        };
        Ok(TransformOp { func, schema })
    }

    pub fn apply(&self, env: &OpEnv, f: Flow) -> Result<Flow> {
        let schema = self.schema.clone().unwrap_or_else(|| f.batch.schema());
        let b =
            env.python("transform()")?
                .call_frame(&self.func, &env.imports, &f.batch, schema)?;
        let (seq, del) = if b.num_rows() == f.len() {
            (f.seq, f.del)
        } else {
            let first = if f.is_empty() { 0 } else { f.seq.value(0) };
            (
                UInt64Array::from_iter_values((0..b.num_rows() as u64).map(|i| first + i)),
                BooleanArray::from(vec![false; b.num_rows()]),
            )
        };
        Ok(Flow {
            batch: b,
            seq,
            del,
            ts_col: f.ts_col,
        })
    }
}
