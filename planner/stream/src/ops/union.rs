//! `union`: the rows of every input that has any, with the first input's
//! columns (by name, cast to its types).

use arrow::array::Array;
use arrow::record_batch::RecordBatch;
use thyme_table::error::{Error, Result};

use crate::flow::Flow;
use crate::flow::{arrow_err, bools, u64s};

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
