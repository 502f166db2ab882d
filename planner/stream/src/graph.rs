//! A pipeline's operator graph: every operator built from its node in one
//! place ([`Graph::compile`]), then run node by node on each step's input
//! flows ([`Graph::run`]), the output node's rows written to the output
//! dataset.
//!
//! Nodes are numbered so that each reads earlier nodes only; `aggregate`,
//! `first` and `latest` are terminal (they write keyed versions) and must
//! be the pipeline's output.

use std::collections::BTreeMap;

use thyme_model::payload::{Node, Pipeline};
use thyme_model::validate::Schema;
use thyme_storage::{DatasetId, TemporalStore, WriteBatch};
use thyme_table::catalog::{Catalog, Dataset};
use thyme_table::error::{Error, Result};
use thyme_table::ingest::add_rows;

use crate::checkpoint::Checkpoint;
use crate::ops::{
    self, AggregateOp, AssignOp, DedupOp, FilterOp, FirstOp, Flow, JoinOp, OpEnv, TransformOp,
};
use crate::sink::write_flow;

enum Op {
    /// The pipeline's input, by position.
    Input(usize),
    Filter(FilterOp),
    Assign(AssignOp),
    Select(Vec<String>),
    Drop(Vec<String>),
    Rename(BTreeMap<String, String>),
    DropNull(Option<Vec<String>>),
    Join(JoinOp),
    Explode(Vec<String>),
    Transform(TransformOp),
    Union(Vec<usize>),
    Changelog(String),
    Dedup(DedupOp),
    Aggregate(LazyAggregate),
    Latest,
    First(FirstOp),
}

/// The aggregation of a node, built on the first flow (it takes its
/// columns' types from the input batch).
struct LazyAggregate {
    node: Node,
    state: DatasetId,
    legacy_state: bool,
    op: Option<Box<AggregateOp>>,
}

impl LazyAggregate {
    fn get(&mut self, env: &OpEnv, f: &Flow) -> Result<&mut AggregateOp> {
        if self.op.is_none() {
            let Node::Aggregate {
                keys,
                window,
                aggregates,
                ..
            } = &self.node
            else {
                return Err(Error::Internal("aggregate of another node".into()));
            };
            let mut a = AggregateOp::new(
                &f.batch.schema(),
                keys,
                window.as_ref(),
                aggregates,
                env.out.clone(),
                self.state,
            )?;
            a.set_legacy_state(self.legacy_state);
            self.op = Some(Box::new(a));
        }
        Ok(self.op.as_mut().expect("just built"))
    }
}

/// The operators of one pipeline, by node id.
pub struct Graph {
    ops: Vec<Op>,
    deps: Vec<Vec<usize>>,
    output: usize,
}

impl Graph {
    /// Build the operators of `p`, whose nodes have the output `schemas`;
    /// operators that keep state get a state dataset from `ckpt` (true is
    /// returned when one was allocated).
    pub fn compile(
        p: &Pipeline,
        schemas: &[Schema],
        catalog: &Catalog,
        ckpt: &mut Checkpoint,
    ) -> Result<(Graph, bool)> {
        let store = catalog.store().clone();
        let allocated = ckpt.state.len();
        let mut ops = Vec::with_capacity(p.nodes.len());
        for n in &p.nodes {
            let id = n.id();
            ops.push(match n {
                Node::Input { dataset, .. } => {
                    Op::Input(p.inputs.iter().position(|i| i == dataset).ok_or_else(|| {
                        Error::InvalidDefinition(format!(
                            "input {dataset} is not among the pipeline's inputs"
                        ))
                    })?)
                }
                Node::Filter { predicate, .. } => Op::Filter(FilterOp::new(predicate.clone())),
                Node::Assign { columns, .. } => Op::Assign(AssignOp::new(columns)),
                Node::Transform { func, schema, .. } => Op::Transform(TransformOp::new(
                    func.clone(),
                    schema.is_some(),
                    &schemas[id],
                )?),
                Node::Select { columns, .. } => Op::Select(columns.clone()),
                Node::Drop { columns, .. } => Op::Drop(columns.clone()),
                Node::Rename { columns, .. } => Op::Rename(columns.clone()),
                Node::DropNull { columns, .. } => Op::DropNull(columns.clone()),
                Node::Join { input, .. } => {
                    Op::Join(JoinOp::new(catalog, n, &schemas[id], &schemas[*input])?)
                }
                Node::Explode { columns, .. } => Op::Explode(columns.clone()),
                Node::Union { inputs, .. } => Op::Union(inputs.clone()),
                Node::Changelog { delete_column, .. } => Op::Changelog(delete_column.clone()),
                Node::Dedup { by, window, .. } => {
                    if window.is_some() {
                        return Err(Error::Unsupported(
                            "dedup() with a window (the engine dedups on event time and the by-columns)".into(),
                        ));
                    }
                    let state = ckpt.state_of(store.as_ref(), id)?;
                    Op::Dedup(DedupOp::new(by.clone(), state))
                }
                Node::Aggregate { .. } => Op::Aggregate(LazyAggregate {
                    node: n.clone(),
                    state: ckpt.state_of(store.as_ref(), id)?,
                    legacy_state: ckpt.legacy_state(),
                    op: None,
                }),
                Node::First { .. } => Op::First(FirstOp::default()),
                Node::Latest { .. } => Op::Latest,
            });
        }
        for (i, op) in ops.iter().enumerate() {
            let terminal = matches!(op, Op::Aggregate(_) | Op::Latest | Op::First(_));
            if terminal && i != p.output {
                return Err(Error::InvalidDefinition(format!(
                    "pipeline {}: {} must be the last operator",
                    p.name,
                    p.nodes[i].op()
                )));
            }
        }
        let deps = p.nodes.iter().map(|n| n.inputs()).collect();
        Ok((
            Graph {
                ops,
                deps,
                output: p.output,
            },
            ckpt.state.len() != allocated,
        ))
    }

    /// Rebuild in-memory operator state from what the store holds (after a
    /// dry run has built every operator).
    pub fn restore(
        &mut self,
        store: &dyn TemporalStore,
        out: &Dataset,
        horizon: i64,
    ) -> Result<()> {
        for op in self.ops.iter_mut() {
            match op {
                Op::Aggregate(LazyAggregate { op: Some(a), .. }) => a.restore(store, horizon)?,
                Op::First(first) => first.restore(store, out)?,
                _ => {}
            }
        }
        Ok(())
    }

    /// Whether an operator reads what earlier steps wrote (so the runner
    /// must let their writes land first).
    pub fn reads_own_writes(&self) -> bool {
        self.ops.iter().any(|o| matches!(o, Op::Dedup(_)))
    }

    /// Whether the graph has timers (an aggregation advances with time
    /// even without input).
    pub fn has_timers(&self) -> bool {
        self.ops.iter().any(|o| matches!(o, Op::Aggregate(_)))
    }

    /// Keys and buffered events held by aggregations.
    pub fn size(&self) -> (usize, usize) {
        let mut size = (0, 0);
        for op in &self.ops {
            if let Op::Aggregate(LazyAggregate { op: Some(a), .. }) = op {
                let (k, e) = a.size();
                size.0 += k;
                size.1 += e;
            }
        }
        size
    }

    /// Run every operator on one flow per input (`None`: nothing new);
    /// returns the output node's flow.
    pub fn run(
        &mut self,
        mut inputs: Vec<Option<Flow>>,
        env: &OpEnv,
        wb: &mut WriteBatch,
    ) -> Result<Option<Flow>> {
        let mut results: Vec<Option<Flow>> = Vec::with_capacity(self.ops.len());
        for id in 0..self.ops.len() {
            let input = self.deps[id].first().and_then(|&d| results[d].clone());
            let out = match &mut self.ops[id] {
                Op::Input(i) => inputs[*i].take(),
                Op::Union(ins) => {
                    let fs: Vec<Flow> = ins.iter().filter_map(|&d| results[d].clone()).collect();
                    if fs.is_empty() {
                        None
                    } else {
                        Some(ops::union::union(&fs)?)
                    }
                }
                op => match input {
                    None => None,
                    Some(f) => Some(apply(op, env, f, wb)?),
                },
            };
            results.push(out);
        }
        Ok(results[self.output].take())
    }

    /// Run the graph, advance aggregations to `horizon` and write the
    /// output; returns the rows written.
    pub fn run_and_write(
        &mut self,
        inputs: Vec<Option<Flow>>,
        env: &OpEnv,
        horizon: i64,
        wb: &mut WriteBatch,
    ) -> Result<usize> {
        let flow = self.run(inputs, env, wb)?;
        match &mut self.ops[self.output] {
            Op::Aggregate(agg) => {
                let a = agg
                    .op
                    .as_mut()
                    .ok_or_else(|| Error::Internal("aggregate not compiled".into()))?;
                a.advance(horizon)?;
                match a.take_output()? {
                    Some(b) => {
                        add_rows(&env.out, &b, wb)?;
                        Ok(b.num_rows())
                    }
                    None => Ok(0),
                }
            }
            op => {
                let Some(f) = flow.filter(|f| !f.is_empty()) else {
                    return Ok(0);
                };
                let n = write_flow(&env.out, &f, wb)?;
                if let Op::First(first) = op {
                    first.write_rewrites(&env.out, wb);
                }
                Ok(n)
            }
        }
    }
}

/// One operator on one flow.
fn apply(op: &mut Op, env: &OpEnv, f: Flow, wb: &mut WriteBatch) -> Result<Flow> {
    match op {
        Op::Input(_) | Op::Union(_) => Err(Error::Internal(
            "inputs and unions are handled by the graph walk".into(),
        )),
        Op::Filter(o) => o.apply(env, f),
        Op::Assign(o) => o.apply(env, f),
        Op::Select(c) => ops::select::select(&f, c),
        Op::Drop(c) => ops::drop::drop(&f, c),
        Op::Rename(c) => ops::rename::rename(&f, c),
        Op::DropNull(c) => ops::dropnull::dropnull(&f, c.as_deref()),
        Op::Join(o) => o.apply(env, &f),
        Op::Explode(c) => ops::explode::explode(&f, c),
        Op::Transform(o) => o.apply(env, f),
        Op::Changelog(c) => ops::changelog::changelog(&f, c),
        Op::Dedup(o) => o.apply(env, f, wb),
        Op::Aggregate(agg) => {
            let ts = f.ts()?;
            agg.get(env, &f)?.push(&f.batch, &ts, &f.seq, &f.del, wb)?;
            Ok(f)
        }
        Op::Latest => Ok(f),
        Op::First(o) => o.apply(env, f),
    }
}
