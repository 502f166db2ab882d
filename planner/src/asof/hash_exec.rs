//! [`AsOfHashJoinExec`]: the point-in-time join with the right side indexed
//! in memory, the left side read through unsorted, a chunk at a time.
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
//! Then the left side is answered a chunk of batches at a time, each output
//! batch following its left batch, in order: a row finds its key's run,
//! binary-searches its time in it, and takes the nearest entry on the
//! allowed side whose key equals its own. A single integer-like key (or no
//! key) is hashed by a bijection, so an equal hash is an equal key and the
//! first entry is the match; other keys are compared in Arrow's row format,
//! so a hash collision costs a longer walk, never a wrong row.
//!
//! Memory: the right partition's batches and 16 bytes per right row (48
//! while sorting), reserved from the session's memory pool (a query over
//! the pool's limit fails with "resources exhausted" rather than growing);
//! of the left side, one chunk (128 batches) with its output. The planner
//! chooses this operator unless the right side would not fit (then the
//! sorted merge, whose sorts can spill).

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch};
use arrow::compute::SortOptions;
use arrow::datatypes::{DataType, Int64Type, SchemaRef, UInt64Type};
use arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::hash_utils::{create_hashes, RandomState};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{internal_err, Result as DfResult};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::projection::ProjectionMapping;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet, Time,
};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties,
    InputDistributionRequirements, Partitioning, PlanProperties,
};
use futures::{StreamExt, TryStreamExt};

use super::exec::{assemble, evaluate, AsOfJoinSpec, AsOfKind};
use crate::sql::asof::AsOfOp;

/// The point-in-time join by an in-memory index of the right side (see the
/// module docs).
#[derive(Debug)]
pub struct AsOfHashJoinExec {
    left: Arc<dyn ExecutionPlan>,
    right: Arc<dyn ExecutionPlan>,
    spec: AsOfJoinSpec,
    /// The joined row: the left columns, then the right ones.
    join_schema: SchemaRef,
    /// The output columns (indices into the joined row, with their names)
    /// when a projection above was embedded: only those are gathered.
    projection: Option<Vec<(usize, String)>>,
    /// The output schema (the joined row, projected).
    schema: SchemaRef,
    props: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl AsOfHashJoinExec {
    pub fn try_new(
        left: Arc<dyn ExecutionPlan>,
        right: Arc<dyn ExecutionPlan>,
        spec: AsOfJoinSpec,
        schema: SchemaRef,
    ) -> DfResult<Self> {
        let props = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        AsOfHashJoinExec {
            left,
            right,
            spec,
            join_schema: schema.clone(),
            projection: None,
            schema,
            props,
            metrics: ExecutionPlanMetricsSet::new(),
        }
        .with_projection(None)
    }

    /// This join with only the `projection`'s columns in its output.
    fn with_projection(mut self, projection: Option<Vec<(usize, String)>>) -> DfResult<Self> {
        let partitions = self.spec.partitions(&self.left)?;
        // Output rows follow the left rows, whose columns come first at the
        // same positions: the left input's ordering holds for the output.
        let mut eq = EquivalenceProperties::new(self.join_schema.clone());
        if let Some(ordering) = self.left.output_ordering() {
            eq.add_ordering(ordering.iter().cloned());
        }
        self.schema = self.join_schema.clone();
        if let Some(p) = &projection {
            let fields: Vec<_> = p
                .iter()
                .map(|(i, name)| self.join_schema.field(*i).clone().with_name(name))
                .collect();
            self.schema = Arc::new(arrow::datatypes::Schema::new_with_metadata(
                fields,
                self.join_schema.metadata().clone(),
            ));
            let mapping = ProjectionMapping::try_new(
                p.iter().map(|(i, name)| {
                    let col = Column::new(self.join_schema.field(*i).name(), *i);
                    (Arc::new(col) as Arc<dyn PhysicalExpr>, name.clone())
                }),
                &self.join_schema,
            )?;
            eq = eq.project(&mapping, self.schema.clone());
        }
        self.projection = projection;
        self.props = Arc::new(PlanProperties::new(
            eq,
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(self)
    }
}

impl DisplayAs for AsOfHashJoinExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        self.spec.fmt_as("AsOfHashJoinExec", f)?;
        if let Some(p) = &self.projection {
            let cols: Vec<String> = p.iter().map(|(i, name)| format!("{name}@{i}")).collect();
            write!(f, ", projection=[{}]", cols.join(", "))?;
        }
        Ok(())
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
        self.spec.distribution()
    }

    /// The left order is kept; with an embedded projection the output's
    /// columns are no longer the left's at the same positions, so no
    /// ordering requirement may be passed down through it.
    fn maintains_input_order(&self) -> Vec<bool> {
        vec![self.projection.is_none(), false]
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
        Ok(Arc::new(
            AsOfHashJoinExec::try_new(left, right, self.spec.clone(), self.join_schema.clone())?
                .with_projection(self.projection.clone())?,
        ))
    }

    /// Embeds a projection of plain columns above this join, so that only
    /// the columns it keeps are gathered.
    fn try_swapping_with_projection(
        &self,
        projection: &ProjectionExec,
    ) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
        let mut cols = Vec::with_capacity(projection.expr().len());
        for e in projection.expr() {
            let Some(c) = e.expr.downcast_ref::<Column>() else {
                return Ok(None);
            };
            let i = match &self.projection {
                Some(p) => p[c.index()].0,
                None => c.index(),
            };
            cols.push((i, e.alias.clone()));
        }
        let join = AsOfHashJoinExec::try_new(
            self.left.clone(),
            self.right.clone(),
            self.spec.clone(),
            self.join_schema.clone(),
        )?
        .with_projection(Some(cols))?;
        Ok(Some(Arc::new(join)))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let left = self.left.execute(partition, context.clone())?;
        let right = self.right.execute(partition, context.clone())?;
        let key_types = self
            .spec
            .left_keys
            .iter()
            .map(|k| k.data_type(&self.left.schema()))
            .collect::<DfResult<Vec<_>>>()?;
        let hasher = KeyHasher::new(&key_types)?;
        let (right_out, null_row) = self.spec.right_output(&self.right.schema());
        let reservation = MemoryConsumer::new(format!("AsOfHashJoinExec[{partition}]"))
            .register(context.memory_pool());
        let build_time = MetricBuilder::new(&self.metrics).subset_time("build_time", partition);
        let probe = Probe {
            left_keys: self.spec.left_keys.clone(),
            left_ts: self.spec.left_ts.clone(),
            hasher,
            op: self.spec.op,
            kind: self.spec.kind,
            right_out,
            null_row,
            schema: self.schema.clone(),
            projection: self
                .projection
                .as_ref()
                .map(|p| p.iter().map(|(i, _)| *i).collect()),
            baseline: BaselineMetrics::new(&self.metrics, partition),
            chunk_rows: context.session_config().batch_size() * CHUNK_BATCHES,
        };
        let build = Build {
            right,
            keys: self.spec.right_keys.clone(),
            ts: self.spec.right_ts.clone(),
            deleted: self.spec.right_deleted,
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
        // The radix pass's buffer: as large as the entries.
        self.reservation
            .try_grow(entries.len() * std::mem::size_of::<(u64, i64, u64)>())?;
        sort_entries(&mut entries);
        let n = entries.len();
        let mut sorted = Vec::with_capacity(n);
        let mut run_hash = Vec::new();
        let mut run_start = Vec::new();
        for (i, &(h, t, p)) in entries.iter().enumerate() {
            if run_hash.last() != Some(&h) {
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
    /// Output columns (indices into the joined row), when projected.
    projection: Option<Vec<usize>>,
    baseline: BaselineMetrics,
    /// Left rows answered together ([`CHUNK_BATCHES`] batches).
    chunk_rows: usize,
}

impl Probe {
    fn stream(
        self,
        index: Arc<Index>,
        left: SendableRecordBatchStream,
    ) -> SendableRecordBatchStream {
        let schema = self.schema.clone();
        let state = (self, index, left, VecDeque::<RecordBatch>::new(), false);
        let stream = futures::stream::try_unfold(
            state,
            |(st, index, mut left, mut ready, mut done)| async move {
                loop {
                    if let Some(out) = ready.pop_front() {
                        return Ok(Some((out, (st, index, left, ready, done))));
                    }
                    if done {
                        return Ok(None);
                    }
                    // Up to a chunk of left rows, answered together.
                    let mut chunk = Vec::new();
                    let mut rows = 0;
                    while rows < st.chunk_rows {
                        match left.next().await.transpose()? {
                            Some(b) => {
                                rows += b.num_rows();
                                chunk.push(b);
                            }
                            None => {
                                done = true;
                                break;
                            }
                        }
                    }
                    let timer = st.baseline.elapsed_compute().timer();
                    for out in st.join_chunk(&index, &chunk)? {
                        st.baseline.record_output(out.num_rows());
                        if out.num_rows() > 0 || st.kind == AsOfKind::Left {
                            ready.push_back(out);
                        }
                    }
                    timer.done();
                }
            },
        );
        Box::pin(RecordBatchStreamAdapter::new(schema, stream))
    }

    /// The output batches for a chunk of left batches, one per batch, in
    /// order.
    fn join_chunk(&self, index: &Index, chunk: &[RecordBatch]) -> DfResult<Vec<RecordBatch>> {
        let total: usize = chunk.iter().map(|b| b.num_rows()).sum();
        let mut hashes = Vec::with_capacity(total);
        let mut times = Vec::with_capacity(total);
        let mut live = Vec::with_capacity(total);
        let mut key_rows = Vec::with_capacity(chunk.len());
        let mut starts = Vec::with_capacity(chunk.len() + 1);
        let mut h = Vec::new();
        for batch in chunk {
            starts.push(times.len());
            let (keys, ts, lv) = evaluate(&self.left_keys, &self.left_ts, batch)?;
            key_rows.push(self.hasher.hash(&keys, batch.num_rows(), &mut h)?);
            hashes.extend_from_slice(&h);
            times.extend_from_slice(ts.values());
            live.extend_from_slice(&lv);
        }
        starts.push(total);
        // Chunk row `g` is row `g - starts[b]` of batch `b`.
        let key = |g: usize| {
            let b = starts.partition_point(|&s| s <= g) - 1;
            key_rows[b].as_ref().map(|r| (r, g - starts[b]))
        };
        let found = self.search(index, &hashes, &times, &live, key);
        let right: Vec<&RecordBatch> = index.batches.iter().collect();
        let mut out = Vec::with_capacity(chunk.len());
        for (b, batch) in chunk.iter().enumerate() {
            let matches: Vec<Option<(usize, usize)>> = found[starts[b]..starts[b + 1]]
                .iter()
                .map(|f| {
                    f.and_then(|p| {
                        let (b, r) = ((p >> 32) as usize, (p & u32::MAX as u64) as usize);
                        // A delete version: the key was absent at that time.
                        let gone = index.deleted[b]
                            .as_ref()
                            .is_some_and(|d| d.is_valid(r) && d.value(r));
                        (!gone).then_some((1 + b, r))
                    })
                })
                .collect();
            out.push(assemble(
                &self.schema,
                self.kind,
                batch,
                &matches,
                (&self.null_row, &self.right_out, &right),
                self.projection.as_deref(),
            )?);
        }
        Ok(out)
    }

    /// The matched entry's position (`batch << 32 | row`) for each left row
    /// (`key(i)`: its keys in row format, when hashes are not exact).
    ///
    /// The rows are visited clustered by their hash's top bits (a radix
    /// pass), so consecutive searches fall in the same few runs of the
    /// index: a run comes from memory once per chunk instead of once per
    /// row, and the searches' dependent loads hit the cache.
    fn search<'a>(
        &self,
        index: &Index,
        hashes: &[u64],
        times: &[i64],
        live: &[bool],
        key: impl Fn(usize) -> Option<(&'a Rows, usize)>,
    ) -> Vec<Option<u64>> {
        let mut found = vec![None; hashes.len()];
        let le = matches!(self.op, AsOfOp::Ge | AsOfOp::Lt);
        for (h, t, i) in cluster(hashes, times, live) {
            let i = i as usize;
            let Some(run) = index.run(h) else {
                continue;
            };
            let times = &index.entries[run.clone()];
            let p = run.start
                + if le {
                    times.partition_point(|e| e.0 <= t)
                } else {
                    times.partition_point(|e| e.0 < t)
                };
            found[i] = self
                .nearest(index, (run.start, run.end, p), key(i))
                .map(|e| index.entries[e].1);
        }
        found
    }

    /// The entry a left row matches, given its key's run `start..end` and
    /// the run's partition point `p` for its time (entries before `p` are
    /// the earlier ones: `<= t` for `>=` and `<`, `< t` for `>` and `<=`):
    /// the nearest on the allowed side of `p` with the row's own key.
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
}

/// Left batches answered together (at the default batch size, 1M rows):
/// enough for every run of the index to be searched many times per visit
/// (see [`Probe::search`]).
const CHUNK_BATCHES: usize = 128;

/// The live rows as (hash, time, row), ordered by the top 16 bits of the
/// hash (hash and time travel with the row, so visiting them in this order
/// reads them sequentially).
fn cluster(hashes: &[u64], times: &[i64], live: &[bool]) -> Vec<(u64, i64, u32)> {
    let mut items: Vec<(u64, i64, u32)> = hashes
        .iter()
        .zip(times)
        .zip(live)
        .enumerate()
        .filter(|(_, (_, &l))| l)
        .map(|(i, ((&h, &t), _))| (h, t, i as u32))
        .collect();
    radix16(&mut items, |x| (x.0 >> 48) as u16);
    items
}

/// Sort `items` by a 16-bit key, stably: two 8-bit counting passes, each a
/// sequential read and 256 sequential write streams (cache-friendly where
/// a comparison sort of millions of items is not).
fn radix16<T: Copy + Default>(items: &mut Vec<T>, key: impl Fn(&T) -> u16) {
    let mut tmp = vec![T::default(); items.len()];
    for shift in [0, 8] {
        let digit = |x: &T| ((key(x) >> shift) & 0xff) as usize;
        let mut at = [0usize; 256];
        for x in items.iter() {
            at[digit(x)] += 1;
        }
        let mut sum = 0;
        for a in at.iter_mut() {
            let c = *a;
            *a = sum;
            sum += c;
        }
        for x in items.iter() {
            let d = digit(x);
            tmp[at[d]] = *x;
            at[d] += 1;
        }
        std::mem::swap(items, &mut tmp);
    }
}

/// Sort index entries by (hash, time, position): a radix pass on the
/// hash's top 16 bits, then each of the (small) buckets on its own.
fn sort_entries(entries: &mut Vec<(u64, i64, u64)>) {
    if entries.len() < 1 << 16 {
        entries.sort_unstable();
        return;
    }
    radix16(entries, |e| (e.0 >> 48) as u16);
    let mut from = 0;
    while from < entries.len() {
        let top = entries[from].0 >> 48;
        let to = from + entries[from..].partition_point(|e| e.0 >> 48 == top);
        entries[from..to].sort_unstable();
        from = to;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};
    use datafusion::execution::memory_pool::{GreedyMemoryPool, MemoryPool};
    use datafusion::physical_expr::expressions::Column;
    use datafusion::physical_plan::memory::MemoryStream;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// The radix path of the index sort (large inputs) orders entries as a
    /// comparison sort does, with hashes that share their top bits.
    #[test]
    fn radix_sorted_entries_equal_a_comparison_sort() {
        let seed: u64 = rand::rng().random();
        println!("radix_sorted_entries_equal_a_comparison_sort: seed {seed}");
        let mut rng = StdRng::seed_from_u64(seed);
        let hashes: Vec<u64> = (0..5000).map(|_| rng.random()).collect();
        let entries: Vec<(u64, i64, u64)> = (0..200_000u64)
            .map(|p| {
                let h = if rng.random_range(0..4) == 0 {
                    rng.random::<u64>() & 0xffff_0000_0000_00ff
                } else {
                    hashes[rng.random_range(0..hashes.len())]
                };
                (h, rng.random_range(-50..50), p)
            })
            .collect();
        let mut radix = entries.clone();
        sort_entries(&mut radix);
        let mut want = entries;
        want.sort_unstable();
        assert!(radix == want, "seed {seed}");
    }

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
                projection: None,
                baseline: BaselineMetrics::new(&ExecutionPlanMetricsSet::new(), 0),
                chunk_rows: 1,
            };
            let found = probe.search(&index, &hashes, lts.values(), &live, |i| {
                rows.as_ref().map(|r| (r, i))
            });
            for (i, f) in found.iter().enumerate() {
                let got = f.map(|p| (p >> 32) as usize * 64 + (p & u32::MAX as u64) as usize);
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
