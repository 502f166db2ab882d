//! `coalesce` that plans in time linear in its nesting.
//!
//! DataFusion rewrites `coalesce(a, b)` at planning into
//! `CASE WHEN a IS NOT NULL THEN a ELSE b END`, which copies `a`: nested
//! calls (`coalesce(coalesce(coalesce(x, 0), 0), 0)`, as generated SQL has
//! them) double in size at every level, and 30 levels take the planner's
//! memory. Its function also has no body of its own ("should have been
//! simplified"), so a `coalesce` where nothing simplifies (`INSERT ...
//! VALUES`) fails.
//!
//! The wrapper here keeps that rewrite, which evaluates later arguments only
//! where earlier ones are NULL, when the copied arguments are small, and
//! otherwise stays a call whose body takes, row by row, the first argument
//! that is not NULL (every argument evaluated).

use std::sync::Arc;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::Result;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl};
use datafusion::prelude::SessionContext;

/// Largest argument (in expression nodes) the CASE rewrite may copy.
const COPY_LIMIT: usize = 16;

#[derive(Debug, PartialEq, Eq, Hash)]
struct Coalesce {
    inner: Arc<ScalarUDF>,
}

fn small(e: &Expr) -> bool {
    let mut n = 0;
    let _ = e.apply(|_| {
        n += 1;
        Ok(if n > COPY_LIMIT {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    n <= COPY_LIMIT
}

impl ScalarUDFImpl for Coalesce {
    delegate_udf!();

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        let copied = &args[..args.len().saturating_sub(1)];
        if args.len() <= 1 || copied.iter().all(small) {
            return self.inner.simplify(args, info);
        }
        Ok(ExprSimplifyResult::Original(args))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        if args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)))
        {
            for a in &args.args {
                if let ColumnarValue::Scalar(s) = a {
                    if !s.is_null() {
                        return Ok(a.clone());
                    }
                }
            }
            return Ok(args.args.last().cloned().expect("at least one argument"));
        }
        let mut out = None;
        for a in &args.args {
            let next = a.to_array(rows)?;
            out = Some(match out {
                None => next,
                Some(cur) => {
                    let have = arrow::compute::is_not_null(&cur)?;
                    arrow::compute::kernels::zip::zip(&have, &cur, &next)?
                }
            });
            if out.as_ref().is_some_and(|o| o.null_count() == 0) {
                break;
            }
        }
        Ok(ColumnarValue::Array(out.expect("at least one argument")))
    }
}

/// Replace `coalesce` in `ctx` by the wrapper.
pub fn install(ctx: &SessionContext) {
    if let Some(inner) = ctx.state().scalar_functions().get("coalesce").cloned() {
        ctx.register_udf(ScalarUDF::new_from_impl(Coalesce { inner }));
    }
}
