//! Pipeline expressions (`thyme.expr`) as DataFusion expressions, evaluated
//! natively on Arrow batches.
//!
//! Python semantics are kept where they differ from SQL: `/` is true
//! division (always float), `//` floors, `&` / `|` are `and` / `or`.

use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::datatypes::{DataType, Schema};
use arrow::record_batch::RecordBatch;
use datafusion::common::{Column, DFSchema, ScalarValue};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::{binary_expr, cast, lit, ExprSchemable, Operator};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::{Expr as DfExpr, SessionContext};
use thyme_model::payload::Expr;
use thyme_model::Type;

use crate::error::{Error, Result};
use crate::registry::stored_type;

/// An expression compiled against one input schema.
#[derive(Debug)]
pub struct Compiled {
    expr: Arc<dyn PhysicalExpr>,
    target: Option<DataType>,
}

impl Compiled {
    /// Compile `e` for batches of `schema`; `target` casts the result.
    pub fn new(
        ctx: &SessionContext,
        schema: &Schema,
        e: &Expr,
        target: Option<&Type>,
    ) -> Result<Self> {
        let df = DFSchema::try_from(schema.clone()).map_err(|e| Error::Internal(e.to_string()))?;
        let logical = translate(ctx, &df, e)?;
        let expr = ctx
            .create_physical_expr(logical, &df)
            .map_err(|err| Error::InvalidDefinition(format!("expression {}: {err}", show(e))))?;
        let target = target
            .map(|t| stored_type(t).map(|(d, _)| d.arrow()))
            .transpose()
            .map_err(Error::InvalidDefinition)?;
        Ok(Compiled { expr, target })
    }

    /// Evaluate on `batch`.
    pub fn eval(&self, batch: &RecordBatch) -> Result<ArrayRef> {
        let v = self
            .expr
            .evaluate(batch)
            .and_then(|v| v.into_array(batch.num_rows()))
            .map_err(|e| Error::InvalidValue {
                column: "expression".into(),
                dtype: String::new(),
                row: 0,
                value: e.to_string(),
            })?;
        match &self.target {
            Some(t) if v.data_type() != t => arrow::compute::cast(&v, t)
                .map_err(|e| Error::Internal(format!("expression result: {e}"))),
            _ => Ok(v),
        }
    }
}

fn show(e: &Expr) -> String {
    serde_json::to_string(e).unwrap_or_default()
}

fn func(ctx: &SessionContext, name: &str, args: Vec<DfExpr>) -> Result<DfExpr> {
    let udf = ctx
        .udf(name)
        .map_err(|_| Error::Internal(format!("function {name} is not registered")))?;
    Ok(udf.call(args))
}

fn literal(v: &serde_json::Value, ty: Option<&Type>) -> Result<DfExpr> {
    use serde_json::Value as J;
    let bad = || Error::InvalidDefinition(format!("literal {v} does not fit its type"));
    if let Some(t) = ty {
        let (dtype, _) = stored_type(t).map_err(Error::InvalidDefinition)?;
        match (dtype, v) {
            (crate::types::DType::Datetime, J::String(s)) => {
                let us = thyme_model::values::parse_timestamp_str(s).map_err(|_| bad())?;
                return Ok(lit(ScalarValue::TimestampMicrosecond(
                    Some(us),
                    Some(crate::types::UTC.into()),
                )));
            }
            (crate::types::DType::Date, J::String(_)) => {
                let d = thyme_model::values::parse_date(v).map_err(|_| bad())?;
                return Ok(lit(ScalarValue::Date32(Some(d))));
            }
            _ => {}
        }
    }
    Ok(match v {
        J::Null => lit(ScalarValue::Null),
        J::Bool(b) => lit(*b),
        J::Number(n) => match n.as_i64() {
            Some(i) => lit(i),
            None => lit(n.as_f64().ok_or_else(bad)?),
        },
        J::String(s) => lit(s.clone()),
        _ => return Err(bad()),
    })
}

fn translate(ctx: &SessionContext, schema: &DFSchema, e: &Expr) -> Result<DfExpr> {
    let tr = |x: &Expr| translate(ctx, schema, x);
    let is_float = |x: &DfExpr| {
        x.get_type(schema)
            .map(|t| matches!(t, DataType::Float64 | DataType::Float32))
            .unwrap_or(false)
    };
    Ok(match e {
        Expr::Col { col } => {
            if schema.index_of_column(&Column::from_name(col)).is_err() {
                return Err(Error::InvalidDefinition(format!(
                    "expression: no column {col}"
                )));
            }
            DfExpr::Column(Column::from_name(col))
        }
        Expr::Lit { lit: v, ty } => literal(v, ty.as_ref())?,
        Expr::Binary {
            binary,
            left,
            right,
        } => {
            let (l, r) = (tr(left)?, tr(right)?);
            let op = match binary.as_str() {
                "+" => Operator::Plus,
                "-" => Operator::Minus,
                "*" => Operator::Multiply,
                "%" => Operator::Modulo,
                "==" => Operator::Eq,
                "!=" => Operator::NotEq,
                "<" => Operator::Lt,
                "<=" => Operator::LtEq,
                ">" => Operator::Gt,
                ">=" => Operator::GtEq,
                "and" => Operator::And,
                "or" => Operator::Or,
                "/" => {
                    return Ok(binary_expr(
                        cast(l, DataType::Float64),
                        Operator::Divide,
                        cast(r, DataType::Float64),
                    ))
                }
                "//" => {
                    let floats = is_float(&l) || is_float(&r);
                    let q = func(
                        ctx,
                        "floor",
                        vec![binary_expr(
                            cast(l, DataType::Float64),
                            Operator::Divide,
                            cast(r, DataType::Float64),
                        )],
                    )?;
                    return Ok(if floats { q } else { cast(q, DataType::Int64) });
                }
                other => {
                    return Err(Error::InvalidDefinition(format!(
                        "expression: unknown operator {other}"
                    )))
                }
            };
            binary_expr(l, op, r)
        }
        Expr::Unary { unary, expr } => match unary.as_str() {
            "not" => DfExpr::Not(Box::new(tr(expr)?)),
            "neg" => DfExpr::Negative(Box::new(tr(expr)?)),
            other => {
                return Err(Error::InvalidDefinition(format!(
                    "expression: unknown operator {other}"
                )))
            }
        },
        Expr::IsNull { isnull } => DfExpr::IsNull(Box::new(tr(isnull)?)),
        Expr::FillNull { fillnull, value } => {
            // A CASE rather than coalesce (which DataFusion only runs after
            // simplification); NaN counts as missing, as in pandas.
            let x = tr(fillnull)?;
            let v = match x.get_type(schema) {
                Ok(t) if t != DataType::Null => cast(tr(value)?, t),
                _ => tr(value)?,
            };
            let missing = if is_float(&x) {
                x.clone().is_null().or(func(ctx, "isnan", vec![x.clone()])?)
            } else {
                x.clone().is_null()
            };
            datafusion::logical_expr::when(missing, v)
                .otherwise(x)
                .map_err(|e| Error::InvalidDefinition(format!("fillnull: {e}")))?
        }
        Expr::When { when, otherwise } => {
            let mut arms = when.iter();
            let (c, v) = arms
                .next()
                .ok_or_else(|| Error::InvalidDefinition("when() needs a branch".into()))?;
            let mut b = datafusion::logical_expr::when(tr(c)?, tr(v)?);
            for (c, v) in arms {
                b = b.when(tr(c)?, tr(v)?);
            }
            b.otherwise(tr(otherwise)?)
                .map_err(|e| Error::InvalidDefinition(e.to_string()))?
        }
        Expr::Cast { cast: inner, ty } => {
            let (d, _) = stored_type(ty).map_err(Error::InvalidDefinition)?;
            cast(tr(inner)?, d.arrow())
        }
        Expr::Fn { name, args } => {
            let a = args.iter().map(tr).collect::<Result<Vec<_>>>()?;
            let arg = |i: usize| {
                a.get(i).cloned().ok_or_else(|| {
                    Error::InvalidDefinition(format!("{name}() is missing an argument"))
                })
            };
            let int = |x: DfExpr| cast(x, DataType::Int64);
            let part = |p: &str| -> Result<DfExpr> {
                Ok(int(func(ctx, "date_part", vec![lit(p), arg(0)?])?))
            };
            match name.as_str() {
                "abs" | "floor" | "ceil" => func(ctx, name, vec![arg(0)?])?,
                "round" => func(ctx, "round", a.clone())?,
                "str.len" => int(func(ctx, "character_length", vec![arg(0)?])?),
                "str.lower" => func(ctx, "lower", vec![arg(0)?])?,
                "str.upper" => func(ctx, "upper", vec![arg(0)?])?,
                "str.contains" => binary_expr(
                    func(ctx, "strpos", vec![arg(0)?, arg(1)?])?,
                    Operator::Gt,
                    lit(0i64),
                ),
                "str.startswith" => func(ctx, "starts_with", vec![arg(0)?, arg(1)?])?,
                "str.endswith" => func(ctx, "ends_with", vec![arg(0)?, arg(1)?])?,
                "str.concat" => func(ctx, "concat", vec![arg(0)?, arg(1)?])?,
                "dt.year" => part("year")?,
                "dt.month" => part("month")?,
                "dt.day" => part("day")?,
                "dt.hour" => part("hour")?,
                "dt.minute" => part("minute")?,
                "dt.second" => part("second")?,
                "dt.strftime" => func(ctx, "to_char", vec![arg(0)?, arg(1)?])?,
                "list.len" => int(func(ctx, "cardinality", vec![arg(0)?])?),
                "list.contains" => func(ctx, "array_has", vec![arg(0)?, arg(1)?])?,
                other => {
                    return Err(Error::InvalidDefinition(format!(
                        "expression: unknown function {other}"
                    )))
                }
            }
        }
    })
}
