//! [`AsOfHashJoinExec`]: the point-in-time join with the right side indexed
//! in memory, the left side streaming through unsorted.
//!
//! Semantics are those of [`super::AsOfJoinExec`]: for every left row, the
//! right row with the same key whose time is nearest on the allowed side
//! (`>=` / `>`: the greatest earlier time, the last of equal times; `<=` /
//! `<`: the smallest later time, the first of equal times); NULL keys and
//! times never match; a match on a delete version (a keyed dataset's
//! history, trailing `_deleted` flag) is no match; inner joins drop left
//! rows without a match, left joins keep them with NULLs.
//!
//! How it runs: both inputs are partitioned by the key (declared, as for the
//! merge; partitions run in parallel) but neither needs to be sorted. Per
//! partition the right input is collected and indexed once:
//! - every live right row (key and time not NULL) becomes an entry (key
//!   hash, time, arrival position), and the entries are sorted, so each
//!   key's rows form a run ordered by time, ties in arrival order;
//! - a directory on the hash's top bits finds a hash's run in O(1).
//!
//! Then each left batch is answered in its own order: a row finds its key's
//! run, binary-searches its time in it, and takes the nearest entry on the
//! allowed side whose key equals its own. A single integer-like key (or no
//! key) is hashed by a bijection, so an equal hash is an equal key and the
//! first entry is the match; other keys are compared in Arrow's row format,
//! so a hash collision costs a longer walk, never a wrong row.
//!
//! Memory: the right partition's batches and 16 bytes per right row (24
//! while sorting), reserved from the session's memory pool (a query over
//! the pool's limit fails with "resources exhausted" rather than growing);
//! the left side streams. The planner chooses this operator unless the
//! right side would not fit (then the sorted merge, whose sorts can spill).

use std::fmt;
use std::sync::Arc;

use arrow::array::{
    new_null_array, Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch,
};
use arrow::compute::SortOptions;
use arrow::datatypes::{DataType, Int64Type, SchemaRef, UInt64Type};
use arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::hash_utils::{create_hashes, RandomState};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{internal_err, Result as DfResult};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet, Time,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, ExecutionPlanProperties,
    InputDistributionRequirements, Partitioning, PlanProperties,
};
use futures::{StreamExt, TryStreamExt};

use super::exec::{assemble, AsOfKind, AsOfOp};

/// The point-in-time join by an in-memory index of the right side (see the
/// module docs).
#[derive(Debug)]
pub struct AsOfHashJoinExec {
    left: Arc<dyn ExecutionPlan>,
    right: Arc<dyn ExecutionPlan>,
    left_keys: Vec<Arc<dyn PhysicalExpr>>,
    right_keys: Vec<Arc<dyn PhysicalExpr>>,
    /// Times, as Int64 (cast by the planner).
    left_ts: Arc<dyn PhysicalExpr>,
    right_ts: Arc<dyn PhysicalExpr>,
    op: AsOfOp,
    kind: AsOfKind,
    /// Position of the right input's `_deleted` flag, dropped from the output.
    right_deleted: Option<usize>,
    /// How the right side is read (shown by EXPLAIN).
    strategy: String,
    schema: SchemaRef,
    props: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl AsOfHashJoinExec {
    #[allow(clippy::too_many_arguments)]
    pub fn try_new(
        left: Arc<dyn ExecutionPlan>,
        right: Arc<dyn ExecutionPlan>,
        left_keys: Vec<Arc<dyn PhysicalExpr>>,
        right_keys: Vec<Arc<dyn PhysicalExpr>>,
        left_ts: Arc<dyn PhysicalExpr>,
        right_ts: Arc<dyn PhysicalExpr>,
        op: AsOfOp,
        kind: AsOfKind,
        right_deleted: Option<usize>,
        strategy: String,
        schema: SchemaRef,
    ) -> DfResult<Self> {
        if left_keys.len() != right_keys.len() {
            return internal_err!("AsOfHashJoinExec: key lists differ in length");
        }
        let partitions = if left_keys.is_empty() {
            1
        } else {
            left.output_partitioning().partition_count()
        };
        // Output rows follow the left rows, whose columns come first at the
        // same positions: the left input's ordering holds for the output.
        let mut eq = EquivalenceProperties::new(schema.clone());
        if let Some(ordering) = left.output_ordering() {
            eq.add_ordering(ordering.iter().cloned());
        }
        let props = Arc::new(PlanProperties::new(
            eq,
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(AsOfHashJoinExec {
            left,
            right,
            left_keys,
            right_keys,
            left_ts,
            right_ts,
            op,
            kind,
            right_deleted,
            strategy,
            schema,
            props,
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }
}

impl DisplayAs for AsOfHashJoinExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let keys: Vec<String> = self
            .left_keys
            .iter()
            .zip(&self.right_keys)
            .map(|(l, r)| format!("({l}, {r})"))
            .collect();
        write!(
            f,
            "AsOfHashJoinExec: kind={:?}, on=[{}], match={} {} {}, strategy={}",
            self.kind,
            keys.join(", "),
            self.left_ts,
            self.op.symbol(),
            self.right_ts,
            self.strategy
        )
    }
}

impl ExecutionPlan for AsOfHashJoinExec {
    fn name(&self) -> &str {
        "AsOfHashJoinExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.left, &self.right]
    }

    fn input_distribution_requirements(&self) -> InputDistributionRequirements {
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

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let [left, right]: [Arc<dyn ExecutionPlan>; 2] = children
            .try_into()
            .map_err(|_| datafusion::error::DataFusionError::Internal("two children".into()))?;
        Ok(Arc::new(AsOfHashJoinExec::try_new(
            left,
            right,
            self.left_keys.clone(),
            self.right_keys.clone(),
            self.left_ts.clone(),
            self.right_ts.clone(),
            self.op,
            self.kind,
            self.right_deleted,
            self.strategy.clone(),
            self.schema.clone(),
        )?))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let left = self.left.execute(partition, context.clone())?;
        let right = self.right.execute(partition, context.clone())?;
        let key_types = self
            .left_keys
            .iter()
            .map(|k| k.data_type(&self.left.schema()))
            .collect::<DfResult<Vec<_>>>()?;
        let hasher = KeyHasher::new(&key_types)?;
        let right_schema = self.right.schema();
        let right_out: Vec<usize> = (0..right_schema.fields().len())
            .filter(|i| Some(*i) != self.right_deleted)
            .collect();
        let null_row = right_out
            .iter()
            .map(|&i| new_null_array(right_schema.field(i).data_type(), 1))
            .collect::<Vec<_>>();
        let reservation = MemoryConsumer::new(format!("AsOfHashJoinExec[{partition}]"))
            .register(context.memory_pool());
        let build_time = MetricBuilder::new(&self.metrics).subset_time("build_time", partition);
        let probe = Probe {
            left_keys: self.left_keys.clone(),
            left_ts: self.left_ts.clone(),
            hasher,
            op: self.op,
            kind: self.kind,
            right_out,
            null_row,
            schema: self.schema.clone(),
            baseline: BaselineMetrics::new(&self.metrics, partition),
        };
        let build = Build {
            right,
            keys: self.right_keys.clone(),
            ts: self.right_ts.clone(),
            deleted: self.right_deleted,
            reservation,
            build_time,
        };
        let hasher = probe.hasher.clone();
        let stream = futures::stream::once(async move {
            let index = build.run(hasher).await?;
            Ok::<_, datafusion::error::DataFusionError>(probe.stream(Arc::new(index), left))
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            stream,
        )))
    }
}

/// Hashes a side's keys. A single key of an integer-like type (or no key)
/// maps through a bijection of its 64 bits (`exact`: equal hashes are equal
/// keys); other keys use DataFusion's hash and are compared in row format.
#[derive(Clone)]
struct KeyHasher {
    exact: bool,
    /// Row format of the keys, when not exact.
    converter: Option<Arc<RowConverter>>,
    /// Bits kept of an inexact hash (all; tests keep few to force
    /// collisions).
    mask: u64,
}

/// Seed of the inexact hash (any fixed value; both sides use the same).
const HASH_SEED: u64 = 0x5448_594d_4541_534f;

/// A bijection of u64 (the splitmix64 finalizer): spreads integer keys over
/// the top bits the directory reads.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Whether every value of this type fits 64 bits losslessly.
fn integer_like(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Date32
            | DataType::Date64
            | DataType::Timestamp(_, _)
            | DataType::Time32(_)
            | DataType::Time64(_)
            | DataType::Duration(_)
            | DataType::Boolean
    )
}

impl KeyHasher {
    fn new(types: &[DataType]) -> DfResult<Self> {
        let exact = types.is_empty() || (types.len() == 1 && integer_like(&types[0]));
        let converter = if exact {
            None
        } else {
            let fields = types
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
                .collect();
            Some(Arc::new(RowConverter::new(fields)?))
        };
        Ok(KeyHasher {
            exact,
            converter,
            mask: u64::MAX,
        })
    }

    /// Each row's hash into `out` (cleared), and the keys in row format when
    /// the hash is not exact.
    fn hash(&self, keys: &[ArrayRef], n: usize, out: &mut Vec<u64>) -> DfResult<Option<Rows>> {
        out.clear();
        if !self.exact {
            out.resize(n, 0);
            create_hashes(keys, &RandomState::with_seed(HASH_SEED), out)?;
            if self.mask != u64::MAX {
                out.iter_mut().for_each(|h| *h &= self.mask);
            }
            let converter = self
                .converter
                .as_ref()
                .expect("inexact keys have a converter");
            return Ok(Some(converter.convert_columns(keys)?));
        }
        let Some(key) = keys.first() else {
            out.resize(n, mix(0));
            return Ok(None);
        };
        match key.data_type() {
            DataType::UInt64 => out.extend(
                key.as_primitive::<UInt64Type>()
                    .values()
                    .iter()
                    .map(|&v| mix(v)),
            ),
            DataType::Int64 => out.extend(
                key.as_primitive::<Int64Type>()
                    .values()
                    .iter()
                    .map(|&v| mix(v as u64)),
            ),
            _ => {
                let wide = arrow::compute::cast(key, &DataType::Int64)?;
                out.extend(
                    wide.as_primitive::<Int64Type>()
                        .values()
                        .iter()
                        .map(|&v| mix(v as u64)),
                );
            }
        }
        Ok(None)
    }
}

/// Keys and times of a batch, evaluated; `live[i]` when row `i` can match.
fn evaluate(
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

/// The right side of one partition, indexed (see the module docs).
struct Index {
    batches: Vec<RecordBatch>,
    /// Per batch, its keys in row format (inexact hashes only).
    rows: Vec<Rows>,
    deleted: Vec<Option<BooleanArray>>,
    /// Entries sorted by (hash, time, position): (time, position), where a
    /// position is `batch << 32 | row`. Together so that the entry a search
    /// ends on brings its position into the cache with its time.
    entries: Vec<(i64, u64)>,
    /// Distinct hashes in order and where each one's run starts in the
    /// entries (`run_start` has one more element: the end).
    run_hash: Vec<u64>,
    run_start: Vec<usize>,
    /// `dir[s]..dir[s + 1]`: the runs whose hash's top bits are `s`.
    dir: Vec<usize>,
    shift: u32,
    _reservation: MemoryReservation,
}

impl Index {
    /// Whether entry `e`'s key is the left row's: always when hashes are
    /// exact (`key` is None), else compared in row format.
    fn key_equals(&self, e: usize, key: Option<(&Rows, usize)>) -> bool {
        match key {
            None => true,
            Some((rows, i)) => {
                let p = self.entries[e].1;
                self.rows[(p >> 32) as usize].row((p & u32::MAX as u64) as usize) == rows.row(i)
            }
        }
    }

    /// The entries whose key hashes to `h`.
    fn run(&self, h: u64) -> Option<std::ops::Range<usize>> {
        let s = if self.shift >= 64 {
            0
        } else {
            (h >> self.shift) as usize
        };
        let (from, to) = (self.dir[s], self.dir[s + 1]);
        (from..to)
            .find(|&k| self.run_hash[k] == h)
            .map(|k| self.run_start[k]..self.run_start[k + 1])
    }
}

/// Collects and indexes a partition's right input.
struct Build {
    right: SendableRecordBatchStream,
    keys: Vec<Arc<dyn PhysicalExpr>>,
    ts: Arc<dyn PhysicalExpr>,
    deleted: Option<usize>,
    reservation: MemoryReservation,
    build_time: Time,
}

impl Build {
    async fn run(mut self, hasher: KeyHasher) -> DfResult<Index> {
        let mut batches = Vec::new();
        let mut rows = Vec::new();
        let mut deleted = Vec::new();
        let mut entries: Vec<(u64, i64, u64)> = Vec::new();
        let mut hashes = Vec::new();
        while let Some(batch) = self.right.next().await.transpose()? {
            if batch.num_rows() == 0 {
                continue;
            }
            let _timer = self.build_time.timer();
            let b = batches.len() as u64;
            if b > u32::MAX as u64 || batch.num_rows() > u32::MAX as usize {
                return internal_err!("AsOfHashJoinExec: right input too large to index");
            }
            let (keys, ts, live) = evaluate(&self.keys, &self.ts, &batch)?;
            let key_rows = hasher.hash(&keys, batch.num_rows(), &mut hashes)?;
            let before = entries.capacity();
            entries.extend(
                live.iter()
                    .enumerate()
                    .filter(|(_, &l)| l)
                    .map(|(i, _)| (hashes[i], ts.value(i), b << 32 | i as u64)),
            );
            let mut grow = batch.get_array_memory_size()
                + (entries.capacity() - before) * std::mem::size_of::<(u64, i64, u64)>();
            if let Some(r) = &key_rows {
                grow += r.size();
            }
            self.reservation.try_grow(grow)?;
            deleted.push(self.deleted.map(|i| batch.column(i).as_boolean().clone()));
            rows.extend(key_rows);
            batches.push(batch);
        }
        let _timer = self.build_time.timer();
        entries.sort_unstable();
        let n = entries.len();
        let mut sorted = Vec::with_capacity(n);
        let mut run_hash = Vec::new();
        let mut run_start = Vec::new();
        for (i, &(h, t, p)) in entries.iter().enumerate() {
            if run_hash.last() != Some(&h) || i == 0 {
                run_hash.push(h);
                run_start.push(i);
            }
            sorted.push((t, p));
        }
        run_start.push(n);
        drop(entries);
        // About one run per directory slot.
        let bits = (run_hash.len().max(1).next_power_of_two().trailing_zeros()).min(40);
        let shift = 64 - bits;
        let slots = 1usize << bits;
        let mut dir = Vec::with_capacity(slots + 1);
        let mut k = 0;
        for s in 0..slots {
            dir.push(k);
            while k < run_hash.len()
                && (if bits == 0 {
                    0
                } else {
                    (run_hash[k] >> shift) as usize
                }) == s
            {
                k += 1;
            }
        }
        dir.push(k);
        // Sorted entries replace the tuples: 16 bytes per row instead of 24.
        let index_bytes = n * 16 + (run_hash.len() + run_start.len() + dir.len()) * 8;
        self.reservation.try_resize(
            batches
                .iter()
                .map(|b| b.get_array_memory_size())
                .sum::<usize>()
                + rows.iter().map(|r| r.size()).sum::<usize>()
                + index_bytes,
        )?;
        Ok(Index {
            batches,
            rows,
            deleted,
            entries: sorted,
            run_hash,
            run_start,
            dir,
            shift,
            _reservation: self.reservation,
        })
    }
}

/// Answers left batches from an index.
struct Probe {
    left_keys: Vec<Arc<dyn PhysicalExpr>>,
    left_ts: Arc<dyn PhysicalExpr>,
    hasher: KeyHasher,
    op: AsOfOp,
    kind: AsOfKind,
    right_out: Vec<usize>,
    null_row: Vec<ArrayRef>,
    schema: SchemaRef,
    baseline: BaselineMetrics,
}

impl Probe {
    fn stream(
        self,
        index: Arc<Index>,
        left: SendableRecordBatchStream,
    ) -> SendableRecordBatchStream {
        let schema = self.schema.clone();
        let stream = futures::stream::try_unfold(
            (self, index, left, Scratch::default()),
            |(st, index, mut left, mut scratch)| async move {
                loop {
                    let Some(batch) = left.next().await.transpose()? else {
                        return Ok(None);
                    };
                    let timer = st.baseline.elapsed_compute().timer();
                    let out = st.join_batch(&index, &batch, &mut scratch)?;
                    timer.done();
                    st.baseline.record_output(out.num_rows());
                    if out.num_rows() > 0 || st.kind == AsOfKind::Left {
                        return Ok(Some((out, (st, index, left, scratch))));
                    }
                }
            },
        );
        Box::pin(RecordBatchStreamAdapter::new(schema, stream))
    }

    fn join_batch(
        &self,
        index: &Index,
        batch: &RecordBatch,
        scratch: &mut Scratch,
    ) -> DfResult<RecordBatch> {
        let n = batch.num_rows();
        let (keys, lts, live) = evaluate(&self.left_keys, &self.left_ts, batch)?;
        let key_rows = self.hasher.hash(&keys, n, &mut scratch.hashes)?;
        self.search(
            index,
            &scratch.hashes,
            lts.values(),
            &live,
            &mut scratch.bounds,
        );
        let mut matches: Vec<Option<(usize, usize)>> = Vec::with_capacity(n);
        for (i, &(start, end, p)) in scratch.bounds.iter().enumerate() {
            let key = key_rows.as_ref().map(|r| (r, i));
            let found = self.nearest(index, (start, end, p), key).and_then(|e| {
                let p = index.entries[e].1;
                let (b, r) = ((p >> 32) as usize, (p & u32::MAX as u64) as usize);
                // A delete version: the key was absent at that time.
                let gone = index.deleted[b]
                    .as_ref()
                    .is_some_and(|d| d.is_valid(r) && d.value(r));
                (!gone).then_some((1 + b, r))
            });
            matches.push(found);
        }
        let right: Vec<&RecordBatch> = index.batches.iter().collect();
        assemble(
            &self.schema,
            self.kind,
            batch,
            &matches,
            (&self.null_row, &self.right_out, &right),
        )
    }

    /// The entry a left row matches, from its [`Self::search`] bounds: the
    /// nearest on the allowed side of the partition point with the row's
    /// own key.
    fn nearest(
        &self,
        index: &Index,
        (start, end, p): (usize, usize, usize),
        key: Option<(&Rows, usize)>,
    ) -> Option<usize> {
        if self.op.backward() {
            (start..p).rev().find(|&e| index.key_equals(e, key))
        } else {
            (p..end).find(|&e| index.key_equals(e, key))
        }
    }

    /// For every left row, its key's run `start..end` in the entries
    /// (empty when the row cannot match or its key hash is absent) and the
    /// run's partition point `p` for its time: entries before `p` are the
    /// earlier ones (`<= t` for `>=` and `<`, `< t` for `>` and `<=`).
    ///
    /// The binary searches run in lockstep over the whole batch, one step
    /// per pass, so the cache misses of different rows overlap instead of
    /// each row waiting on its own chain of them.
    fn search(
        &self,
        index: &Index,
        hashes: &[u64],
        times: &[i64],
        live: &[bool],
        bounds: &mut Vec<(usize, usize, usize)>,
    ) {
        bounds.clear();
        // (base, remaining size) of each row's search.
        let mut state: Vec<(usize, usize)> = Vec::with_capacity(hashes.len());
        for (i, &h) in hashes.iter().enumerate() {
            let run = if live[i] { index.run(h) } else { None }.unwrap_or(0..0);
            bounds.push((run.start, run.end, run.start));
            state.push((run.start, run.len()));
        }
        let le = matches!(self.op, AsOfOp::Ge | AsOfOp::Lt);
        let entries = &index.entries;
        let before = |x: i64, t: i64| if le { x <= t } else { x < t };
        loop {
            let mut more = false;
            for (st, &t) in state.iter_mut().zip(times) {
                let (base, size) = *st;
                if size > 1 {
                    let half = size / 2;
                    let mid = base + half;
                    let base = if before(entries[mid].0, t) { mid } else { base };
                    *st = (base, size - half);
                    more |= size - half > 1;
                }
            }
            if !more {
                break;
            }
        }
        for ((b, &(base, size)), &t) in bounds.iter_mut().zip(&state).zip(times) {
            if size == 1 {
                b.2 = base + usize::from(before(entries[base].0, t));
            }
        }
    }
}

/// Per-stream buffers reused across left batches.
#[derive(Default)]
struct Scratch {
    hashes: Vec<u64>,
    bounds: Vec<(usize, usize, usize)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::StringArray;
    use arrow::datatypes::{Field, Schema};
    use datafusion::execution::memory_pool::{GreedyMemoryPool, MemoryPool};
    use datafusion::physical_expr::expressions::Column;
    use datafusion::physical_plan::memory::MemoryStream;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// Keys whose hashes collide share a run: every lookup must still walk
    /// to the nearest row of its own key (or find none).
    #[tokio::test]
    async fn colliding_hashes_walk_to_the_equal_key() {
        let seed: u64 = rand::rng().random();
        println!("colliding_hashes_walk_to_the_equal_key: seed {seed}");
        let mut rng = StdRng::seed_from_u64(seed);
        let keys = ["a", "b", "c", "d", "e"];
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("ts", DataType::Int64, true),
        ]));
        let gen = |rng: &mut StdRng, n: usize| {
            let k: Vec<Option<&str>> = (0..n)
                .map(|_| (rng.random_range(0..8) > 0).then(|| keys[rng.random_range(0..4)]))
                .collect();
            let t: Vec<i64> = (0..n).map(|_| rng.random_range(0..40)).collect();
            (k, t)
        };
        let (rk, rt) = gen(&mut rng, 300);
        let batches: Vec<RecordBatch> = rk
            .chunks(64)
            .zip(rt.chunks(64))
            .map(|(k, t)| {
                RecordBatch::try_new(
                    schema.clone(),
                    vec![
                        Arc::new(StringArray::from(k.to_vec())),
                        Arc::new(Int64Array::from(t.to_vec())),
                    ],
                )
                .unwrap()
            })
            .collect();
        let k: Arc<dyn PhysicalExpr> = Arc::new(Column::new("k", 0));
        let ts: Arc<dyn PhysicalExpr> = Arc::new(Column::new("ts", 1));
        let mut hasher = KeyHasher::new(&[DataType::Utf8]).unwrap();
        hasher.mask = 1;
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1 << 30));
        let build = Build {
            right: Box::pin(MemoryStream::try_new(batches, schema.clone(), None).unwrap()),
            keys: vec![k.clone()],
            ts: ts.clone(),
            deleted: None,
            reservation: MemoryConsumer::new("test").register(&pool),
            build_time: Time::new(),
        };
        let index = build.run(hasher.clone()).await.unwrap();
        assert!(index.run_hash.len() <= 2, "every key in at most two runs");
        let (lk, lt) = gen(&mut rng, 200);
        let mut lk = lk;
        lk[0] = Some("e"); // a key the right side does not have
        let left = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(lk.clone())),
                Arc::new(Int64Array::from(lt.clone())),
            ],
        )
        .unwrap();
        let (lkeys, lts, live) = evaluate(&[k], &ts, &left).unwrap();
        let mut hashes = Vec::new();
        let rows = hasher.hash(&lkeys, left.num_rows(), &mut hashes).unwrap();
        let mut checked = 0;
        for op in [AsOfOp::Ge, AsOfOp::Gt, AsOfOp::Le, AsOfOp::Lt] {
            let probe = Probe {
                left_keys: vec![],
                left_ts: ts.clone(),
                hasher: hasher.clone(),
                op,
                kind: AsOfKind::Left,
                right_out: vec![],
                null_row: vec![],
                schema: schema.clone(),
                baseline: BaselineMetrics::new(&ExecutionPlanMetricsSet::new(), 0),
            };
            let mut bounds = Vec::new();
            probe.search(&index, &hashes, lts.values(), &live, &mut bounds);
            for (i, &b) in bounds.iter().enumerate() {
                let got = probe
                    .nearest(&index, b, rows.as_ref().map(|r| (r, i)))
                    .map(|e| index.entries[e].1)
                    .map(|p| (p >> 32) as usize * 64 + (p & u32::MAX as u64) as usize);
                // Brute force: the nearest time on the allowed side; the last
                // of equal times backward, the first forward.
                let t = lt[i];
                let candidates = (0..rk.len()).filter(|&j| {
                    lk[i].is_some()
                        && rk[j] == lk[i]
                        && match op {
                            AsOfOp::Ge => rt[j] <= t,
                            AsOfOp::Gt => rt[j] < t,
                            AsOfOp::Le => rt[j] >= t,
                            AsOfOp::Lt => rt[j] > t,
                        }
                });
                let want = match op {
                    AsOfOp::Ge | AsOfOp::Gt => candidates.max_by_key(|&j| (rt[j], j)),
                    AsOfOp::Le | AsOfOp::Lt => candidates.min_by_key(|&j| (rt[j], j)),
                };
                assert_eq!(got, want, "{op:?} left row {i} (seed {seed})");
                checked += usize::from(want.is_some());
            }
        }
        assert!(checked > 200);
    }
}
