//! [`AsOfLookupExec`]: the point-in-time join by reads at each left row's
//! time.
//!
//! Where [`super::AsOfJoinExec`] merges two sorted inputs, this operator has
//! only the left input: for every left batch it reads the right side *as of*
//! each row's time from an [`AsOfSource`], a batch at a time:
//! - a keyed dataset in the temporal store ([`DatasetSource`]): one
//!   multi-key seek per distinct read time. Chosen by the planner when the
//!   left side is small next to the dataset's history (a full history scan
//!   and two sorts would cost more), or when asked for;
//! - a featureset view ([`FeaturesetSource`]): the featureset evaluated at
//!   each row's time, its extractors called once per batch. A featureset has
//!   no stored history to merge with, so this is its only strategy.
//!
//! Semantics are those of the backward ASOF join: `l.ts >= r.ts` reads as
//! of `l.ts`, `l.ts > r.ts` as of `l.ts - 1µs`. NULL keys and NULL times
//! never match; an inner join drops left rows without a match, a left join
//! keeps them with NULLs. The output keeps the left input's partitioning and
//! order; reads run off the async runtime (store reads and Python block).

use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, UInt32Array};
use arrow::compute::{filter, take};
use arrow::datatypes::{DataType, Int64Type, SchemaRef, TimeUnit};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{internal_err, Result as DfResult};
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
};
use futures::StreamExt;

use super::{AsOfKind, AsOfOp};
use thyme_features::{Features, QueryPlan};
use thyme_storage::TemporalStore;
use thyme_table::catalog::Dataset;
use thyme_table::error::{Error, Result};
use thyme_table::read::lookup_rows;

/// The right side of an [`AsOfLookupExec`].
pub trait AsOfSource: fmt::Debug + Send + Sync {
    /// What is read (for `EXPLAIN`).
    fn describe(&self) -> String;

    /// The right columns for row `i` read as of `ts[i]` (µs) with key
    /// values `keys[..][i]` (none of them NULL), and whether row `i` has a
    /// match.
    fn read(&self, keys: &[ArrayRef], ts: &[i64]) -> Result<(Vec<ArrayRef>, Vec<bool>)>;
}

/// A keyed dataset read by seeks; keys in the dataset's key order.
#[derive(Debug)]
pub struct DatasetSource {
    pub store: Arc<dyn TemporalStore>,
    pub ds: Arc<Dataset>,
}

impl AsOfSource for DatasetSource {
    fn describe(&self) -> String {
        format!("seek into dataset {}", self.ds.name())
    }

    fn read(&self, keys: &[ArrayRef], ts: &[i64]) -> Result<(Vec<ArrayRef>, Vec<bool>)> {
        let all: Vec<usize> = (0..self.ds.fields().len()).collect();
        let (batch, found) = lookup_rows(self.store.as_ref(), &self.ds, keys, ts, &all)?;
        Ok((batch.columns().to_vec(), found))
    }
}

/// A featureset evaluated at each row's time; keys are the plan's inputs,
/// in order. The right columns are the plan's outputs and the read time.
#[derive(Debug)]
pub struct FeaturesetSource {
    pub features: Arc<Features>,
    pub plan: QueryPlan,
    /// SQL name of the view.
    pub view: String,
}

impl AsOfSource for FeaturesetSource {
    fn describe(&self) -> String {
        format!(
            "evaluate featureset view {} (extractors [{}])",
            self.view,
            self.plan.extractor_names().join(", ")
        )
    }

    fn read(&self, keys: &[ArrayRef], ts: &[i64]) -> Result<(Vec<ArrayRef>, Vec<bool>)> {
        let batch = self.features.evaluate(&self.plan, keys.to_vec(), ts)?;
        let mut cols = batch.columns().to_vec();
        let time = arrow::array::TimestampMicrosecondArray::from(ts.to_vec())
            .with_timezone(thyme_table::types::UTC);
        cols.push(Arc::new(time));
        Ok((cols, vec![true; ts.len()]))
    }
}

/// The point-in-time join by reads (see the module docs).
#[derive(Debug)]
pub struct AsOfLookupExec {
    left: Arc<dyn ExecutionPlan>,
    /// Left key expressions, in the source's key order.
    keys: Vec<Arc<dyn PhysicalExpr>>,
    /// Left time: a timestamp or a date.
    left_ts: Arc<dyn PhysicalExpr>,
    op: AsOfOp,
    kind: AsOfKind,
    source: Arc<dyn AsOfSource>,
    /// Why this strategy (for `EXPLAIN`).
    reason: String,
    schema: SchemaRef,
    props: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl AsOfLookupExec {
    #[allow(clippy::too_many_arguments)]
    pub fn try_new(
        left: Arc<dyn ExecutionPlan>,
        keys: Vec<Arc<dyn PhysicalExpr>>,
        left_ts: Arc<dyn PhysicalExpr>,
        op: AsOfOp,
        kind: AsOfKind,
        source: Arc<dyn AsOfSource>,
        reason: String,
        schema: SchemaRef,
    ) -> DfResult<Self> {
        if !matches!(op, AsOfOp::Ge | AsOfOp::Gt) {
            return internal_err!("AsOfLookupExec reads backward only (>= or >)");
        }
        // Left columns come first, unchanged and in order: the left's
        // ordering holds for the output.
        let eq = match left.output_ordering() {
            Some(o) => EquivalenceProperties::new_with_orderings(schema.clone(), [o.clone()]),
            None => EquivalenceProperties::new(schema.clone()),
        };
        let props = Arc::new(PlanProperties::new(
            eq,
            left.output_partitioning().clone(),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(AsOfLookupExec {
            left,
            keys,
            left_ts,
            op,
            kind,
            source,
            reason,
            schema,
            props,
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }
}

impl DisplayAs for AsOfLookupExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let keys: Vec<String> = self.keys.iter().map(|k| k.to_string()).collect();
        write!(
            f,
            "AsOfLookupExec: kind={:?}, keys=[{}], match={} {} right, strategy={} ({})",
            self.kind,
            keys.join(", "),
            self.left_ts,
            self.op.symbol(),
            self.source.describe(),
            self.reason
        )
    }
}

/// Left times as µs since the epoch (timestamps of any unit, dates).
fn micros(a: &ArrayRef) -> Result<ArrayRef> {
    match a.data_type() {
        DataType::Timestamp(TimeUnit::Microsecond, _) => Ok(a.clone()),
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => Ok(
            arrow::compute::cast(a, &DataType::Timestamp(TimeUnit::Microsecond, None))?,
        ),
        other => Err(Error::Unsupported(format!(
            "an ASOF read at a time of type {other}"
        ))),
    }
}

struct Step {
    keys: Vec<Arc<dyn PhysicalExpr>>,
    left_ts: Arc<dyn PhysicalExpr>,
    shift: i64,
    inner: bool,
    source: Arc<dyn AsOfSource>,
    schema: SchemaRef,
}

impl Step {
    /// Join one left batch.
    fn run(&self, batch: RecordBatch) -> Result<RecordBatch> {
        let n = batch.num_rows();
        let mut keys = Vec::with_capacity(self.keys.len());
        for k in &self.keys {
            keys.push(k.evaluate(&batch)?.into_array(n)?);
        }
        let ts = micros(&self.left_ts.evaluate(&batch)?.into_array(n)?)?;
        // Rows that can match: no NULL key, no NULL time.
        let mut valid: Vec<bool> = (0..n).map(|i| ts.is_valid(i)).collect();
        for k in &keys {
            if k.null_count() > 0 {
                for (i, v) in valid.iter_mut().enumerate() {
                    *v &= k.is_valid(i);
                }
            }
        }
        let all_valid = valid.iter().all(|v| *v);
        let (keys, ts_values): (Vec<ArrayRef>, Vec<i64>) = if all_valid {
            let t = ts.as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
            (keys, t.values().iter().map(|v| v - self.shift).collect())
        } else {
            let mask = BooleanArray::from(valid.clone());
            let keys = keys
                .iter()
                .map(|k| filter(k.as_ref(), &mask))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let t = filter(ts.as_ref(), &mask)?;
            let t = arrow::compute::cast(&t, &DataType::Int64)?;
            let t = t.as_primitive::<Int64Type>();
            (keys, t.values().iter().map(|v| v - self.shift).collect())
        };
        let (right, found) = if ts_values.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            self.source.read(&keys, &ts_values)?
        };
        // Right row j of the valid rows, per left row (None: no match).
        let mut slot: Vec<Option<u32>> = Vec::with_capacity(n);
        let mut j = 0usize;
        for &v in &valid {
            if v {
                slot.push(found[j].then_some(j as u32));
                j += 1;
            } else {
                slot.push(None);
            }
        }
        // An inner join keeps the matched rows only (before assembling: the
        // right columns may be declared non-nullable).
        let (batch, slot) = if self.inner && slot.iter().any(Option::is_none) {
            let keep = BooleanArray::from(slot.iter().map(Option::is_some).collect::<Vec<_>>());
            let batch = arrow::compute::filter_record_batch(&batch, &keep)?;
            (batch, slot.into_iter().flatten().map(Some).collect())
        } else {
            (batch, slot)
        };
        let n = batch.num_rows();
        let left_cols = batch.num_columns();
        let right_fields = &self.schema.fields()[left_cols..];
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        if right.is_empty() {
            for f in right_fields {
                columns.push(arrow::array::new_null_array(f.data_type(), n));
            }
        } else {
            let identity = slot.len() == right[0].len()
                && slot.iter().enumerate().all(|(i, s)| *s == Some(i as u32));
            let indices = UInt32Array::from(slot);
            for (c, f) in right.iter().zip(right_fields) {
                let c = if identity {
                    c.clone()
                } else {
                    take(c.as_ref(), &indices, None)?
                };
                let c = if c.data_type() == f.data_type() {
                    c
                } else {
                    arrow::compute::cast(&c, f.data_type())?
                };
                columns.push(c);
            }
        }
        let opts = arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(n));
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &opts,
        )?)
    }
}

impl ExecutionPlan for AsOfLookupExec {
    fn name(&self) -> &str {
        "AsOfLookupExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.left]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        for k in &self.keys {
            if f(k)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        f(&self.left_ts)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let [left]: [Arc<dyn ExecutionPlan>; 1] = children
            .try_into()
            .map_err(|_| DataFusionError::Internal("AsOfLookupExec has one child".into()))?;
        Ok(Arc::new(AsOfLookupExec::try_new(
            left,
            self.keys.clone(),
            self.left_ts.clone(),
            self.op,
            self.kind,
            self.source.clone(),
            self.reason.clone(),
            self.schema.clone(),
        )?))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let input = self.left.execute(partition, context)?;
        let step = Arc::new(Step {
            keys: self.keys.clone(),
            left_ts: self.left_ts.clone(),
            shift: if self.op == AsOfOp::Gt { 1 } else { 0 },
            inner: self.kind == AsOfKind::Inner,
            source: self.source.clone(),
            schema: self.schema.clone(),
        });
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let stream = input.then(move |batch| {
            let step = step.clone();
            let baseline = baseline.clone();
            async move {
                let batch = batch?;
                let timer = baseline.elapsed_compute().timer();
                let out = tokio::task::spawn_blocking(move || step.run(batch))
                    .await
                    .map_err(|e| {
                        DataFusionError::External(Box::new(Error::Internal(e.to_string())))
                    })?
                    .map_err(DataFusionError::from)?;
                timer.done();
                baseline.record_output(out.num_rows());
                Ok(out)
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            stream,
        )))
    }
}
