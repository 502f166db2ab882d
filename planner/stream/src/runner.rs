//! [`PipelineRunner`]: one committed pipeline's operator graph, its input
//! offsets and checkpoint, and the step that reads, computes and commits
//! atomically (see the crate docs for the guarantees).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, StringBuilder, TimestampMicrosecondBuilder, UInt32Array, UInt64Array,
};
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::prelude::SessionContext;
use serde::{Deserialize, Serialize};
use thyme_model::duration::{self, Duration};
use thyme_model::payload::{ExprOrFunc, Node, Pipeline};
use thyme_storage::{DatasetId, TemporalStore, WriteBatch};

use thyme_table::catalog::{Catalog, Dataset, DatasetDef, FieldDef};
use thyme_table::codec::RowDecoder;
use thyme_table::error::{Error, Result};
use thyme_table::expr::Compiled;
use thyme_table::ingest::{add_deletes, add_rows, LOG_DELETE};
use thyme_table::registry::Registry;
use thyme_table::types::DType;
use thyme_table::udf::PythonRuntime;

use crate::aggregate::AggregateOp;
use crate::ops::{self, Flow, JoinOp};

pub use thyme_table::catalog::LATE_TABLE;

/// How long (microseconds) a pipeline's inputs must have had nothing new
/// before its aggregations advance with the clock instead of event time
/// (the idleness timeout of a watermark, in Flink's terms).
pub const IDLE_AFTER: i64 = 200_000;

/// What a runner has stored about its progress (one catalog entry, written
/// with every step).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Checkpoint {
    /// Next log offset to read, per input.
    offsets: Vec<u64>,
    /// Newest event time seen, per input.
    max_ts: Vec<i64>,
    /// Every aggregation change point up to here has been written.
    horizon: i64,
    /// Hidden datasets holding operator state, by node id.
    state: BTreeMap<usize, DatasetId>,
    late: u64,
    rows_out: u64,
    /// Layout of aggregation state records: 0 (absent in checkpoints
    /// written before it existed) one value per aggregation,
    /// [`STATE_FORMAT`] one per distinct input column.
    #[serde(default)]
    state_format: u32,
}

/// Layout of aggregation state records written by new pipelines.
const STATE_FORMAT: u32 = 1;

/// A snapshot of a runner's progress.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Progress {
    pub pipeline: String,
    pub dataset: String,
    pub inputs: Vec<InputProgress>,
    /// Records still to read, over all inputs.
    pub lag: u64,
    pub late_events: u64,
    pub rows_written: u64,
    pub keys: usize,
    pub buffered_events: usize,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct InputProgress {
    pub dataset: String,
    pub offset: u64,
    pub end: u64,
    pub watermark: Option<String>,
}

struct Input {
    ds: Arc<Dataset>,
    schema: SchemaRef,
    disorder: Option<i64>,
}

enum Op {
    Input(usize),
    Filter(Option<Compiled>, ExprOrFunc),
    Assign(Vec<(String, Option<Compiled>, thyme_model::payload::Assigned)>),
    Select(Vec<String>),
    Drop(Vec<String>),
    Rename(BTreeMap<String, String>),
    DropNull(Option<Vec<String>>),
    Join(JoinOp),
    Explode(Vec<String>),
    Transform(thyme_model::payload::Func, Option<SchemaRef>),
    Union(Vec<usize>),
    Changelog(String),
    /// Terminal operators.
    Aggregate(Box<Option<AggregateOp>>, Node),
    Latest,
    /// Per key the earliest event time written, and versions to rewrite
    /// after this step's rows.
    First(HashMap<Vec<u8>, i64>, Vec<(Vec<u8>, i64, Vec<u8>)>),
    Dedup(Option<Vec<String>>),
}

/// Runs one committed pipeline.
pub struct PipelineRunner {
    store: Arc<dyn TemporalStore>,
    name: String,
    out: Arc<Dataset>,
    inputs: Vec<Input>,
    /// Operators by node id (`nodes[i]` reads earlier nodes only).
    ops: Vec<Op>,
    deps: Vec<Vec<usize>>,
    output: usize,
    ctx: SessionContext,
    python: Option<Arc<dyn PythonRuntime>>,
    imports: String,
    ckpt: Checkpoint,
    ckpt_key: String,
    late: Arc<Dataset>,
    /// Records per input read by one step.
    pub chunk: usize,
    /// The previous step's write, still in flight: a step computes while
    /// the previous one is written, and waits for it before handing over
    /// its own (writes stay in order, each atomic).
    in_flight: Option<std::thread::JoinHandle<Result<()>>>,
    /// The clock at the last step that consumed input (`None`: none yet).
    last_input: Option<i64>,
    /// Size of the last write of a step with input (operations, bytes):
    /// the next such step reserves as much up front instead of growing by
    /// doubling.
    last_write: (usize, usize),
}

fn micros(s: &str) -> Result<Option<i64>> {
    match duration::parse(s).map_err(Error::InvalidDefinition)? {
        Duration::Forever => Ok(None),
        Duration::Micros(m) => Ok(Some(m)),
    }
}

/// The disorder of a committed dataset: its sources' largest, or for a
/// pipeline-made dataset its inputs'.
fn disorder_of(reg: &Registry, name: &str, depth: usize) -> Result<Option<i64>> {
    let Some(d) = reg.dataset(name) else {
        return Ok(None);
    };
    let d = d.definition;
    let mut best: Option<i64> = None;
    let mut any = false;
    for s in &d.sources {
        if let Some(x) = &s.disorder {
            any = true;
            best = best.max(micros(x)?.or(Some(i64::MAX)));
        }
    }
    if !any && depth < 16 {
        for p in &d.pipelines {
            for i in &p.inputs {
                best = best.max(disorder_of(reg, i, depth + 1)?);
            }
        }
    }
    Ok(best)
}

fn relaxed(ds: &Dataset) -> SchemaRef {
    Arc::new(Schema::new(
        ds.fields()
            .iter()
            .map(|f| Field::new(&f.name, f.dtype.arrow(), true))
            .collect::<Vec<_>>(),
    ))
}

fn fmt_ts(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_default()
}

/// The table late events go to (created on first use).
pub fn late_table(catalog: &Catalog) -> Result<Arc<Dataset>> {
    if let Some(d) = catalog.get(LATE_TABLE) {
        return Ok(d);
    }
    let f = |n: &str, dtype| FieldDef {
        name: n.into(),
        dtype,
        nullable: false,
    };
    catalog.create(
        DatasetDef {
            name: LATE_TABLE.into(),
            fields: vec![
                f("pipeline", DType::Str),
                f("dataset", DType::Str),
                f("event_ts", DType::Datetime),
                f("watermark", DType::Datetime),
                f("row", DType::Str),
                f("ts", DType::Datetime),
            ],
            keys: vec![],
            timestamp: "ts".into(),
            version: 1,
            index: false,
            decay: vec![],
        },
        true,
    )?;
    catalog
        .get(LATE_TABLE)
        .ok_or_else(|| Error::Internal("late events table missing".into()))
}

impl PipelineRunner {
    /// Open the runner of pipeline `p`, whose output table is `out`,
    /// resuming from its stored checkpoint.
    pub fn open(
        registry: &Registry,
        p: &Pipeline,
        out: Arc<Dataset>,
        python: Option<Arc<dyn PythonRuntime>>,
    ) -> Result<Self> {
        let catalog = registry.catalog();
        let store = catalog.store().clone();
        let ckpt_key = format!("pipeline/{}/{}", out.id, p.name);
        let mut ckpt: Checkpoint = match store.catalog_get(&ckpt_key)? {
            Some(b) => serde_json::from_slice(&b)
                .map_err(|e| Error::Internal(format!("pipeline checkpoint: {e}")))?,
            None => Checkpoint {
                offsets: vec![0; p.inputs.len()],
                max_ts: vec![i64::MIN; p.inputs.len()],
                horizon: i64::MIN,
                state_format: STATE_FORMAT,
                ..Default::default()
            },
        };
        let mut inputs = Vec::new();
        for name in &p.inputs {
            let sql = thyme_model::snake_case(name);
            let ds = catalog
                .get(&sql)
                .ok_or_else(|| Error::UnknownTable(sql.clone()))?;
            inputs.push(Input {
                schema: relaxed(&ds),
                ds,
                disorder: disorder_of(registry, name, 0)?,
            });
        }
        // Every node's output schema, by the model's rules (the ones the
        // commit was validated with): operators take their shapes from it.
        let defs = p
            .inputs
            .iter()
            .map(|name| {
                registry
                    .dataset(name)
                    .map(|d| d.definition)
                    .ok_or_else(|| Error::UnknownTable(name.clone()))
            })
            .collect::<Result<Vec<_>>>()?;
        let schemas = thyme_model::validate::pipeline_schemas(p, &defs.iter().collect::<Vec<_>>())
            .map_err(|e| Error::InvalidDefinition(e.to_string()))?;
        let mut ops = Vec::with_capacity(p.nodes.len());
        let mut deps = Vec::with_capacity(p.nodes.len());
        let mut fresh = false;
        for n in &p.nodes {
            let node_schema = &schemas[n.id()];
            deps.push(n.inputs());
            ops.push(match n {
                Node::Input { dataset, .. } => Op::Input(
                    p.inputs
                        .iter()
                        .position(|i| i == dataset)
                        .ok_or_else(|| Error::InvalidDefinition(format!("input {dataset} is not among the pipeline's inputs")))?,
                ),
                Node::Filter { predicate, .. } => Op::Filter(None, predicate.clone()),
                Node::Assign { columns, .. } => Op::Assign(
                    columns
                        .iter()
                        .map(|(k, v)| (k.clone(), None, v.clone()))
                        .collect(),
                ),
                Node::Transform { func, schema, .. } => {
                    // No schema: the result has the input's columns (as
                    // the frame brings them); else the node's.
                    let schema = match schema {
                        None => None,
                        Some(_) => Some(Arc::new(Schema::new(
                            node_schema
                                .fields
                                .iter()
                                .map(|(n, t)| {
                                    let (d, _) = thyme_table::registry::stored_type(t)
                                        .map_err(Error::InvalidDefinition)?;
                                    Ok(Field::new(n, d.arrow(), true))
                                })
                                .collect::<Result<Vec<_>>>()?,
                        ))),
                    };
                    Op::Transform(func.clone(), schema)
                }
                Node::Select { columns, .. } => Op::Select(columns.clone()),
                Node::Drop { columns, .. } => Op::Drop(columns.clone()),
                Node::Rename { columns, .. } => Op::Rename(columns.clone()),
                Node::DropNull { columns, .. } => Op::DropNull(columns.clone()),
                Node::Join {
                    dataset,
                    how,
                    on,
                    left_on,
                    right_on,
                    within,
                    input,
                    ..
                } => {
                    let sql = thyme_model::snake_case(dataset);
                    let right = catalog
                        .get(&sql)
                        .ok_or_else(|| Error::UnknownTable(sql.clone()))?;
                    let names = |i: usize| right.fields()[i].name.clone();
                    let left_keys = right
                        .key_indices()
                        .iter()
                        .map(|&k| {
                            let kn = names(k);
                            match (on, left_on, right_on) {
                                (Some(_), _, _) => Ok(kn),
                                (None, Some(l), Some(r)) => r
                                    .iter()
                                    .position(|x| *x == kn)
                                    .and_then(|i| l.get(i).cloned())
                                    .ok_or_else(|| Error::InvalidDefinition(format!("join with {dataset}: key {kn} is not joined on"))),
                                _ => Err(Error::InvalidDefinition(format!("join with {dataset}: no join keys"))),
                            }
                        })
                        .collect::<Result<Vec<_>>>()?;
                    // The right fields brought in: what the node's schema
                    // adds to its input's, in its order.
                    let left = &schemas[*input];
                    let fields = node_schema
                        .fields
                        .iter()
                        .filter(|(f, _)| left.get(f).is_none())
                        .map(|(f, _)| {
                            right.fields().iter().position(|x| &x.name == f).ok_or_else(|| {
                                Error::InvalidDefinition(format!("join with {dataset}: no field {f}"))
                            })
                        })
                        .collect::<Result<Vec<_>>>()?;
                    let (before, after) = match within {
                        Some((b, a)) => (micros(b)?, micros(a)?.unwrap_or(i64::MAX)),
                        None => (None, 0),
                    };
                    Op::Join(JoinOp {
                        right,
                        left_keys,
                        fields,
                        how: *how,
                        before,
                        after,
                    })
                }
                Node::Aggregate { .. } => {
                    if let std::collections::btree_map::Entry::Vacant(e) = ckpt.state.entry(n.id()) {
                        e.insert(store.allocate_dataset_id()?);
                        fresh = true;
                    }
                    Op::Aggregate(Box::new(None), n.clone())
                }
                Node::First { .. } => Op::First(HashMap::new(), Vec::new()),
                Node::Latest { .. } => Op::Latest,
                Node::Dedup { by, window, .. } => {
                    if window.is_some() {
                        return Err(Error::Unsupported(
                            "dedup() with a window (the engine dedups on event time and the by-columns)".into(),
                        ));
                    }
                    if let std::collections::btree_map::Entry::Vacant(e) = ckpt.state.entry(n.id()) {
                        e.insert(store.allocate_dataset_id()?);
                        fresh = true;
                    }
                    Op::Dedup(by.clone())
                }
                Node::Explode { columns, .. } => Op::Explode(columns.clone()),
                Node::Union { inputs, .. } => Op::Union(inputs.clone()),
                Node::Changelog { delete_column, .. } => Op::Changelog(delete_column.clone()),
            });
        }
        for (i, op) in ops.iter().enumerate() {
            let terminal = matches!(op, Op::Aggregate(..) | Op::Latest | Op::First(..));
            if terminal && i != p.output {
                return Err(Error::InvalidDefinition(format!(
                    "pipeline {}: {} must be the last operator",
                    p.name,
                    p.nodes[i].op()
                )));
            }
        }
        let late = late_table(catalog)?;
        let mut runner = PipelineRunner {
            store,
            name: p.name.clone(),
            out,
            inputs,
            ops,
            deps,
            output: p.output,
            ctx: SessionContext::new(),
            python,
            imports: p
                .env
                .as_ref()
                .and_then(|e| e.imports.clone())
                .unwrap_or_default(),
            ckpt,
            ckpt_key,
            late,
            chunk: 32_768,
            in_flight: None,
            last_write: (0, 0),
            last_input: None,
        };
        if fresh {
            let mut wb = WriteBatch::new();
            wb.set_derived();
            runner.put_checkpoint(&mut wb)?;
            runner.store.write(wb)?;
        }
        // A dry run on empty input compiles every operator (and reports a
        // bad definition now rather than on the first event).
        let empty: Vec<Option<Flow>> = (0..runner.inputs.len())
            .map(|i| Some(runner.empty_flow(i)))
            .collect();
        let mut wb = WriteBatch::new();
        runner.run_graph(empty, &mut wb)?;
        runner.restore()?;
        Ok(runner)
    }

    fn empty_flow(&self, i: usize) -> Flow {
        let inp = &self.inputs[i];
        Flow {
            batch: RecordBatch::new_empty(inp.schema.clone()),
            seq: UInt64Array::from(Vec::<u64>::new()),
            del: BooleanArray::from(Vec::<bool>::new()),
            ts_col: inp.ds.fields()[inp.ds.ts_index()].name.clone(),
        }
    }

    /// Rebuild in-memory operator state from what the store holds.
    fn restore(&mut self) -> Result<()> {
        let horizon = self.ckpt.horizon;
        let store = self.store.clone();
        for op in self.ops.iter_mut() {
            match op {
                Op::Aggregate(agg, _) => {
                    // Built by the dry run, with the checkpoint's layout.
                    if let Some(a) = agg.as_mut().as_mut() {
                        a.restore(store.as_ref(), horizon)?;
                    }
                }
                Op::First(seen, _) => {
                    store.scan_history(
                        self.out.id,
                        &[],
                        thyme_storage::TimeRange::ALL,
                        &mut |v| {
                            seen.entry(v.key.to_vec()).or_insert(v.ts);
                            true
                        },
                    )?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn put_checkpoint(&self, wb: &mut WriteBatch) -> Result<()> {
        let b = serde_json::to_vec(&self.ckpt).map_err(|e| Error::Internal(e.to_string()))?;
        wb.put_catalog(&self.ckpt_key, &b);
        Ok(())
    }

    /// The pipeline's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The output dataset.
    pub fn output(&self) -> &Arc<Dataset> {
        &self.out
    }

    /// Current progress.
    pub fn progress(&self) -> Result<Progress> {
        let mut p = Progress {
            pipeline: self.name.clone(),
            dataset: self.out.name().to_string(),
            late_events: self.ckpt.late,
            rows_written: self.ckpt.rows_out,
            ..Default::default()
        };
        for (i, inp) in self.inputs.iter().enumerate() {
            let end = self.store.log_end(inp.ds.id)?;
            p.lag += end.saturating_sub(self.ckpt.offsets[i]);
            p.inputs.push(InputProgress {
                dataset: inp.ds.name().to_string(),
                offset: self.ckpt.offsets[i],
                end,
                watermark: inp
                    .disorder
                    .filter(|_| self.ckpt.max_ts[i] != i64::MIN)
                    .map(|d| fmt_ts(self.ckpt.max_ts[i].saturating_sub(d))),
            });
        }
        for op in &self.ops {
            if let Op::Aggregate(a, _) = op {
                if let Some(a) = a.as_ref() {
                    let (k, e) = a.size();
                    p.keys += k;
                    p.buffered_events += e;
                }
            }
        }
        Ok(p)
    }

    /// Read up to `chunk` records per input, apply them, advance
    /// aggregations (to the newest event time while input flows, to `now`
    /// once it has been idle for [`IDLE_AFTER`]), and commit everything in
    /// one atomic write. Returns the number of input records consumed.
    pub fn step(&mut self, now: i64) -> Result<usize> {
        let mut consumed = 0;
        let mut flows = Vec::with_capacity(self.inputs.len());
        let mut late_rows: Vec<(usize, i64, i64, String)> = Vec::new();
        for i in 0..self.inputs.len() {
            let (flow, n) = self.read_input(i, &mut late_rows)?;
            consumed += n;
            flows.push(flow);
        }
        if self.ops.iter().any(|o| matches!(o, Op::Dedup(_))) {
            // Dedup reads the keys earlier steps stored.
            self.wait_written()?;
        }
        let any_timers = self.has_aggregate();
        if consumed == 0 && !any_timers {
            // Idle: let the last step's write land, so that progress
            // reported now is committed progress.
            self.wait_written()?;
            return Ok(0);
        }
        // Aggregations advance with event time while input flows, and with
        // the clock once the inputs have been idle for IDLE_AFTER (so
        // windows still close when no events arrive). Advancing to the
        // clock during a replay of old events, or in the short gaps between
        // requests of a live stream, would write every key's future exits
        // early, and each later event would rewrite them.
        if consumed > 0 {
            self.last_input = Some(now);
        }
        let idle = consumed == 0
            && self
                .last_input
                .is_none_or(|t| now.saturating_sub(t) >= IDLE_AFTER);
        let newest = self.ckpt.max_ts.iter().copied().max().unwrap_or(i64::MIN);
        let horizon = if idle { now.max(newest) } else { newest }.max(self.ckpt.horizon);
        // A step with input reserves as much as the last one wrote; a step
        // that only advances timers starts small. A step only writes what
        // the pipeline can compute again from its inputs: the store may
        // keep it out of its write-ahead log.
        let mut wb = if consumed > 0 {
            let (ops, bytes) = self.last_write;
            WriteBatch::with_capacity(ops + ops / 8, bytes + bytes / 8)
        } else {
            WriteBatch::new()
        };
        wb.set_derived();
        let written = self.run_graph_and_advance(flows, horizon, &mut wb)?;
        if consumed == 0 && written == 0 {
            self.wait_written()?;
            return Ok(0);
        }
        if !late_rows.is_empty() {
            self.ckpt.late += late_rows.len() as u64;
            self.write_late(&late_rows, now, &mut wb)?;
        }
        self.ckpt.horizon = horizon;
        self.ckpt.rows_out += written as u64;
        self.put_checkpoint(&mut wb)?;
        if consumed > 0 {
            self.last_write = (wb.len(), wb.bytes());
        }
        self.wait_written()?;
        let store = self.store.clone();
        self.in_flight = Some(
            std::thread::Builder::new()
                .name("pipeline write".into())
                .spawn(move || store.write(wb).map(|_| ()).map_err(Error::from))
                .map_err(|e| Error::Internal(format!("cannot start a write: {e}")))?,
        );
        Ok(consumed.max(1))
    }

    /// Wait until the previous step's write is durable; its error, if any,
    /// is this runner's (the caller reopens it from the store).
    pub fn wait_written(&mut self) -> Result<()> {
        match self.in_flight.take() {
            None => Ok(()),
            Some(h) => h
                .join()
                .map_err(|_| Error::Internal("pipeline write panicked".into()))?,
        }
    }

    fn has_aggregate(&self) -> bool {
        self.ops.iter().any(|o| matches!(o, Op::Aggregate(..)))
    }

    /// Decode the next records of input `i`; late rows are set aside.
    fn read_input(
        &mut self,
        i: usize,
        late_rows: &mut Vec<(usize, i64, i64, String)>,
    ) -> Result<(Option<Flow>, usize)> {
        let inp = &self.inputs[i];
        let projection: Vec<usize> = (0..inp.ds.fields().len()).collect();
        let mut dec = RowDecoder::new(&inp.ds, &projection, inp.schema.clone(), self.chunk);
        let mut seqs = Vec::with_capacity(self.chunk);
        let mut dels = Vec::with_capacity(self.chunk);
        let mut err = None;
        let from = self.ckpt.offsets[i];
        let next = self
            .store
            .read_log(inp.ds.id, from, self.chunk, &mut |off, rec| {
                if err.is_some() || rec.is_empty() {
                    return;
                }
                if let Err(e) = dec.append(&rec[1..]) {
                    err = Some(e);
                }
                seqs.push(((i as u64) << 56) | (off << 16));
                dels.push(rec[0] == LOG_DELETE);
            })?;
        if let Some(e) = err {
            return Err(e);
        }
        let n = (next - from) as usize;
        self.ckpt.offsets[i] = next;
        if n == 0 {
            return Ok((None, 0));
        }
        let ts_col = inp.ds.fields()[inp.ds.ts_index()].name.clone();
        let flow = Flow {
            batch: dec.finish(vec![])?,
            seq: UInt64Array::from(seqs),
            del: BooleanArray::from(dels),
            ts_col,
        };
        // Watermark: newest event time so far minus the disorder, in log order.
        let ts = flow.ts()?;
        let mut keep = Vec::with_capacity(ts.len());
        let mut max_ts = self.ckpt.max_ts[i];
        for (r, &t) in ts.iter().enumerate() {
            let late = match inp.disorder {
                Some(d) if max_ts != i64::MIN => t < max_ts.saturating_sub(d),
                _ => false,
            };
            if late {
                let row = flow.batch.slice(r, 1);
                late_rows.push((
                    i,
                    t,
                    max_ts.saturating_sub(inp.disorder.unwrap_or(0)),
                    row_json(&row),
                ));
            }
            keep.push(!late);
            max_ts = max_ts.max(t);
        }
        self.ckpt.max_ts[i] = max_ts;
        let flow = if keep.iter().all(|k| *k) {
            flow
        } else {
            flow.filter(&BooleanArray::from(keep))?
        };
        Ok((Some(flow), n))
    }

    fn write_late(
        &self,
        rows: &[(usize, i64, i64, String)],
        now: i64,
        wb: &mut WriteBatch,
    ) -> Result<()> {
        let n = rows.len();
        let mut p = StringBuilder::new();
        let mut d = StringBuilder::new();
        let mut e =
            TimestampMicrosecondBuilder::with_capacity(n).with_timezone(thyme_table::types::UTC);
        let mut w =
            TimestampMicrosecondBuilder::with_capacity(n).with_timezone(thyme_table::types::UTC);
        let mut r = StringBuilder::new();
        let mut t =
            TimestampMicrosecondBuilder::with_capacity(n).with_timezone(thyme_table::types::UTC);
        for (i, ts, wm, row) in rows {
            p.append_value(&self.name);
            d.append_value(self.inputs[*i].ds.name());
            e.append_value(*ts);
            w.append_value(*wm);
            r.append_value(row);
            t.append_value(now);
        }
        let cols: Vec<ArrayRef> = vec![
            Arc::new(p.finish()),
            Arc::new(d.finish()),
            Arc::new(e.finish()),
            Arc::new(w.finish()),
            Arc::new(r.finish()),
            Arc::new(t.finish()),
        ];
        let batch = RecordBatch::try_new(self.late.schema(), cols)
            .map_err(|e| Error::Internal(e.to_string()))?;
        add_rows(&self.late, &batch, wb)
    }

    /// Run the operator graph on one flow per input (None: nothing new);
    /// returns the output node's flow.
    fn run_graph(
        &mut self,
        mut inputs: Vec<Option<Flow>>,
        wb: &mut WriteBatch,
    ) -> Result<Option<Flow>> {
        let mut results: Vec<Option<Flow>> = Vec::with_capacity(self.ops.len());
        for id in 0..self.ops.len() {
            let deps = self.deps[id].clone();
            let input = deps.first().and_then(|&d| results[d].clone());
            let out = match &mut self.ops[id] {
                Op::Input(i) => inputs[*i].take(),
                Op::Union(ins) => {
                    let fs: Vec<Flow> = ins.iter().filter_map(|&d| results[d].clone()).collect();
                    if fs.is_empty() {
                        None
                    } else {
                        Some(ops::union(&fs)?)
                    }
                }
                op => match input {
                    None => None,
                    Some(f) => {
                        let env = Env {
                            ctx: &self.ctx,
                            store: self.store.as_ref(),
                            out: &self.out,
                            state: &self.ckpt.state,
                            legacy_state: self.ckpt.state_format == 0,
                            python: self.python.as_deref(),
                            imports: &self.imports,
                        };
                        Some(apply(op, &env, id, f, wb)?)
                    }
                },
            };
            results.push(out);
        }
        Ok(results[self.output].take())
    }

    /// Run the graph and write the output; returns the rows written.
    fn run_graph_and_advance(
        &mut self,
        flows: Vec<Option<Flow>>,
        horizon: i64,
        wb: &mut WriteBatch,
    ) -> Result<usize> {
        let out = self.run_graph(flows, wb)?;
        if let Op::Aggregate(agg, _) = &mut self.ops[self.output] {
            let agg = agg
                .as_mut()
                .as_mut()
                .ok_or_else(|| Error::Internal("aggregate not compiled".into()))?;
            agg.advance(horizon)?;
            return match agg.take_output()? {
                Some(b) => {
                    add_rows(&self.out, &b, wb)?;
                    Ok(b.num_rows())
                }
                None => Ok(0),
            };
        }
        let Some(f) = out else { return Ok(0) };
        if f.is_empty() {
            return Ok(0);
        }
        let n = write_flow(&self.out, &f, wb)?;
        if let Op::First(_, rewrites) = &mut self.ops[self.output] {
            let mut rec = Vec::new();
            for (key, ts, row) in rewrites.drain(..) {
                wb.put_version(self.out.id, &key, ts, &row);
                rec.clear();
                rec.push(thyme_table::ingest::LOG_UPSERT);
                rec.extend_from_slice(&row);
                wb.append_log(self.out.id, &rec);
            }
        }
        Ok(n)
    }
}

/// What operators read besides their input.
struct Env<'a> {
    ctx: &'a SessionContext,
    store: &'a dyn TemporalStore,
    out: &'a Arc<Dataset>,
    state: &'a BTreeMap<usize, DatasetId>,
    /// Aggregation state records in the first layout (see
    /// [`AggregateOp::set_legacy_state`]).
    legacy_state: bool,
    python: Option<&'a dyn PythonRuntime>,
    imports: &'a str,
}

impl Env<'_> {
    fn python(&self, what: &str) -> Result<&dyn PythonRuntime> {
        self.python.ok_or_else(|| {
            Error::Unsupported(format!(
                "{what} with a Python function in a server without the embedded interpreter"
            ))
        })
    }
}

impl Drop for PipelineRunner {
    fn drop(&mut self) {
        if let Err(e) = self.wait_written() {
            tracing::error!(pipeline = %self.name, error = %e, "the last pipeline write failed");
        }
    }
}

/// One operator on one flow.
fn apply(op: &mut Op, env: &Env<'_>, id: usize, f: Flow, wb: &mut WriteBatch) -> Result<Flow> {
    let (ctx, store, out, state) = (env.ctx, env.store, env.out, env.state);
    Ok(match op {
        Op::Input(_) | Op::Union(_) => unreachable!("handled by the graph walk"),
        Op::Filter(compiled, pred) => {
            let c = match compiled {
                Some(c) => c,
                None => {
                    let e = match pred {
                        ExprOrFunc::Expr { expr } => expr,
                        ExprOrFunc::Func { func } => {
                            let m = env.python("filter()")?.call_series(
                                func,
                                env.imports,
                                &f.batch,
                                &arrow::datatypes::DataType::Boolean,
                            )?;
                            return f.filter(&ops::mask(&m)?);
                        }
                    };
                    compiled.insert(Compiled::new(ctx, &f.batch.schema(), e, None)?)
                }
            };
            f.filter(&ops::mask(&c.eval(&f.batch)?)?)?
        }
        Op::Assign(cols) => {
            let mut new = Vec::with_capacity(cols.len());
            for (name, compiled, a) in cols.iter_mut() {
                let c = match compiled {
                    Some(c) => c,
                    None => {
                        let e = match &a.value {
                            ExprOrFunc::Expr { expr } => expr,
                            ExprOrFunc::Func { func } => {
                                let (d, _) = thyme_table::registry::stored_type(&a.ty)
                                    .map_err(Error::InvalidDefinition)?;
                                let v = env.python("assign()")?.call_series(
                                    func,
                                    env.imports,
                                    &f.batch,
                                    &d.arrow(),
                                )?;
                                new.push((name.clone(), v));
                                continue;
                            }
                        };
                        compiled.insert(Compiled::new(ctx, &f.batch.schema(), e, Some(&a.ty))?)
                    }
                };
                new.push((name.clone(), c.eval(&f.batch)?));
            }
            ops::assign(&f, new)?
        }
        Op::Select(c) => ops::select(&f, c)?,
        Op::Drop(c) => ops::drop(&f, c)?,
        Op::Rename(c) => ops::rename(&f, c)?,
        Op::DropNull(c) => ops::dropnull(&f, c.as_deref())?,
        Op::Join(j) => j.execute(store, &f)?,
        Op::Explode(c) => ops::explode(&f, c)?,
        Op::Transform(func, schema) => {
            let schema = schema.clone().unwrap_or_else(|| f.batch.schema());
            let b = env
                .python("transform()")?
                .call_frame(func, env.imports, &f.batch, schema)?;
            let (seq, del) = if b.num_rows() == f.len() {
                (f.seq.clone(), f.del.clone())
            } else {
                let first = if f.is_empty() { 0 } else { f.seq.value(0) };
                (
                    UInt64Array::from_iter_values((0..b.num_rows() as u64).map(|i| first + i)),
                    BooleanArray::from(vec![false; b.num_rows()]),
                )
            };
            Flow {
                batch: b,
                seq,
                del,
                ts_col: f.ts_col.clone(),
            }
        }
        Op::Changelog(c) => ops::changelog(&f, c)?,
        Op::Aggregate(agg, node) => {
            if agg.is_none() {
                let Node::Aggregate {
                    keys,
                    window,
                    aggregates,
                    ..
                } = node
                else {
                    unreachable!()
                };
                **agg = Some(AggregateOp::new(
                    &f.batch.schema(),
                    keys,
                    window.as_ref(),
                    aggregates,
                    out.clone(),
                    state[&id],
                )?);
                if let Some(a) = agg.as_mut().as_mut() {
                    a.set_legacy_state(env.legacy_state);
                }
            }
            let a = agg.as_mut().as_mut().expect("just built");
            let ts = f.ts()?;
            a.push(&f.batch, &ts, &f.seq, &f.del, wb)?;
            f
        }
        Op::Latest => f,
        Op::First(seen, rewrites) => {
            // Keep each key's earliest event; an earlier one arriving later
            // replaces it from its own time on (its version is written, and
            // the displaced version is rewritten with it after this step's
            // rows).
            let conformed = conform(out, &f)?;
            let enc = thyme_table::codec::RowEncoder::new(out, &conformed)?;
            let mut best: HashMap<Vec<u8>, (i64, usize)> = HashMap::new();
            let mut key = Vec::new();
            for r in 0..f.len() {
                if f.del.value(r) {
                    continue;
                }
                enc.encode_key(r, &mut key);
                let t = enc.ts(r);
                let current = best
                    .get(&key)
                    .map(|b| b.0)
                    .or_else(|| seen.get(&key).copied());
                if current.is_none_or(|c| t < c) {
                    best.insert(key.clone(), (t, r));
                }
            }
            let mut keep = vec![false; f.len()];
            for (k, (t, r)) in best {
                keep[r] = true;
                if let Some(old) = seen.insert(k.clone(), t) {
                    let mut row = Vec::new();
                    enc.encode_row(r, &mut row);
                    rewrites.push((k, old, row));
                }
            }
            f.filter(&BooleanArray::from(keep))?
        }
        Op::Dedup(by) => {
            let sid = state[&id];
            let schema = f.batch.schema();
            let cols: Vec<usize> = match by {
                Some(b) => b.iter().filter_map(|c| schema.index_of(c).ok()).collect(),
                None => (0..schema.fields().len())
                    .filter(|&i| schema.field(i).name() != &f.ts_col)
                    .collect(),
            };
            let ts = f.ts()?;
            let mut keep = Vec::with_capacity(f.len());
            let mut key = Vec::new();
            let mut fresh: HashSet<(Vec<u8>, i64)> = HashSet::new();
            for (r, &t) in ts.iter().enumerate() {
                key.clear();
                for &c in &cols {
                    let v = datafusion::common::ScalarValue::try_from_array(f.batch.column(c), r)
                        .map_err(|e| Error::Internal(e.to_string()))?;
                    let s = v.to_string();
                    key.extend_from_slice(&(s.len() as u32).to_be_bytes());
                    key.extend_from_slice(s.as_bytes());
                    key.push(v.is_null() as u8);
                }
                key.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
                let mut dup = fresh.contains(&(key.clone(), t));
                if !dup {
                    store.get_as_of(sid, &[key.as_slice()], t, &mut |_, v| {
                        dup = v.is_some_and(|v| v.ts == t);
                    })?;
                }
                if !dup {
                    wb.put_version(sid, &key, t, &[]);
                    fresh.insert((key.clone(), t));
                }
                keep.push(!dup);
            }
            f.filter(&BooleanArray::from(keep))?
        }
    })
}

/// The flow's columns in the output dataset's order and types.
fn conform(out: &Dataset, f: &Flow) -> Result<RecordBatch> {
    let cols = out
        .fields()
        .iter()
        .enumerate()
        .map(|(j, fd)| {
            let name = if j == out.ts_index() {
                &f.ts_col
            } else {
                &fd.name
            };
            let c = f.batch.column_by_name(name).ok_or_else(|| {
                Error::InvalidDefinition(format!(
                    "pipeline output has no column {} for dataset {}",
                    fd.name,
                    out.name()
                ))
            })?;
            thyme_table::ingest::conform_column(out, j, c, 0)
        })
        .collect::<Result<Vec<_>>>()?;
    RecordBatch::try_new(relaxed(out), cols).map_err(|e| Error::Internal(e.to_string()))
}

/// Write a flow to the output dataset: rows as versions or events, deletes
/// as delete versions.
fn write_flow(out: &Dataset, f: &Flow, wb: &mut WriteBatch) -> Result<usize> {
    let batch = conform(out, f)?;
    let batch = RecordBatch::try_new(out.schema(), batch.columns().to_vec()).map_err(|e| {
        Error::InvalidDefinition(format!(
            "pipeline output does not fit dataset {}: {e}",
            out.name()
        ))
    })?;
    let dels = f.del.true_count();
    if dels == 0 {
        add_rows(out, &batch, wb)?;
    } else {
        let up: Vec<u32> = (0..f.len() as u32)
            .filter(|&r| !f.del.value(r as usize))
            .collect();
        let dn: Vec<u32> = (0..f.len() as u32)
            .filter(|&r| f.del.value(r as usize))
            .collect();
        let take = |idx: Vec<u32>| -> Result<RecordBatch> {
            let idx = UInt32Array::from(idx);
            let cols = batch
                .columns()
                .iter()
                .map(|c| arrow::compute::take(c, &idx, None))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| Error::Internal(e.to_string()))?;
            RecordBatch::try_new(batch.schema(), cols).map_err(|e| Error::Internal(e.to_string()))
        };
        add_rows(out, &take(up)?, wb)?;
        if out.is_keyed() {
            add_deletes(out, &take(dn)?, wb)?;
        }
    }
    Ok(f.len())
}

/// One row as a JSON object.
fn row_json(row: &RecordBatch) -> String {
    let mut w = arrow::json::ArrayWriter::new(Vec::new());
    if w.write(row).is_err() || w.finish().is_err() {
        return String::new();
    }
    let s = String::from_utf8(w.into_inner()).unwrap_or_default();
    s.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string()
}
