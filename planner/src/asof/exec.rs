//! [`AsOfJoinExec`]: the point-in-time join as a streaming merge.
//!
//! For every left row, the right row with the same key whose time is the
//! closest one on the allowed side of the left row's time:
//! - `l.ts >= r.ts` (`>`): the right row with the greatest `r.ts <= l.ts`
//!   (`< l.ts`); among right rows with that same time, the last one;
//! - `l.ts <= r.ts` (`<`): the right row with the smallest `r.ts >= l.ts`
//!   (`> l.ts`); among equal times, the first one.
//!
//! "Last" and "first" are in the order the right rows reach the operator.
//! Right rows with the same key and time are duplicates as far as the join
//! can tell: when the right side is read in parallel parts (a keyless
//! dataset's log slices, repartitioned by key), their order, and so which
//! of them matches, is not fixed, as in DuckDB's ASOF join.
//!
//! Inner joins drop left rows without a match, left joins keep them with
//! NULLs. NULL keys and NULL times never match. A right input may carry a
//! trailing `_deleted` flag (a keyed dataset's history): a match on a delete
//! version is no match (the key was absent then).
//!
//! The operator declares what it needs instead of sorting itself: both
//! inputs partitioned by the key (so partitions run in parallel) and each
//! partition sorted by (key, time) ascending, NULLs first. It then merges
//! the two sorted streams in one pass, holding only the right batches a
//! pending match may still refer to; output batches follow the left
//! batches.

use crate::sql::asof::AsOfOp;
use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use arrow::array::{
    new_null_array, Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch,
};
use arrow::compute::SortOptions;
use arrow::compute::{interleave, take};
use arrow::datatypes::{DataType, Int64Type, SchemaRef};
use arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{internal_err, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{
    EquivalenceProperties, LexOrdering, OrderingRequirements, PhysicalExpr, PhysicalSortExpr,
};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, ExecutionPlanProperties,
    InputDistributionRequirements, Partitioning, PlanProperties,
};
use futures::StreamExt;

/// Whether unmatched left rows are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AsOfKind {
    Inner,
    Left,
}

/// What an ASOF join operator is given besides its inputs: the key and
/// time expressions, the comparison, inner or left, where the right input's
/// `_deleted` flag is, and how the right side is read (for EXPLAIN).
#[derive(Debug, Clone)]
pub struct AsOfJoinSpec {
    pub left_keys: Vec<Arc<dyn PhysicalExpr>>,
    pub right_keys: Vec<Arc<dyn PhysicalExpr>>,
    /// Times, as Int64 (cast by the planner).
    pub left_ts: Arc<dyn PhysicalExpr>,
    pub right_ts: Arc<dyn PhysicalExpr>,
    pub op: AsOfOp,
    pub kind: AsOfKind,
    /// Position of the right input's `_deleted` flag, dropped from the output.
    pub right_deleted: Option<usize>,
    pub strategy: String,
}

impl AsOfJoinSpec {
    /// Output partitions: the left input's, or one without keys.
    pub(super) fn partitions(&self, left: &Arc<dyn ExecutionPlan>) -> DfResult<usize> {
        if self.left_keys.len() != self.right_keys.len() {
            return internal_err!("ASOF join: key lists differ in length");
        }
        Ok(if self.left_keys.is_empty() {
            1
        } else {
            left.output_partitioning().partition_count()
        })
    }

    /// Both inputs partitioned by the key (one partition without keys).
    pub(super) fn distribution(&self) -> InputDistributionRequirements {
        if self.left_keys.is_empty() {
            InputDistributionRequirements::new(vec![
                Distribution::SinglePartition,
                Distribution::SinglePartition,
            ])
        } else {
            InputDistributionRequirements::co_partitioned(vec![
                Distribution::KeyPartitioned(self.left_keys.clone()),
                Distribution::KeyPartitioned(self.right_keys.clone()),
            ])
        }
    }

    pub(super) fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        for e in self
            .left_keys
            .iter()
            .chain(&self.right_keys)
            .chain([&self.left_ts, &self.right_ts])
        {
            if f(e)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    /// `name: kind=.., on=[..], match=.., strategy=..` for EXPLAIN.
    pub(super) fn fmt_as(&self, name: &str, f: &mut fmt::Formatter) -> fmt::Result {
        let keys: Vec<String> = self
            .left_keys
            .iter()
            .zip(&self.right_keys)
            .map(|(l, r)| format!("({l}, {r})"))
            .collect();
        write!(
            f,
            "{name}: kind={:?}, on=[{}], match={} {} {}, strategy={}",
            self.kind,
            keys.join(", "),
            self.left_ts,
            self.op.symbol(),
            self.right_ts,
            self.strategy
        )
    }

    /// The right input's columns that are output (all but `_deleted`), and
    /// for each a one-row all-NULL array: the "no match" source.
    pub(super) fn right_output(&self, right: &SchemaRef) -> (Vec<usize>, Vec<ArrayRef>) {
        let out: Vec<usize> = (0..right.fields().len())
            .filter(|i| Some(*i) != self.right_deleted)
            .collect();
        let nulls = out
            .iter()
            .map(|&i| new_null_array(right.field(i).data_type(), 1))
            .collect();
        (out, nulls)
    }
}

/// The point-in-time join (see the module docs).
#[derive(Debug)]
pub struct AsOfJoinExec {
    left: Arc<dyn ExecutionPlan>,
    right: Arc<dyn ExecutionPlan>,
    spec: AsOfJoinSpec,
    schema: SchemaRef,
    props: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl AsOfJoinExec {
    pub fn try_new(
        left: Arc<dyn ExecutionPlan>,
        right: Arc<dyn ExecutionPlan>,
        spec: AsOfJoinSpec,
        schema: SchemaRef,
    ) -> DfResult<Self> {
        let props = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(spec.partitions(&left)?),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(AsOfJoinExec {
            left,
            right,
            spec,
            schema,
            props,
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    fn sort_exprs(keys: &[Arc<dyn PhysicalExpr>], ts: &Arc<dyn PhysicalExpr>) -> LexOrdering {
        let opts = SortOptions {
            descending: false,
            nulls_first: true,
        };
        let mut v: Vec<PhysicalSortExpr> = keys
            .iter()
            .map(|k| PhysicalSortExpr::new(k.clone(), opts))
            .collect();
        v.push(PhysicalSortExpr::new(ts.clone(), opts));
        LexOrdering::new(v).expect("at least the time")
    }
}

impl DisplayAs for AsOfJoinExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        self.spec.fmt_as("AsOfJoinExec", f)
    }
}

impl ExecutionPlan for AsOfJoinExec {
    fn name(&self) -> &str {
        "AsOfJoinExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.left, &self.right]
    }

    fn input_distribution_requirements(&self) -> InputDistributionRequirements {
        self.spec.distribution()
    }

    fn required_input_ordering(&self) -> Vec<Option<OrderingRequirements>> {
        vec![
            Some(OrderingRequirements::from(Self::sort_exprs(
                &self.spec.left_keys,
                &self.spec.left_ts,
            ))),
            Some(OrderingRequirements::from(Self::sort_exprs(
                &self.spec.right_keys,
                &self.spec.right_ts,
            ))),
        ]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true, false]
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        self.spec.apply_expressions(f)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let [left, right]: [Arc<dyn ExecutionPlan>; 2] = children
            .try_into()
            .map_err(|_| datafusion::error::DataFusionError::Internal("two children".into()))?;
        Ok(Arc::new(AsOfJoinExec::try_new(
            left,
            right,
            self.spec.clone(),
            self.schema.clone(),
        )?))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let left = self.left.execute(partition, context.clone())?;
        let right = self.right.execute(partition, context)?;
        let key_types = self
            .spec
            .left_keys
            .iter()
            .map(|k| k.data_type(&self.left.schema()))
            .collect::<DfResult<Vec<_>>>()?;
        let converter = RowConverter::new(
            key_types
                .iter()
                .map(|t| {
                    SortField::new_with_options(
                        t.clone(),
                        SortOptions {
                            descending: false,
                            nulls_first: true,
                        },
                    )
                })
                .collect(),
        )?;
        let (right_out, null_row) = self.spec.right_output(&self.right.schema());
        let state = Merge {
            left,
            right,
            right_done: false,
            side: Side {
                keys: self.spec.left_keys.clone(),
                ts: self.spec.left_ts.clone(),
            },
            rside: Side {
                keys: self.spec.right_keys.clone(),
                ts: self.spec.right_ts.clone(),
            },
            converter,
            buf: VecDeque::new(),
            first_id: 0,
            cursor: (0, 0),
            candidate: None,
            op: self.spec.op,
            kind: self.spec.kind,
            right_deleted: self.spec.right_deleted,
            right_out,
            null_row,
            schema: self.schema.clone(),
            baseline: BaselineMetrics::new(&self.metrics, partition),
        };
        let stream = futures::stream::try_unfold(state, |mut st| async move {
            loop {
                let Some(batch) = st.left.next().await.transpose()? else {
                    return Ok(None);
                };
                let out = st.join_batch(&batch).await?;
                st.baseline.record_output(out.num_rows());
                if out.num_rows() > 0 || st.kind == AsOfKind::Left {
                    return Ok(Some((out, st)));
                }
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            stream,
        )))
    }
}

/// Key and time expressions of one input.
struct Side {
    keys: Vec<Arc<dyn PhysicalExpr>>,
    ts: Arc<dyn PhysicalExpr>,
}

/// A right batch with its keys and times evaluated.
struct Buffered {
    batch: RecordBatch,
    keys: Rows,
    ts: Int64Array,
    /// Rows that can match (no NULL key or time).
    live: Vec<bool>,
    deleted: Option<BooleanArray>,
}

impl Side {
    fn eval(
        &self,
        batch: &RecordBatch,
        converter: &RowConverter,
    ) -> DfResult<(Rows, Int64Array, Vec<bool>)> {
        let (keys, ts, live) = evaluate(&self.keys, &self.ts, batch)?;
        let rows = converter.convert_columns(&keys)?;
        Ok((rows, ts, live))
    }
}

/// Keys and times (as Int64) of a batch, evaluated; `live[i]` when row `i`
/// can match (no NULL key or time).
pub(super) fn evaluate(
    keys: &[Arc<dyn PhysicalExpr>],
    ts: &Arc<dyn PhysicalExpr>,
    batch: &RecordBatch,
) -> DfResult<(Vec<ArrayRef>, Int64Array, Vec<bool>)> {
    let n = batch.num_rows();
    let keys = keys
        .iter()
        .map(|k| k.evaluate(batch).and_then(|v| v.into_array(n)))
        .collect::<DfResult<Vec<ArrayRef>>>()?;
    let ts = ts.evaluate(batch)?.into_array(n)?;
    let ts = if ts.data_type() == &DataType::Int64 {
        ts
    } else {
        arrow::compute::cast(&ts, &DataType::Int64)?
    };
    let ts = ts.as_primitive::<Int64Type>().clone();
    let mut live = vec![true; n];
    for a in keys
        .iter()
        .map(|k| k as &dyn Array)
        .chain([&ts as &dyn Array])
    {
        if let Some(nulls) = a.logical_nulls() {
            for (l, valid) in live.iter_mut().zip(nulls.iter()) {
                *l &= valid;
            }
        }
    }
    Ok((keys, ts, live))
}

struct Merge {
    left: SendableRecordBatchStream,
    right: SendableRecordBatchStream,
    right_done: bool,
    side: Side,
    rside: Side,
    converter: RowConverter,
    /// Right batches still needed; `first_id` is the id of `buf[0]`.
    buf: VecDeque<Buffered>,
    first_id: usize,
    /// Next unconsumed right row: (batch id, row).
    cursor: (usize, usize),
    /// Backward joins: the last right row at or before the left time.
    candidate: Option<(usize, usize)>,
    op: AsOfOp,
    kind: AsOfKind,
    right_deleted: Option<usize>,
    right_out: Vec<usize>,
    null_row: Vec<ArrayRef>,
    schema: SchemaRef,
    baseline: BaselineMetrics,
}

impl Merge {
    /// Make the cursor point at a buffered row; false when the right input
    /// is exhausted.
    async fn fill(&mut self) -> DfResult<bool> {
        loop {
            let (b, r) = self.cursor;
            if b < self.first_id + self.buf.len() {
                let rows = self.buf[b - self.first_id].batch.num_rows();
                if r < rows {
                    return Ok(true);
                }
                self.cursor = (b + 1, 0);
                continue;
            }
            if self.right_done {
                return Ok(false);
            }
            match self.right.next().await.transpose()? {
                None => {
                    self.right_done = true;
                    return Ok(false);
                }
                Some(batch) if batch.num_rows() == 0 => {}
                Some(batch) => {
                    let (keys, ts, live) = self.rside.eval(&batch, &self.converter)?;
                    let deleted = self
                        .right_deleted
                        .map(|i| batch.column(i).as_boolean().clone());
                    self.buf.push_back(Buffered {
                        batch,
                        keys,
                        ts,
                        live,
                        deleted,
                    });
                }
            }
        }
    }

    /// The buffered batch of a (batch id, row) position.
    fn at(&self, (b, _): (usize, usize)) -> &Buffered {
        &self.buf[b - self.first_id]
    }

    async fn join_batch(&mut self, batch: &RecordBatch) -> DfResult<RecordBatch> {
        let (lkeys, lts, llive) = self.side.eval(batch, &self.converter)?;
        let n = batch.num_rows();
        // Per left row: (buffer id, row) of its match.
        let mut matches: Vec<Option<(usize, usize)>> = Vec::with_capacity(n);
        for (i, &live) in llive.iter().enumerate().take(n) {
            if !live {
                matches.push(None);
                continue;
            }
            let t = lts.value(i);
            let key = lkeys.row(i);
            loop {
                if !self.fill().await? {
                    break;
                }
                let c = self.cursor;
                let rb = self.at(c);
                let r = c.1;
                if !rb.live[r] {
                    self.cursor.1 += 1;
                    continue;
                }
                let ord = rb.keys.row(r).cmp(&key);
                let rt = rb.ts.value(r);
                let consume = match ord {
                    std::cmp::Ordering::Less => true,
                    std::cmp::Ordering::Greater => false,
                    std::cmp::Ordering::Equal => match self.op {
                        AsOfOp::Ge => rt <= t,
                        AsOfOp::Gt => rt < t,
                        AsOfOp::Le => rt < t,
                        AsOfOp::Lt => rt <= t,
                    },
                };
                if !consume {
                    break;
                }
                if self.op.backward() && ord == std::cmp::Ordering::Equal {
                    self.candidate = Some(c);
                }
                self.cursor.1 += 1;
            }
            let found = if self.op.backward() {
                self.candidate.filter(|&c| self.at(c).keys.row(c.1) == key)
            } else if self.fill().await? {
                let c = self.cursor;
                let rb = self.at(c);
                (rb.live[c.1] && rb.keys.row(c.1) == key).then_some(c)
            } else {
                None
            };
            // A delete version: the key was absent at that time.
            let found = found.filter(|&c| {
                self.at(c)
                    .deleted
                    .as_ref()
                    .is_none_or(|d| !(d.is_valid(c.1) && d.value(c.1)))
            });
            matches.push(found);
        }
        let out = self.build(batch, &matches)?;
        // Drop right batches nothing can refer to any more.
        let keep_from = match (self.op.backward(), self.candidate) {
            (true, Some(c)) => c.0.min(self.cursor.0),
            _ => self.cursor.0,
        };
        while self.first_id < keep_from && !self.buf.is_empty() {
            self.buf.pop_front();
            self.first_id += 1;
        }
        Ok(out)
    }

    fn build(
        &self,
        batch: &RecordBatch,
        matches: &[Option<(usize, usize)>],
    ) -> DfResult<RecordBatch> {
        // Source 0 is the NULL row; source 1 + k is buffered batch k.
        let first = self.first_id;
        let matches: Vec<Option<(usize, usize)>> = matches
            .iter()
            .map(|m| m.map(|(b, r)| (1 + b - first, r)))
            .collect();
        let right: Vec<&RecordBatch> = self.buf.iter().map(|b| &b.batch).collect();
        assemble(
            &self.schema,
            self.kind,
            batch,
            &matches,
            (&self.null_row, &self.right_out, &right),
            None,
        )
    }
}

/// The output for a left batch: its rows (all of them, or for inner joins
/// the matched ones) followed by the right columns, gathered from the right
/// batches: for each output column `right_out[j]` of the right batches, at
/// each row's `(source, row)` match, where source 0 is the one-row all-NULL
/// `null_row[j]` (rows without a match) and source `1 + k` is `right[k]`.
/// With a `projection` (indices into those left-then-right columns), only
/// the columns it names, in its order.
pub(super) fn assemble(
    schema: &SchemaRef,
    kind: AsOfKind,
    batch: &RecordBatch,
    matches: &[Option<(usize, usize)>],
    (null_row, right_out, right): (&[ArrayRef], &[usize], &[&RecordBatch]),
    projection: Option<&[usize]>,
) -> DfResult<RecordBatch> {
    let keep: Vec<u32> = match kind {
        AsOfKind::Left => (0..batch.num_rows() as u32).collect(),
        AsOfKind::Inner => (0..batch.num_rows() as u32)
            .filter(|&i| matches[i as usize].is_some())
            .collect(),
    };
    let all: Vec<usize>;
    let columns = match projection {
        Some(p) => p,
        None => {
            all = (0..batch.num_columns() + right_out.len()).collect();
            &all
        }
    };
    let left_idx =
        (keep.len() < batch.num_rows()).then(|| arrow::array::UInt32Array::from(keep.clone()));
    let indices: Vec<(usize, usize)> = keep
        .iter()
        .map(|&i| matches[i as usize].unwrap_or((0, 0)))
        .collect();
    let mut sources: Vec<&dyn Array> = Vec::with_capacity(1 + right.len());
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(columns.len());
    for &c in columns {
        if c < batch.num_columns() {
            let col = batch.column(c);
            cols.push(match &left_idx {
                None => col.clone(),
                Some(idx) => take(col.as_ref(), idx, None)?,
            });
        } else {
            let j = c - batch.num_columns();
            sources.clear();
            sources.push(null_row[j].as_ref());
            sources.extend(right.iter().map(|b| b.column(right_out[j]).as_ref()));
            cols.push(interleave(&sources, &indices)?);
        }
    }
    let opts = arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(keep.len()));
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        cols,
        &opts,
    )?)
}
