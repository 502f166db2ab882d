//! Integer arithmetic that fails on overflow, as Postgres' does.
//!
//! DataFusion adds, subtracts and multiplies integers with wrapping
//! arithmetic (`9223372036854775807 + 1` is `-9223372036854775808`). The
//! analyzer rule [`CheckedArithmetic`] runs after type coercion and replaces
//! every integer `+`, `-` and `*` by a call of a function that computes the
//! same with Arrow's checked kernels and fails with SQLSTATE 22003 ("bigint
//! out of range") instead of wrapping. Column names stay those of the
//! original expressions; constant expressions are still folded at planning
//! (and an overflowing one fails there). `sum` of a `bigint` column is
//! summed as a 38-digit decimal and returns `numeric`, as in Postgres.
//! Floating-point and decimal
//! arithmetic are left alone (floats follow IEEE 754; decimals are checked by
//! Arrow already).

use std::sync::Arc;

use arrow::array::{ArrayRef, Datum};
use arrow::datatypes::DataType;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::common::{DFSchema, DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, ExprSchemable, LogicalPlan, Operator, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Op {
    Add,
    Sub,
    Mul,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Checked {
    op: Op,
    signature: Signature,
}

fn type_name(t: &DataType) -> &'static str {
    match t {
        DataType::Int16 | DataType::Int8 | DataType::UInt8 => "smallint",
        DataType::Int32 | DataType::UInt16 => "integer",
        _ => "bigint",
    }
}

impl ScalarUDFImpl for Checked {
    fn name(&self) -> &str {
        match self.op {
            Op::Add => "thyme_checked_add",
            Op::Sub => "thyme_checked_sub",
            Op::Mul => "thyme_checked_mul",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(arg_types[0].clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [a, b] = args.args.as_slice() else {
            return Err(DataFusionError::Internal(
                "checked arithmetic takes two arguments".into(),
            ));
        };
        let datum = |v: &ColumnarValue| -> Result<Box<dyn Datum>> {
            Ok(match v {
                ColumnarValue::Array(a) => Box::new(a.clone()),
                ColumnarValue::Scalar(s) => Box::new(s.to_scalar()?),
            })
        };
        let (l, r) = (datum(a)?, datum(b)?);
        let out: ArrayRef = match self.op {
            Op::Add => arrow::compute::kernels::numeric::add(l.as_ref(), r.as_ref()),
            Op::Sub => arrow::compute::kernels::numeric::sub(l.as_ref(), r.as_ref()),
            Op::Mul => arrow::compute::kernels::numeric::mul(l.as_ref(), r.as_ref()),
        }
        .map_err(|e| match e {
            arrow::error::ArrowError::ArithmeticOverflow(_) => {
                DataFusionError::External(Box::new(thyme_table::Error::NumericOverflow(format!(
                    "{} out of range",
                    type_name(&a.data_type())
                ))))
            }
            other => DataFusionError::ArrowError(Box::new(other), None),
        })?;
        if matches!((a, b), (ColumnarValue::Scalar(_), ColumnarValue::Scalar(_))) {
            return Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?));
        }
        Ok(ColumnarValue::Array(out))
    }
}

fn udf(op: Op) -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::new_from_impl(Checked {
        op,
        signature: Signature::any(2, Volatility::Immutable),
    }))
}

/// The analyzer rule of the module docs.
#[derive(Debug)]
pub struct CheckedArithmetic {
    add: Arc<ScalarUDF>,
    sub: Arc<ScalarUDF>,
    mul: Arc<ScalarUDF>,
}

impl Default for CheckedArithmetic {
    fn default() -> Self {
        CheckedArithmetic {
            add: udf(Op::Add),
            sub: udf(Op::Sub),
            mul: udf(Op::Mul),
        }
    }
}

impl CheckedArithmetic {
    fn rewrite(&self, e: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
        if let Expr::AggregateFunction(mut agg) = e {
            // `sum(bigint)` is `numeric` in Postgres: summed as a decimal
            // of 38 digits it cannot overflow.
            let wide = agg.func.name() == "sum"
                && agg.params.args.len() == 1
                && agg.params.args[0]
                    .get_type(schema)
                    .is_ok_and(|t| matches!(t, DataType::Int64 | DataType::UInt64));
            if !wide {
                return Ok(Transformed::no(Expr::AggregateFunction(agg)));
            }
            let arg = agg.params.args.remove(0);
            agg.params
                .args
                .push(Expr::Cast(datafusion::logical_expr::Cast::new(
                    Box::new(arg),
                    DataType::Decimal128(38, 0),
                )));
            return Ok(Transformed::yes(Expr::AggregateFunction(agg)));
        }
        let Expr::BinaryExpr(BinaryExpr { left, op, right }) = e else {
            return Ok(Transformed::no(e));
        };
        let f = match op {
            Operator::Plus => &self.add,
            Operator::Minus => &self.sub,
            Operator::Multiply => &self.mul,
            _ => {
                return Ok(Transformed::no(Expr::BinaryExpr(BinaryExpr {
                    left,
                    op,
                    right,
                })))
            }
        };
        let integer = |x: &Expr| x.get_type(schema).is_ok_and(|t| t.is_integer());
        if !(integer(&left) && integer(&right))
            || left.get_type(schema).ok() != right.get_type(schema).ok()
        {
            return Ok(Transformed::no(Expr::BinaryExpr(BinaryExpr {
                left,
                op,
                right,
            })));
        }
        Ok(Transformed::yes(f.call(vec![*left, *right])))
    }
}

impl AnalyzerRule for CheckedArithmetic {
    fn name(&self) -> &str {
        "thyme_checked_arithmetic"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        plan.transform_up_with_subqueries(|plan| {
            // Expressions refer to the node's inputs (a scan's filters, to
            // the scan itself).
            let mut schema = DFSchema::empty();
            let inputs = plan.inputs();
            if inputs.is_empty() {
                schema.merge(plan.schema());
            }
            for i in inputs {
                schema.merge(i.schema());
            }
            let names = NamePreserver::new(&plan);
            // A changed input may have changed a column's type (a sum's).
            let plan = plan.recompute_schema()?;
            plan.map_expressions(|e| {
                let saved = names.save(&e);
                let t = e.transform_up(|e| self.rewrite(e, &schema))?;
                Ok(t.update_data(|e| saved.restore(e)))
            })?
            .map_data(|p| p.recompute_schema())
        })
        .data()
    }
}
