//! [`AsOfRule`]: the analyzer rule that turns a join carrying an ASOF
//! marker into an [`AsOfJoinNode`] (step 3 of the module docs of
//! [`crate::asof`]).

use std::sync::Arc;

use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchema, Result as DfResult};
use datafusion::config::ConfigOptions;
use datafusion::datasource::{provider_as_source, source_as_provider};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::logical_plan::{Extension, SubqueryAlias, TableScanBuilder};
use datafusion::logical_expr::{BinaryExpr, Expr, JoinType, LogicalPlan, Operator};
use datafusion::optimizer::AnalyzerRule;

use crate::provider::{split_conjunction, DatasetTable, View};
use crate::view::FeaturesetTable;
use thyme_table::error::Error;

use crate::asof::*;
use crate::sql::asof::MARKERS;

/// Whether every column `e` reads is in `schema` (and it reads one).
fn reads_only(e: &Expr, schema: &DFSchema) -> bool {
    let cols = e.column_refs();
    !cols.is_empty() && cols.iter().all(|c| schema.has_column(c))
}

fn marker_of(e: &Expr) -> Option<(AsOfOp, Expr, Expr)> {
    let Expr::ScalarFunction(ScalarFunction { func, args }) = e else {
        return None;
    };
    let op = MARKERS.iter().find(|(n, _)| *n == func.name())?.1;
    let [a, b] = args.as_slice() else { return None };
    Some((op, a.clone(), b.clone()))
}

/// The right input as planned, and what it is: a keyed dataset's current
/// view becomes its history; a featureset view (with its ASOF time column)
/// becomes an empty relation of the same schema, as it is evaluated rather
/// than scanned.
fn right_source(plan: &LogicalPlan) -> DfResult<Option<(LogicalPlan, RightSource)>> {
    match plan {
        LogicalPlan::SubqueryAlias(sa) => Ok(match right_source(&sa.input)? {
            Some((inner, src)) => Some((
                LogicalPlan::SubqueryAlias(SubqueryAlias::try_new(
                    Arc::new(inner),
                    sa.alias.clone(),
                )?),
                src,
            )),
            None => None,
        }),
        LogicalPlan::TableScan(scan)
            if scan.projection.is_none() && scan.filters.is_empty() && scan.fetch.is_none() =>
        {
            let provider = source_as_provider(&scan.source)?;
            let any: &dyn std::any::Any = provider.as_ref();
            if let Some(v) = any.downcast_ref::<FeaturesetTable>() {
                if v.asof_time().is_none() {
                    return Ok(None);
                }
                let empty = LogicalPlan::EmptyRelation(datafusion::logical_expr::EmptyRelation {
                    produce_one_row: false,
                    schema: scan.projected_schema.clone(),
                });
                return Ok(Some((empty, RightSource::Featureset(v.clone()))));
            }
            let Some(t) = any.downcast_ref::<DatasetTable>() else {
                return Ok(None);
            };
            if t.view() != View::Current || !t.dataset().is_keyed() || t.pinned_as_of().is_some() {
                return Ok(None);
            }
            let hist = t.with_view(View::History);
            let scan =
                TableScanBuilder::new(scan.table_name.clone(), provider_as_source(Arc::new(hist)))
                    .build()?;
            Ok(Some((
                LogicalPlan::TableScan(scan),
                RightSource::Dataset(t.clone()),
            )))
        }
        _ => Ok(None),
    }
}

/// Step 3 (see the module docs).
#[derive(Debug, Default)]
pub struct AsOfRule;

impl AnalyzerRule for AsOfRule {
    fn name(&self) -> &str {
        "thyme_asof_join"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> DfResult<LogicalPlan> {
        Ok(plan
            .transform_up_with_subqueries(|p| {
                let LogicalPlan::Join(join) = &p else {
                    return Ok(Transformed::no(p));
                };
                let mut parts = Vec::new();
                if let Some(f) = &join.filter {
                    parts.extend(split_conjunction(f).into_iter().cloned());
                }
                let markers: Vec<usize> = parts
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| marker_of(e).is_some())
                    .map(|(i, _)| i)
                    .collect();
                if markers.is_empty() {
                    return Ok(Transformed::no(p));
                }
                let ls = join.left.schema().clone();
                let rs = join.right.schema().clone();
                let (op, a, b) = marker_of(&parts.remove(markers[0])).expect("marker");
                let (left_ts, right_ts, op) = if reads_only(&a, &ls) && reads_only(&b, &rs) {
                    (a, b, op)
                } else if reads_only(&b, &ls) && reads_only(&a, &rs) {
                    (b, a, op.flip())
                } else {
                    return Err(Error::Unsupported(
                        "an ASOF match condition that does not compare a time of each side".into(),
                    )
                    .into());
                };
                let mut on: Vec<(Expr, Expr)> = join.on.clone();
                for e in parts {
                    let ok = match &e {
                        Expr::BinaryExpr(BinaryExpr {
                            left,
                            op: Operator::Eq,
                            right,
                        }) => {
                            if reads_only(left, &ls) && reads_only(right, &rs) {
                                on.push((*left.clone(), *right.clone()));
                                true
                            } else if reads_only(right, &ls) && reads_only(left, &rs) {
                                on.push((*right.clone(), *left.clone()));
                                true
                            } else {
                                false
                            }
                        }
                        _ => false,
                    };
                    if !ok {
                        return Err(Error::Unsupported(format!(
                            "ASOF JOIN condition {e}: besides the match condition, ON may only hold equalities between the two sides"
                        ))
                        .into());
                    }
                }
                let kind = match join.join_type {
                    JoinType::Inner => AsOfKind::Inner,
                    JoinType::Left => AsOfKind::Left,
                    other => {
                        return Err(Error::Unsupported(format!("ASOF {other} JOIN")).into());
                    }
                };
                let (right, source) = match right_source(&join.right)? {
                    Some(found) => found,
                    None => (join.right.as_ref().clone(), RightSource::Plan),
                };
                let node = AsOfJoinNode {
                    left: join.left.as_ref().clone(),
                    right,
                    on,
                    left_ts,
                    right_ts,
                    op,
                    kind,
                    source,
                    schema: join.schema.clone(),
                };
                Ok(Transformed::yes(LogicalPlan::Extension(Extension {
                    node: Arc::new(node),
                })))
            })?
            .data)
    }
}
