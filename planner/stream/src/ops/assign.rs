//! `assign`: add or replace columns, each computed by a SQL expression
//! (compiled against the first flow's schema, cast to the declared type)
//! or a Python function on the batch.

use arrow::array::ArrayRef;
use arrow::datatypes::Field;
use thyme_model::payload::{Assigned, ExprOrFunc};
use thyme_table::error::{Error, Result};
use thyme_table::expr::Compiled;

use super::OpEnv;
use crate::flow::Flow;

pub struct AssignOp {
    /// Per column: its name, its compiled expression once built, its
    /// definition.
    columns: Vec<(String, Option<Compiled>, Assigned)>,
}

impl AssignOp {
    pub fn new<'a>(columns: impl IntoIterator<Item = (&'a String, &'a Assigned)>) -> Self {
        AssignOp {
            columns: columns
                .into_iter()
                .map(|(k, v)| (k.clone(), None, v.clone()))
                .collect(),
        }
    }

    pub fn apply(&mut self, env: &OpEnv, f: Flow) -> Result<Flow> {
        let mut new = Vec::with_capacity(self.columns.len());
        for (name, compiled, a) in self.columns.iter_mut() {
            let v = match (&a.value, compiled) {
                (_, Some(c)) => c.eval(&f.batch)?,
                (ExprOrFunc::Expr { expr }, c) => c
                    .insert(Compiled::new(
                        &env.ctx,
                        &f.batch.schema(),
                        expr,
                        Some(&a.ty),
                    )?)
                    .eval(&f.batch)?,
                (ExprOrFunc::Func { func }, None) => {
                    let (d, _) = thyme_table::registry::stored_type(&a.ty)
                        .map_err(Error::InvalidDefinition)?;
                    env.python("assign()")?
                        .call_series(func, &env.imports, &f.batch, &d.arrow())?
                }
            };
            new.push((name.clone(), v));
        }
        assign(&f, new)
    }
}

/// `assign`: add or replace columns.
pub fn assign(f: &Flow, new: Vec<(String, ArrayRef)>) -> Result<Flow> {
    let (mut fields, mut cols) = f.parts();
    for (name, a) in new {
        let field = Field::new(&name, a.data_type().clone(), true);
        match fields.iter().position(|x| x.name() == &name) {
            Some(i) => {
                fields[i] = field;
                cols[i] = a;
            }
            None => {
                fields.push(field);
                cols.push(a);
            }
        }
    }
    f.with_columns(fields, cols)
}
