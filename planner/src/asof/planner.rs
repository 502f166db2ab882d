//! [`AsOfPlanner`]: plans [`AsOfJoinNode`]s as one of the three operators
//! (step 4 of the module docs of [`crate::asof`]), and
//! [`ThymeQueryPlanner`], DataFusion's physical planner with it.

use std::sync::Arc;

use arrow::datatypes::DataType;
use async_trait::async_trait;
use datafusion::common::{DFSchemaRef, Result as DfResult};
use datafusion::datasource::TableProvider;
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::{Expr, LogicalPlan, UserDefinedLogicalNode};
use datafusion::physical_expr::expressions::CastExpr;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};

use crate::provider::DatasetTable;
use crate::view::FeaturesetTable;
use thyme_table::error::Error;

use crate::asof::*;

/// Step 4: plans [`AsOfJoinNode`]s.
#[derive(Debug, Default)]
pub struct AsOfPlanner;

fn as_int64(e: Arc<dyn PhysicalExpr>, t: &DataType, what: &str) -> DfResult<Arc<dyn PhysicalExpr>> {
    match t {
        DataType::Int64 => Ok(e),
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::Date32
        | DataType::Timestamp(_, _) => Ok(Arc::new(CastExpr::new(e, DataType::Int64, None))),
        other => Err(Error::Unsupported(format!(
            "ASOF match on {what} of type {other} (use timestamps, dates or integers)"
        ))
        .into()),
    }
}

#[async_trait]
impl ExtensionPlanner for AsOfPlanner {
    async fn plan_extension(
        &self,
        planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        session: &dyn datafusion::catalog::Session,
        planning_ctx: &datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext,
    ) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
        let Some(n) = node.as_any().downcast_ref::<AsOfJoinNode>() else {
            return Ok(None);
        };
        let (ls, rs) = (logical_inputs[0].schema(), logical_inputs[1].schema());
        // The join repartitions (merge) or reads per batch (seeks): its
        // inputs' scans may run on every core.
        let parts = session.config().target_partitions();
        let lp = crate::scan::split_scans(physical_inputs[0].clone(), parts)?;
        let rp = crate::scan::split_scans(physical_inputs[1].clone(), parts)?;
        let schema = Arc::new(n.schema.as_arrow().clone());
        let left = Left {
            planner,
            schema: ls,
            plan: lp.clone(),
            session,
            ctx: planning_ctx,
        };
        if let RightSource::Featureset(view) = &n.source {
            return plan_featureset(n, view, &left, schema).map(Some);
        }
        let strategy = session
            .config()
            .get_extension::<AsOfStrategy>()
            .map(|s| *s)
            .unwrap_or_default();
        if let (RightSource::Dataset(t), false) = (
            &n.source,
            matches!(strategy, AsOfStrategy::Merge | AsOfStrategy::Hash),
        ) {
            if let Some(plan) = plan_dataset_seek(n, t, strategy, &left, schema.clone())? {
                return Ok(Some(plan));
            }
        }
        let mut left_keys = Vec::with_capacity(n.on.len());
        let mut right_keys = Vec::with_capacity(n.on.len());
        for (l, r) in &n.on {
            let le = planner.create_physical_expr(l, ls, session, planning_ctx)?;
            let mut re = planner.create_physical_expr(r, rs, session, planning_ctx)?;
            let lt = le.data_type(&lp.schema())?;
            let rt = re.data_type(&rp.schema())?;
            if lt != rt {
                re = Arc::new(CastExpr::new(re, lt, None));
            }
            left_keys.push(le);
            right_keys.push(re);
        }
        let lts = planner.create_physical_expr(&n.left_ts, ls, session, planning_ctx)?;
        let rts = planner.create_physical_expr(&n.right_ts, rs, session, planning_ctx)?;
        let (ltt, rtt) = (lts.data_type(&lp.schema())?, rts.data_type(&rp.schema())?);
        let unit = |t: &DataType| match t {
            DataType::Timestamp(u, _) => Some(*u),
            _ => None,
        };
        let rts = match (unit(&ltt), unit(&rtt)) {
            (Some(a), Some(b)) if a != b => {
                Arc::new(CastExpr::new(rts, ltt.clone(), None)) as Arc<dyn PhysicalExpr>
            }
            (Some(_), None) | (None, Some(_)) if ltt != rtt => {
                return Err(
                    Error::Unsupported(format!("ASOF match between {ltt} and {rtt}")).into(),
                )
            }
            _ => rts,
        };
        let lts = as_int64(lts, &ltt, "the left time")?;
        let rtt2 = rts.data_type(&rp.schema())?;
        let rts = as_int64(rts, &rtt2, "the right time")?;
        let right_deleted = n
            .source
            .deleted_flag()
            .then(|| rp.schema().fields().len().saturating_sub(1));
        let hash = match strategy {
            AsOfStrategy::Merge => false,
            AsOfStrategy::Hash => true,
            AsOfStrategy::Auto | AsOfStrategy::Seek => fits_memory(&rp, session)?,
        };
        let history = if n.source.deleted_flag() {
            " with dataset history"
        } else {
            ""
        };
        let spec = AsOfJoinSpec {
            left_keys,
            right_keys,
            left_ts: lts,
            right_ts: rts,
            op: n.op,
            kind: n.kind,
            right_deleted,
            strategy: format!("{}{history}", if hash { "hash" } else { "merge" }),
        };
        Ok(Some(if hash {
            Arc::new(AsOfHashJoinExec::try_new(lp, rp, spec, schema)?) as Arc<dyn ExecutionPlan>
        } else {
            Arc::new(AsOfJoinExec::try_new(lp, rp, spec, schema)?)
        }))
    }
}

/// Whether the right side of a join, as estimated, takes at most half of
/// the session's memory pool (always, for an unbounded pool): the hash
/// strategy holds it in memory, the merge's sorts can spill instead.
fn fits_memory(
    right: &Arc<dyn ExecutionPlan>,
    session: &dyn datafusion::catalog::Session,
) -> DfResult<bool> {
    use datafusion::execution::memory_pool::MemoryLimit;
    let MemoryLimit::Finite(limit) = session.runtime_env().memory_pool.memory_limit() else {
        return Ok(true);
    };
    let rows = datafusion::physical_plan::StatisticsContext::new()
        .compute(
            right.as_ref(),
            &datafusion::physical_plan::StatisticsArgs::new(),
        )?
        .num_rows
        .get_value()
        .copied();
    let Some(rows) = rows else {
        return Ok(false);
    };
    // Fixed-width columns at their width, others at 32 bytes; 16 bytes of
    // index per row.
    let width: usize = right
        .schema()
        .fields()
        .iter()
        .map(|f| f.data_type().primitive_width().unwrap_or(32))
        .sum::<usize>()
        + 16;
    Ok(rows.saturating_mul(width) <= limit / 2)
}

fn column_name(e: &Expr) -> Option<&str> {
    match e {
        Expr::Column(c) => Some(c.name.as_str()),
        Expr::Cast(c) => column_name(&c.expr),
        _ => None,
    }
}

/// The time types a read as of the left row's time accepts.
fn readable_time(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64
    )
}

/// The left input of a join being planned, and what plans its expressions.
struct Left<'a> {
    planner: &'a dyn PhysicalPlanner,
    schema: &'a DFSchemaRef,
    plan: Arc<dyn ExecutionPlan>,
    session: &'a dyn datafusion::catalog::Session,
    ctx: &'a datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext,
}

impl Left<'_> {
    /// A physical expression over the left input.
    fn expr(&self, e: &Expr) -> DfResult<Arc<dyn PhysicalExpr>> {
        self.planner
            .create_physical_expr(e, self.schema, self.session, self.ctx)
    }

    /// The key expressions bound to each key of the right side, in its order.
    fn keys(&self, bound: &[Option<&Expr>]) -> DfResult<Vec<Arc<dyn PhysicalExpr>>> {
        bound
            .iter()
            .map(|e| self.expr(e.expect("every key bound")))
            .collect()
    }
}

/// A featureset view on the right: evaluated at each left row's time.
fn plan_featureset(
    n: &AsOfJoinNode,
    view: &FeaturesetTable,
    left: &Left<'_>,
    schema: arrow::datatypes::SchemaRef,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    let lp = left.plan.clone();
    let name = view.sql_name();
    let time = view.asof_time().unwrap_or_default();
    if column_name(&n.right_ts) != Some(time) {
        return Err(Error::Unsupported(format!(
            "an ASOF match condition on {} of featureset view {name}: compare the left time with its time column {time}",
            n.right_ts
        ))
        .into());
    }
    if !matches!(n.op, AsOfOp::Ge | AsOfOp::Gt) {
        return Err(Error::Unsupported(format!(
            "ASOF JOIN with featureset view {name} using {}: a featureset is read as of the left row's time (>=) or just before it (>)",
            n.op.symbol()
        ))
        .into());
    }
    let mut bound: Vec<Option<&Expr>> = vec![None; view.inputs().len()];
    for (l, r) in &n.on {
        let col = column_name(r);
        let Some(i) = col.and_then(|c| view.inputs().iter().position(|x| x == c)) else {
            return Err(Error::Unsupported(format!(
                "ASOF JOIN with featureset view {name} on {r}: the ON equalities bind the view's inputs ({})",
                view.inputs().join(", ")
            ))
            .into());
        };
        if bound[i].is_some() {
            return Err(Error::Unsupported(format!(
                "ASOF JOIN binding input {} of featureset view {name} twice",
                view.inputs()[i]
            ))
            .into());
        }
        bound[i] = Some(l);
    }
    let missing: Vec<&str> = view
        .inputs()
        .iter()
        .zip(&bound)
        .filter(|(_, b)| b.is_none())
        .map(|(i, _)| i.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(Error::UnboundInputs(format!(
            "featureset view {name} is computed from its inputs {}: bind {} in the ASOF JOIN's ON, e.g. ON l.{} = f.{}",
            view.inputs().join(", "),
            missing.join(" and "),
            missing[0],
            missing[0]
        ))
        .into());
    }
    let keys = left.keys(&bound)?;
    let lts = left.expr(&n.left_ts)?;
    let ltt = lts.data_type(&lp.schema())?;
    if !readable_time(&ltt) {
        return Err(Error::Unsupported(format!(
            "ASOF JOIN with featureset view {name} at a left time of type {ltt} (use a timestamp or a date)"
        ))
        .into());
    }
    let qualified: Vec<String> = view
        .inputs()
        .iter()
        .map(|i| format!("{}.{i}", view.name()))
        .collect();
    let n_features = schema.fields().len() - lp.schema().fields().len() - 1;
    let outputs: Vec<String> = view.schema().fields()[..n_features]
        .iter()
        .map(|f| format!("{}.{}", view.name(), f.name()))
        .collect();
    let plan = view.features().plan(&qualified, &outputs)?;
    let source = Arc::new(FeaturesetSource {
        features: view.features().clone(),
        plan,
        view: name.to_string(),
    });
    Ok(Arc::new(AsOfLookupExec::try_new(
        lp,
        keys,
        lts,
        n.op,
        n.kind,
        source,
        "featureset views are evaluated".into(),
        schema,
    )?))
}

/// A keyed dataset on the right, read by seeks when the join allows it and
/// the strategy (or the sizes, for `auto`) says so.
fn plan_dataset_seek(
    n: &AsOfJoinNode,
    t: &DatasetTable,
    strategy: AsOfStrategy,
    left: &Left<'_>,
    schema: arrow::datatypes::SchemaRef,
) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
    let lp = left.plan.clone();
    let ds = t.dataset();
    if !matches!(n.op, AsOfOp::Ge | AsOfOp::Gt) {
        return Ok(None);
    }
    let ts_name = &ds.fields()[ds.ts_index()].name;
    if !matches!(&n.right_ts, Expr::Column(c) if &c.name == ts_name) {
        return Ok(None);
    }
    // Each key field bound once, by a plain column of the right.
    let mut bound: Vec<Option<&Expr>> = vec![None; ds.key_indices().len()];
    for (l, r) in &n.on {
        let Expr::Column(c) = r else { return Ok(None) };
        let Some(i) = ds
            .key_indices()
            .iter()
            .position(|&k| ds.fields()[k].name == c.name)
        else {
            return Ok(None);
        };
        if bound[i].replace(l).is_some() {
            return Ok(None);
        }
    }
    if bound.iter().any(Option::is_none) {
        return Ok(None);
    }
    let lts = left.expr(&n.left_ts)?;
    if !readable_time(&lts.data_type(&lp.schema())?) {
        return Ok(None);
    }
    let versions = t.store().log_end(ds.id).map_err(Error::from)? as usize;
    let left_rows = datafusion::physical_plan::StatisticsContext::new()
        .compute(
            lp.as_ref(),
            &datafusion::physical_plan::StatisticsArgs::new(),
        )?
        .num_rows
        .get_value()
        .copied();
    let reason = match (strategy, left_rows) {
        (AsOfStrategy::Seek, _) => "thyme.asof_strategy = seek".to_string(),
        (_, Some(rows)) if rows.saturating_mul(SEEK_RATIO) <= versions => {
            format!("left ~{rows} rows, dataset ~{versions} versions")
        }
        _ => return Ok(None),
    };
    let keys = left.keys(&bound)?;
    let source = Arc::new(DatasetSource {
        store: t.store().clone(),
        ds: ds.clone(),
    });
    Ok(Some(Arc::new(AsOfLookupExec::try_new(
        lp, keys, lts, n.op, n.kind, source, reason, schema,
    )?)))
}

/// DataFusion's physical planner with Thyme's extension planners.
#[derive(Debug, Default)]
pub struct ThymeQueryPlanner;

#[async_trait]
impl QueryPlanner for ThymeQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session_state: &dyn datafusion::catalog::Session,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let planner = DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(AsOfPlanner)]);
        planner
            .create_physical_plan(logical_plan, session_state)
            .await
    }
}
