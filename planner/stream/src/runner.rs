//! [`PipelineRunner`]: one committed pipeline's inputs, operator graph and
//! checkpoint, and the step that reads, computes and commits atomically
//! (see the crate docs for the guarantees).

use std::sync::Arc;

use arrow::array::{BooleanArray, UInt64Array};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::prelude::SessionContext;
use serde::Serialize;
use thyme_model::payload::Pipeline;
use thyme_storage::WriteBatch;

use thyme_table::catalog::Dataset;
use thyme_table::codec::RowDecoder;
use thyme_table::error::{Error, Result};
use thyme_table::ingest::LOG_DELETE;
use thyme_table::registry::Registry;
use thyme_table::udf::PythonRuntime;

use crate::checkpoint::Checkpoint;
use crate::flow::Flow;
use crate::graph::Graph;
use crate::late::{late_table, row_json, write_late, LateRow};
use crate::ops::{micros, OpEnv};
use crate::sink::relaxed;

/// How long (microseconds) a pipeline's inputs must have had nothing new
/// before its aggregations advance with the clock instead of event time
/// (the idleness timeout of a watermark, in Flink's terms).
pub const IDLE_AFTER: i64 = 200_000;

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

/// One input dataset of the pipeline.
struct Input {
    ds: Arc<Dataset>,
    /// Its rows as read from the log (every field nullable).
    schema: SchemaRef,
    /// How far behind the newest event time an event may arrive and still
    /// be applied (`None`: no watermark).
    disorder: Option<i64>,
}

/// Runs one committed pipeline.
pub struct PipelineRunner {
    name: String,
    inputs: Vec<Input>,
    graph: Graph,
    /// The store, the output dataset and what else operators read.
    env: OpEnv,
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

fn fmt_ts(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_default()
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
        let mut ckpt = Checkpoint::load(store.as_ref(), &ckpt_key, p.inputs.len())?;
        let mut inputs = Vec::new();
        let mut defs = Vec::new();
        for name in &p.inputs {
            let sql = thyme_model::snake_case(name);
            let ds = catalog
                .get(&sql)
                .ok_or_else(|| Error::UnknownTable(sql.clone()))?;
            defs.push(
                registry
                    .dataset(name)
                    .map(|d| d.definition)
                    .ok_or_else(|| Error::UnknownTable(name.clone()))?,
            );
            inputs.push(Input {
                schema: relaxed(&ds),
                ds,
                disorder: disorder_of(registry, name, 0)?,
            });
        }
        // Every node's output schema, by the model's rules (the ones the
        // commit was validated with): operators take their shapes from it.
        let schemas = thyme_model::validate::pipeline_schemas(p, &defs.iter().collect::<Vec<_>>())
            .map_err(|e| Error::InvalidDefinition(e.to_string()))?;
        let (graph, fresh) = Graph::compile(p, &schemas, catalog, &mut ckpt)?;
        let late = late_table(catalog)?;
        let mut runner = PipelineRunner {
            name: p.name.clone(),
            inputs,
            graph,
            env: OpEnv {
                ctx: SessionContext::new(),
                store,
                out,
                python,
                imports: p
                    .env
                    .as_ref()
                    .and_then(|e| e.imports.clone())
                    .unwrap_or_default(),
            },
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
            runner.ckpt.put(&runner.ckpt_key, &mut wb)?;
            runner.env.store.write(wb)?;
        }
        // A dry run on empty input builds every operator (and reports a
        // bad definition now rather than on the first event).
        let empty: Vec<Option<Flow>> = (0..runner.inputs.len())
            .map(|i| Some(runner.empty_flow(i)))
            .collect();
        let mut wb = WriteBatch::new();
        runner.graph.run(empty, &runner.env, &mut wb)?;
        let env = &runner.env;
        runner
            .graph
            .restore(env.store.as_ref(), &env.out, runner.ckpt.horizon)?;
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

    /// The pipeline's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The output dataset.
    pub fn output(&self) -> &Arc<Dataset> {
        &self.env.out
    }

    /// Current progress.
    pub fn progress(&self) -> Result<Progress> {
        let (keys, buffered_events) = self.graph.size();
        let mut p = Progress {
            pipeline: self.name.clone(),
            dataset: self.env.out.name().to_string(),
            late_events: self.ckpt.late,
            rows_written: self.ckpt.rows_out,
            keys,
            buffered_events,
            ..Default::default()
        };
        for (i, inp) in self.inputs.iter().enumerate() {
            let end = self.env.store.log_end(inp.ds.id)?;
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
        Ok(p)
    }

    /// Read up to `chunk` records per input, apply them, advance
    /// aggregations (to the newest event time while input flows, to `now`
    /// once it has been idle for [`IDLE_AFTER`]), and commit everything in
    /// one atomic write. Returns the number of input records consumed.
    pub fn step(&mut self, now: i64) -> Result<usize> {
        let mut consumed = 0;
        let mut flows = Vec::with_capacity(self.inputs.len());
        let mut late_rows: Vec<LateRow> = Vec::new();
        for i in 0..self.inputs.len() {
            let (flow, n) = self.read_input(i, &mut late_rows)?;
            consumed += n;
            flows.push(flow);
        }
        if self.graph.reads_own_writes() {
            // Dedup reads the keys earlier steps stored.
            self.wait_written()?;
        }
        let any_timers = self.graph.has_timers();
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
        let written = self
            .graph
            .run_and_write(flows, &self.env, horizon, &mut wb)?;
        if consumed == 0 && written == 0 {
            self.wait_written()?;
            return Ok(0);
        }
        if !late_rows.is_empty() {
            self.ckpt.late += late_rows.len() as u64;
            let inputs: Vec<&str> = self.inputs.iter().map(|i| i.ds.name()).collect();
            write_late(&self.late, &self.name, &inputs, &late_rows, now, &mut wb)?;
        }
        self.ckpt.horizon = horizon;
        self.ckpt.rows_out += written as u64;
        self.ckpt.put(&self.ckpt_key, &mut wb)?;
        if consumed > 0 {
            self.last_write = (wb.len(), wb.bytes());
        }
        self.wait_written()?;
        let store = self.env.store.clone();
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

    /// Decode the next records of input `i`; late rows are set aside.
    fn read_input(
        &mut self,
        i: usize,
        late_rows: &mut Vec<LateRow>,
    ) -> Result<(Option<Flow>, usize)> {
        let inp = &self.inputs[i];
        let projection: Vec<usize> = (0..inp.ds.fields().len()).collect();
        let mut dec = RowDecoder::new(&inp.ds, &projection, inp.schema.clone(), self.chunk);
        let mut seqs = Vec::with_capacity(self.chunk);
        let mut dels = Vec::with_capacity(self.chunk);
        let mut err = None;
        let from = self.ckpt.offsets[i];
        let next = self
            .env
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
                late_rows.push(LateRow {
                    input: i,
                    event_ts: t,
                    watermark: max_ts.saturating_sub(inp.disorder.unwrap_or(0)),
                    row: row_json(&row),
                });
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
}

impl Drop for PipelineRunner {
    fn drop(&mut self) {
        if let Err(e) = self.wait_written() {
            tracing::error!(pipeline = %self.name, error = %e, "the last pipeline write failed");
        }
    }
}
