//! `filter`: keep the rows whose predicate is true (null counts as false).
//! The predicate is a SQL expression, compiled against the first flow's
//! schema and kept, or a Python function called on each batch.

use arrow::array::{Array, ArrayRef, BooleanArray};
use arrow::datatypes::DataType;
use thyme_model::payload::ExprOrFunc;
use thyme_table::error::{Error, Result};
use thyme_table::expr::Compiled;

use super::OpEnv;
use crate::flow::Flow;

pub struct FilterOp {
    predicate: ExprOrFunc,
    compiled: Option<Compiled>,
}

impl FilterOp {
    pub fn new(predicate: ExprOrFunc) -> Self {
        FilterOp {
            predicate,
            compiled: None,
        }
    }

    pub fn apply(&mut self, env: &OpEnv, f: Flow) -> Result<Flow> {
        let m = match (&self.predicate, &mut self.compiled) {
            (_, Some(c)) => c.eval(&f.batch)?,
            (ExprOrFunc::Expr { expr }, c) => c
                .insert(Compiled::new(&env.ctx, &f.batch.schema(), expr, None)?)
                .eval(&f.batch)?,
            (ExprOrFunc::Func { func }, None) => env.python("filter()")?.call_series(
                func,
                &env.imports,
                &f.batch,
                &DataType::Boolean,
            )?,
        };
        f.filter(&mask(&m)?)
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
