//! [`TemporalScanExec`]: reads one dataset view from the temporal store.
//!
//! Produces a single partition. Point lookups (every key field bound) run
//! inline as one batched seek per key; range scans run on a blocking thread
//! and stream batches through a bounded channel, so a large scan holds at most
//! a couple of batches in memory.

use std::fmt;
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanBuilder};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::Result as DfResult;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use thyme_storage::{TemporalStore, TimeRange, VersionRef};

use thyme_table::catalog::Dataset;
use thyme_table::codec::RowDecoder;
use thyme_table::error::{Error, Result};
use thyme_table::ingest::LOG_UPSERT;

/// What to read.
#[derive(Debug, Clone, PartialEq)]
pub enum ScanSpec {
    /// The filters contradict each other: no rows.
    Nothing,
    /// The current row of each of these (complete, encoded) keys.
    PointKeys { keys: Vec<Vec<u8>>, as_of: i64 },
    /// The current row of every key starting with one of these prefixes
    /// (a single empty prefix: every key).
    Latest { prefixes: Vec<Vec<u8>>, as_of: i64 },
    /// Every version of the keys starting with these prefixes.
    History {
        prefixes: Vec<Vec<u8>>,
        range: TimeRange,
    },
    /// Events of a keyless dataset.
    Events { range: TimeRange },
    /// Events of a keyless dataset read from its log, records `[from, to)`
    /// (see [`TemporalScanExec::with_partitions`]), in write order.
    EventLog { from: u64, to: u64 },
}

/// Scan of a dataset view; see the module docs.
#[derive(Debug, Clone)]
pub struct TemporalScanExec {
    ds: Arc<Dataset>,
    store: Arc<dyn TemporalStore>,
    /// Projection into the table schema.
    projection: Vec<usize>,
    /// Output schema (the projected table schema).
    schema: SchemaRef,
    spec: ScanSpec,
    /// What each output partition reads (one part unless split).
    parts: Vec<ScanSpec>,
    limit: Option<usize>,
    props: Arc<PlanProperties>,
}

impl TemporalScanExec {
    pub fn new(
        ds: Arc<Dataset>,
        store: Arc<dyn TemporalStore>,
        table_schema: SchemaRef,
        projection: Vec<usize>,
        spec: ScanSpec,
        limit: Option<usize>,
    ) -> Self {
        let schema = Arc::new(
            table_schema
                .project(&projection)
                .expect("projection within the table schema"),
        );
        let props = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        TemporalScanExec {
            ds,
            store,
            projection,
            schema,
            parts: vec![spec.clone()],
            spec,
            limit,
            props,
        }
    }

    /// Split a scan of a keyless dataset's events into up to `n` partitions,
    /// read in parallel. Other scans, and scans with a limit, stay whole. The
    /// partitions together are no longer one stream in event-time order, so
    /// this is for consumers that do not need that order (see
    /// [`split_scans`]).
    ///
    /// When the time range covers every event, the parts read the dataset's
    /// log instead (events are immutable, so its records are exactly the
    /// events): equal slices of the records written so far, a few block
    /// reads each instead of one iterator step per event. Otherwise the
    /// range is split by event time into parts of similar span, between the
    /// dataset's first and last event.
    pub fn with_partitions(mut self, n: usize) -> Self {
        let ScanSpec::Events { range } = &self.spec else {
            return self;
        };
        if n < 2 || self.limit.is_some() {
            return self;
        }
        // The log's length first: every record before it is then an event
        // already visible to the bounds read next.
        let Ok(end) = self.store.log_end(self.ds.id) else {
            return self;
        };
        let Ok(Some((first, last))) = self.store.event_time_bounds(self.ds.id) else {
            return self;
        };
        let mut parts = Vec::with_capacity(n);
        if range.start <= first && last <= range.end {
            let mut from = 0;
            for i in 1..=n as u64 {
                let to = end * i / n as u64;
                if to > from {
                    parts.push(ScanSpec::EventLog { from, to });
                }
                from = to;
            }
        } else {
            let lo = first.max(range.start) as i128;
            let hi = last.min(range.end) as i128;
            if hi - lo < n as i128 {
                return self;
            }
            let mut bounds: Vec<i64> = (1..n)
                .map(|i| (lo + (hi - lo) * i as i128 / n as i128) as i64)
                .collect();
            bounds.dedup();
            let mut start = range.start;
            for b in bounds {
                parts.push(ScanSpec::Events {
                    range: TimeRange { start, end: b - 1 },
                });
                start = b;
            }
            parts.push(ScanSpec::Events {
                range: TimeRange {
                    start,
                    end: range.end,
                },
            });
        }
        if parts.len() < 2 {
            return self;
        }
        self.props = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(self.schema.clone()),
            Partitioning::UnknownPartitioning(parts.len()),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        self.parts = parts;
        self
    }

    pub fn spec(&self) -> &ScanSpec {
        &self.spec
    }
}

impl DisplayAs for TemporalScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let what = match &self.spec {
            ScanSpec::Nothing => "empty".to_string(),
            ScanSpec::PointKeys { keys, as_of } => {
                format!("point_keys={} as_of={as_of}", keys.len())
            }
            ScanSpec::Latest { prefixes, as_of } => {
                format!("latest prefixes={} as_of={as_of}", prefixes.len())
            }
            ScanSpec::History { prefixes, range } => {
                format!(
                    "history prefixes={} time=[{}, {}]",
                    prefixes.len(),
                    range.start,
                    range.end
                )
            }
            ScanSpec::Events { range } => format!("events time=[{}, {}]", range.start, range.end),
            ScanSpec::EventLog { from, to } => format!("events log=[{from}, {to})"),
        };
        write!(f, "TemporalScanExec: dataset={} {what}", self.ds.name())?;
        if self.parts.len() > 1 {
            write!(f, " partitions={}", self.parts.len())?;
            if matches!(self.parts[0], ScanSpec::EventLog { .. }) {
                write!(f, " from log")?;
            }
        }
        if let Some(l) = self.limit {
            write!(f, " limit={l}")?;
        }
        Ok(())
    }
}

/// Accumulates visited versions into batches of the output schema.
struct BatchMaker {
    decoder: RowDecoder,
    /// For every output column: `Some(i)` = i-th decoded field, `None` = `_deleted`.
    layout: Vec<Option<usize>>,
    deleted: BooleanBuilder,
    want_deleted: bool,
    batch_size: usize,
    remaining: usize,
    schema: SchemaRef,
}

impl BatchMaker {
    fn new(
        ds: &Dataset,
        projection: &[usize],
        schema: SchemaRef,
        batch_size: usize,
        limit: Option<usize>,
    ) -> Self {
        let n = ds.fields().len();
        let fields: Vec<usize> = projection.iter().copied().filter(|&p| p < n).collect();
        let mut next = 0;
        let layout = projection
            .iter()
            .map(|&p| {
                if p < n {
                    next += 1;
                    Some(next - 1)
                } else {
                    None
                }
            })
            .collect::<Vec<_>>();
        let want_deleted = layout.iter().any(|l| l.is_none());
        // Nullable here: a history's delete markers carry only the key and
        // the time (the output schema says what may really be null).
        let projected = ds.schema().project(&fields).expect("dataset fields");
        let decoded_schema = Arc::new(arrow::datatypes::Schema::new(
            projected
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ));
        BatchMaker {
            decoder: RowDecoder::new(
                ds,
                &fields,
                decoded_schema,
                batch_size.min(limit.unwrap_or(usize::MAX)),
            ),
            layout,
            deleted: BooleanBuilder::new(),
            want_deleted,
            batch_size,
            remaining: limit.unwrap_or(usize::MAX),
            schema,
        }
    }

    /// Add one version; returns true when a batch is full.
    fn push(&mut self, v: &VersionRef<'_>) -> Result<bool> {
        self.decoder.append(v.value)?;
        if self.want_deleted {
            self.deleted.append_value(v.deleted);
        }
        self.remaining -= 1;
        Ok(self.decoder.len() >= self.batch_size)
    }

    fn done(&self) -> bool {
        self.remaining == 0
    }

    fn finish(&mut self) -> Result<Option<RecordBatch>> {
        let rows = self.decoder.len();
        if rows == 0 {
            return Ok(None);
        }
        let decoded = self.decoder.finish(vec![])?;
        let deleted: ArrayRef = Arc::new(self.deleted.finish());
        let cols: Vec<ArrayRef> = self
            .layout
            .iter()
            .map(|l| match l {
                Some(i) => decoded.column(*i).clone(),
                None => deleted.clone(),
            })
            .collect();
        let opts = arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(rows));
        Ok(Some(RecordBatch::try_new_with_options(
            self.schema.clone(),
            cols,
            &opts,
        )?))
    }
}

/// Run `spec`, handing each finished batch to `emit` (which returns false to stop).
fn run_scan(
    ds: &Dataset,
    store: &dyn TemporalStore,
    spec: &ScanSpec,
    maker: &mut BatchMaker,
    emit: &mut dyn FnMut(RecordBatch) -> bool,
) -> Result<()> {
    if maker.done() {
        return Ok(());
    }
    let mut err: Option<Error> = None;
    let mut stopped = false;
    // Reads at a time decay `ExpDecaySum` fields from their row's time.
    let decay = ds.decay();
    let read_at = match spec {
        ScanSpec::PointKeys { as_of, .. } | ScanSpec::Latest { as_of, .. } if !decay.is_empty() => {
            Some(*as_of)
        }
        _ => None,
    };
    let mut visit = |v: VersionRef<'_>| -> bool {
        let decayed;
        let v = match read_at {
            Some(t) if !v.deleted => match decay.apply(ds, v.value, t) {
                Ok(b) => {
                    decayed = b;
                    VersionRef {
                        value: &decayed,
                        ..v
                    }
                }
                Err(e) => {
                    err = Some(e);
                    return false;
                }
            },
            _ => v,
        };
        match maker.push(&v) {
            Ok(full) => {
                if full || maker.done() {
                    match maker.finish() {
                        Ok(Some(b)) => {
                            if !emit(b) {
                                stopped = true;
                                return false;
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            err = Some(e);
                            return false;
                        }
                    }
                }
                !maker.done()
            }
            Err(e) => {
                err = Some(e);
                false
            }
        }
    };
    let id = ds.id;
    match spec {
        ScanSpec::Nothing => {}
        ScanSpec::PointKeys { keys, as_of } => {
            let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
            let mut go = true;
            store.get_as_of(id, &refs, *as_of, &mut |_, v| {
                if let Some(v) = v {
                    if go && !v.deleted {
                        go = visit(v);
                    }
                }
            })?;
        }
        ScanSpec::Latest { prefixes, as_of } => {
            for p in prefixes {
                let mut go = true;
                store.scan_latest(id, p, *as_of, &mut |v| {
                    go = visit(v);
                    go
                })?;
                if !go {
                    break;
                }
            }
        }
        ScanSpec::History { prefixes, range } => {
            for p in prefixes {
                let mut go = true;
                store.scan_history(id, p, *range, &mut |v| {
                    go = visit(v);
                    go
                })?;
                if !go {
                    break;
                }
            }
        }
        ScanSpec::Events { range } => {
            store.scan_events(id, *range, &mut visit)?;
        }
        ScanSpec::EventLog { from, to } => {
            // In slices, so that a consumer that stops is not read for.
            const SLICE: u64 = 1 << 16;
            let (mut at, mut go, mut bad) = (*from, true, None);
            while go && at < *to {
                let max = (*to - at).min(SLICE) as usize;
                let next = store.read_log(id, at, max, &mut |off, rec| {
                    if !go {
                        return;
                    }
                    let Some((&LOG_UPSERT, row)) = rec.split_first() else {
                        bad = Some(Error::Internal(format!(
                            "log record {off} of the keyless dataset {} is not an event",
                            ds.name()
                        )));
                        go = false;
                        return;
                    };
                    go = visit(VersionRef {
                        key: &[],
                        ts: 0,
                        seq: off,
                        deleted: false,
                        value: row,
                    });
                })?;
                if next == at {
                    break;
                }
                at = next;
            }
            if let Some(e) = bad {
                return Err(e);
            }
        }
    }
    if let Some(e) = err {
        return Err(e);
    }
    if !stopped {
        if let Some(b) = maker.finish()? {
            emit(b);
        }
    }
    Ok(())
}

impl ExecutionPlan for TemporalScanExec {
    fn name(&self) -> &str {
        "TemporalScanExec"
    }

    /// Row count estimates: exact for contradictory filters, at most the
    /// number of keys for point reads, otherwise the dataset log's length
    /// (every event written, an upper bound on rows and versions).
    fn statistics_from_inputs(
        &self,
        _input_stats: &[Arc<datafusion::common::Statistics>],
        args: &datafusion::physical_plan::StatisticsArgs,
    ) -> DfResult<Arc<datafusion::common::Statistics>> {
        use datafusion::common::stats::Precision;
        let mut stats = datafusion::common::Statistics::new_unknown(&self.schema);
        let rows = match &self.spec {
            ScanSpec::Nothing => Precision::Exact(0),
            ScanSpec::PointKeys { keys, .. } => Precision::Inexact(keys.len()),
            _ => match self.store.log_end(self.ds.id) {
                Ok(n) => Precision::Inexact(n as usize),
                Err(_) => Precision::Absent,
            },
        };
        let rows = match (rows, args.partition()) {
            (Precision::Inexact(n), Some(_)) => Precision::Inexact(n / self.parts.len()),
            (r, _) => r,
        };
        stats.num_rows = match (rows, self.limit) {
            (Precision::Inexact(n), Some(l)) => Precision::Inexact(n.min(l)),
            (r, _) => r,
        };
        Ok(Arc::new(stats))
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let Some(spec) = self.parts.get(partition) else {
            return Err(DataFusionError::Internal(format!(
                "TemporalScanExec has {} partition(s), asked for {partition}",
                self.parts.len()
            )));
        };
        let batch_size = context.session_config().batch_size();
        let mut maker = BatchMaker::new(
            &self.ds,
            &self.projection,
            self.schema.clone(),
            batch_size,
            self.limit,
        );
        let inline = matches!(spec, ScanSpec::Nothing)
            || matches!(spec, ScanSpec::PointKeys { keys, .. } if keys.len() <= 1024);
        if inline {
            let mut out = Vec::new();
            run_scan(&self.ds, self.store.as_ref(), spec, &mut maker, &mut |b| {
                out.push(Ok(b));
                true
            })
            .map_err(DataFusionError::from)?;
            return Ok(Box::pin(RecordBatchStreamAdapter::new(
                self.schema.clone(),
                futures::stream::iter(out),
            )));
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<DfResult<RecordBatch>>(2);
        let ds = self.ds.clone();
        let store = self.store.clone();
        let spec = spec.clone();
        tokio::task::spawn_blocking(move || {
            let res = run_scan(&ds, store.as_ref(), &spec, &mut maker, &mut |b| {
                tx.blocking_send(Ok(b)).is_ok()
            });
            if let Err(e) = res {
                let _ = tx.blocking_send(Err(e.into()));
            }
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            stream,
        )))
    }
}

/// `plan` with its event scans split into `n` time partitions
/// ([`TemporalScanExec::with_partitions`]), not below a limit (whose rows
/// would then depend on the split). For operators that repartition and
/// sort their inputs anyway, such as the ASOF join: the scans then run on
/// every core.
pub fn split_scans(plan: Arc<dyn ExecutionPlan>, n: usize) -> DfResult<Arc<dyn ExecutionPlan>> {
    if n < 2 {
        return Ok(plan);
    }
    if let Some(scan) = plan.downcast_ref::<TemporalScanExec>() {
        return Ok(Arc::new(scan.clone().with_partitions(n)));
    }
    let name = plan.name();
    if name.contains("Limit") || plan.fetch().is_some() {
        return Ok(plan);
    }
    let children: Vec<Arc<dyn ExecutionPlan>> = plan.children().into_iter().cloned().collect();
    if children.is_empty() {
        return Ok(plan);
    }
    let split = children
        .into_iter()
        .map(|c| split_scans(c, n))
        .collect::<DfResult<Vec<_>>>()?;
    datafusion::physical_plan::execution_plan::replace_children_if_necessary(plan, split)
}
