//! `groupby(keys).aggregate(...)`: exact windowed aggregation in event time.
//!
//! ## Semantics
//! The output is a keyed dataset whose value for key `k` read at time `t` is,
//! for every aggregation, the aggregate over the events of `k` that count at
//! `t` under its window (see [`window`]): for `Continuous("7d")` the
//! events with timestamp in `[t - 7d, t]`. The value is exact at every `t`,
//! also between events: it changes only at *change points* (an event entering
//! or leaving a window), and the operator writes one output version per key
//! and change point. Reading the output dataset `AS OF t` therefore returns
//! the aggregate at `t` with one seek, whatever the number of events in the
//! window, and the output's history lists every change.
//!
//! ## State and cost
//! Per key, the operator keeps its events ordered by (time, input order),
//! each with one value per distinct input column the aggregations read, in
//! flat vectors ([`events`]), two cursors per window (indices: last event
//! entered, last event left) and one accumulator per aggregation
//! ([`accum`]). Walking forward from one
//! change point to the next costs one accumulator update per event entering
//! or leaving, so an in-order event costs O(1) state updates plus its own
//! change points (one when it enters, one when it leaves each window).
//! Change points after the engine's horizon (the newest event time while
//! input flows, the clock once it is idle) wait in a timer queue; the
//! runner advances the horizon as time passes.
//!
//! An event that arrives out of order (its change points lie before the key's
//! horizon) is applied at its event time: the key's state is rebuilt just
//! before its first change point and the change points up to the horizon are
//! recomputed, overwriting the versions written there (equal times: the later
//! write wins). That costs the events in the window plus the change points
//! rewritten, and only happens within the source's `disorder`.
//!
//! Every event's contribution is also appended to the log of a hidden state
//! dataset (key, time, input order, values) in the same atomic batch as the
//! outputs and input offsets; a restarted runner replays that log and
//! rebuilds each key at the committed horizon, so it continues exactly
//! where the last commit stopped.

pub mod accum;
pub mod events;
mod values;
pub mod window;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, UInt64Array};
use arrow::record_batch::RecordBatch;
use thyme_model::payload::{Agg, AggKind, Window};
use thyme_storage::{DatasetId, TemporalStore, WriteBatch};

use accum::{Acc, OrdV, Sketch, V};
use events::Events;
use thyme_table::catalog::Dataset;
use thyme_table::error::{Error, Result};
use thyme_table::types::DType;
use values::{Cell, ColumnBuilder, Reader};
use window::Win;

struct AggSpec {
    kind: AggKind,
    win: usize,
    /// Index into the event's contributed values (`None`: the aggregation
    /// has no `of` column and sees nulls).
    slot: Option<usize>,
    out_type: DType,
    default: Option<V>,
    unique: bool,
    limit: usize,
    dedup: bool,
    dropnull: bool,
    p: f64,
    half_life: f64,
    has_of: bool,
}

/// One key. Cursors are event counts: `events[..enter[w]]` have entered
/// window `w`, `events[..leave[w]]` have left it.
struct KeyState {
    key: Box<[V]>,
    events: Events,
    /// Every change point `<= t` has been written.
    t: i64,
    enter: Vec<usize>,
    leave: Vec<usize>,
    accs: Vec<Acc>,
    timer: Option<i64>,
    /// Earliest change point of events inserted out of order since the last
    /// advance.
    dirty: Option<i64>,
    /// Session windows: `events[..closed[w]]` have had their possible close
    /// (time + gap + 1µs) passed.
    closed: Vec<usize>,
}

/// Where each output field comes from.
enum OutSrc {
    Key(usize),
    Agg(usize),
    Ts,
}

/// The aggregation operator of one pipeline.
pub struct AggregateOp {
    key_cols: Vec<usize>,
    /// The input columns events contribute, each once however many
    /// aggregations read it (3 aggregations of `amount` keep one value per
    /// event in memory).
    slot_cols: Vec<usize>,
    /// State records in the first layout: one value per aggregation (see
    /// [`AggregateOp::set_legacy_state`]).
    legacy_state: bool,
    windows: Vec<Win>,
    aggs: Vec<AggSpec>,
    index: HashMap<Box<[u8]>, u32>,
    states: Vec<KeyState>,
    timers: BTreeSet<(i64, u32)>,
    touched: Vec<u32>,
    state_ds: DatasetId,
    out: Arc<Dataset>,
    out_src: Vec<OutSrc>,
    /// Output rows not yet taken: (key, change point), with their
    /// aggregation values in `cells` (`aggs.len()` per row).
    pending: Vec<(u32, i64)>,
    cells: Vec<Cell>,
}

fn default_value(a: &Agg, t: DType) -> Option<V> {
    let d = a.default.as_ref()?;
    Some(match (t, d) {
        (DType::Int, serde_json::Value::Number(n)) => V::I(n.as_i64()?),
        (DType::Float, serde_json::Value::Number(n)) => V::F(n.as_f64()?),
        (DType::Str, serde_json::Value::String(s)) => V::S(s.as_str().into()),
        (DType::Bool, serde_json::Value::Bool(b)) => V::B(*b),
        _ => return None,
    })
}

impl AggregateOp {
    /// `input` is the schema of the rows reaching the operator; `state_ds`
    /// the hidden dataset holding contributions.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        input: &arrow::datatypes::Schema,
        keys: &[String],
        window: Option<&Window>,
        aggregates: &[Agg],
        out: Arc<Dataset>,
        state_ds: DatasetId,
    ) -> Result<Self> {
        let col = |n: &str| {
            input
                .index_of(n)
                .map_err(|_| Error::InvalidDefinition(format!("aggregate: no column {n}")))
        };
        let key_cols = keys.iter().map(|k| col(k)).collect::<Result<Vec<_>>>()?;
        let mut windows: Vec<Win> = Vec::new();
        let mut aggs = Vec::new();
        let mut slot_cols: Vec<usize> = Vec::new();
        for a in aggregates {
            let w = a.window.as_ref().or(window).ok_or_else(|| {
                Error::InvalidDefinition(format!("aggregate {}: no window", a.into))
            })?;
            let w = Win::from_model(w)?;
            let win = match windows.iter().position(|x| *x == w) {
                Some(i) => i,
                None => {
                    windows.push(w);
                    windows.len() - 1
                }
            };
            let field = out
                .fields()
                .iter()
                .find(|f| f.name == a.into)
                .ok_or_else(|| {
                    Error::InvalidDefinition(format!("aggregate: output has no field {}", a.into))
                })?;
            let of = a.of.as_deref().map(col).transpose()?;
            if let Some(i) = of {
                Reader::new(&arrow::array::new_empty_array(input.field(i).data_type()))?;
            }
            let half_life = match a.half_life.as_deref() {
                Some(h) => {
                    match thyme_model::duration::parse(h).map_err(Error::InvalidDefinition)? {
                        thyme_model::duration::Duration::Micros(m) if m > 0 => m as f64,
                        _ => {
                            return Err(Error::InvalidDefinition(format!(
                                "aggregate {}: half_life must be a positive duration",
                                a.into
                            )))
                        }
                    }
                }
                None => 0.0,
            };
            aggs.push(AggSpec {
                kind: a.kind,
                win,
                slot: of.map(|c| match slot_cols.iter().position(|&x| x == c) {
                    Some(s) => s,
                    None => {
                        slot_cols.push(c);
                        slot_cols.len() - 1
                    }
                }),
                out_type: field.dtype,
                default: default_value(a, field.dtype),
                unique: a.unique,
                limit: a.limit.unwrap_or(1) as usize,
                dedup: a.dedup,
                dropnull: a.dropnull,
                p: a.p.unwrap_or(0.5),
                half_life,
                has_of: of.is_some(),
            });
        }
        let out_src = out
            .fields()
            .iter()
            .enumerate()
            .map(|(j, f)| {
                if j == out.ts_index() {
                    Ok(OutSrc::Ts)
                } else if let Some(k) = keys.iter().position(|k| *k == f.name) {
                    Ok(OutSrc::Key(k))
                } else if let Some(a) = aggregates.iter().position(|a| a.into == f.name) {
                    Ok(OutSrc::Agg(a))
                } else {
                    Err(Error::InvalidDefinition(format!(
                        "aggregate: output field {} is neither a key nor an aggregation",
                        f.name
                    )))
                }
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(AggregateOp {
            key_cols,
            slot_cols,
            legacy_state: false,
            windows,
            aggs,
            index: HashMap::new(),
            states: Vec::new(),
            timers: BTreeSet::new(),
            touched: Vec::new(),
            state_ds,
            out,
            out_src,
            pending: Vec::new(),
            cells: Vec::new(),
        })
    }

    fn new_acc(&self, a: &AggSpec) -> Acc {
        match a.kind {
            AggKind::Count if a.unique => Acc::Unique(Default::default()),
            AggKind::Count if a.has_of => Acc::NonNull(0),
            AggKind::Count => Acc::Rows(0),
            AggKind::Sum if a.out_type == DType::Int => Acc::SumI { sum: 0, n: 0 },
            AggKind::Sum | AggKind::Average => Acc::SumF { sum: 0.0, n: 0 },
            AggKind::Stddev => Acc::Welford {
                n: 0,
                mean: 0.0,
                m2: 0.0,
            },
            AggKind::Min | AggKind::Max | AggKind::Distinct => Acc::Ordered(BTreeMap::new()),
            AggKind::Quantile => Acc::Sketch(Sketch::default()),
            AggKind::LastK | AggKind::FirstK | AggKind::ExpDecaySum => Acc::None,
        }
    }

    fn key_id(&mut self, key: Box<[V]>, gkey: Box<[u8]>) -> u32 {
        if let Some(&id) = self.index.get(&gkey) {
            return id;
        }
        let id = self.states.len() as u32;
        let accs = self.aggs.iter().map(|a| self.new_acc(a)).collect();
        let nw = self.windows.len();
        self.states.push(KeyState {
            key,
            events: Events::new(self.slot_cols.len()),
            t: i64::MIN,
            enter: vec![0; nw],
            leave: vec![0; nw],
            accs,
            timer: None,
            dirty: None,
            closed: vec![0; nw],
        });
        self.index.insert(gkey, id);
        id
    }

    /// Read and write state records in the first layout, one value per
    /// aggregation (a pipeline whose state was written before values were
    /// shared keeps that layout).
    pub fn set_legacy_state(&mut self, legacy: bool) {
        self.legacy_state = legacy;
    }

    /// Reload the contributions committed so far and rebuild every key at
    /// `horizon`.
    pub fn restore(&mut self, store: &dyn TemporalStore, horizon: i64) -> Result<()> {
        let mut err = None;
        let mut from = 0;
        loop {
            let next = store.read_log(self.state_ds, from, 65_536, &mut |_, rec| {
                if err.is_none() {
                    if let Err(e) = self.load_event(rec) {
                        err = Some(e);
                    }
                }
            })?;
            if let Some(e) = err {
                return Err(e);
            }
            if next == from {
                break;
            }
            from = next;
        }
        for id in 0..self.states.len() as u32 {
            self.reinit(id, horizon);
            self.sweep(id, horizon)?;
        }
        Ok(())
    }

    /// One state record: `key values · ts · seq · contributed values` (one
    /// per slot; in the legacy layout one per aggregation).
    fn load_event(&mut self, rec: &[u8]) -> Result<()> {
        let mut r = rec;
        let mut key = Vec::with_capacity(self.key_cols.len());
        for _ in 0..self.key_cols.len() {
            key.push(V::decode(&mut r)?);
        }
        let gkey = &rec[..rec.len() - r.len()];
        if r.len() < 16 {
            return Err(Error::Internal("corrupt pipeline state".into()));
        }
        let ts = i64::from_be_bytes(r[..8].try_into().expect("8 bytes"));
        let seq = u64::from_be_bytes(r[8..16].try_into().expect("8 bytes"));
        r = &r[16..];
        let mut vals = Vec::with_capacity(self.slot_cols.len());
        if self.legacy_state {
            // One value per aggregation: each slot takes the value of the
            // first aggregation that reads it (slots are numbered in the
            // order aggregations first read them).
            for a in &self.aggs {
                let v = V::decode(&mut r)?;
                if a.slot == Some(vals.len()) {
                    vals.push(v);
                }
            }
        } else {
            for _ in 0..self.slot_cols.len() {
                vals.push(V::decode(&mut r)?);
            }
        }
        let id = match self.index.get(gkey) {
            Some(&id) => id,
            None => self.key_id(key.into(), gkey.into()),
        };
        self.states[id as usize].events.insert((ts, seq), &mut vals);
        Ok(())
    }

    /// Take the rows of `batch` (the operator's input schema plus the hidden
    /// `seq` and `del` columns): record their contributions in `wb` and in
    /// memory. Deletes carry no event and are skipped.
    pub fn push(
        &mut self,
        batch: &RecordBatch,
        ts: &[i64],
        seq: &UInt64Array,
        del: &BooleanArray,
        wb: &mut WriteBatch,
    ) -> Result<()> {
        let keys = self
            .key_cols
            .iter()
            .map(|&c| Reader::new(batch.column(c)))
            .collect::<Result<Vec<_>>>()?;
        let ofs = self
            .slot_cols
            .iter()
            .map(|&c| Reader::new(batch.column(c)))
            .collect::<Result<Vec<_>>>()?;
        let mut gkey = Vec::with_capacity(32);
        let mut row = Vec::with_capacity(64);
        let mut vals = Vec::with_capacity(self.slot_cols.len());
        for (i, &t) in ts.iter().enumerate().take(batch.num_rows()) {
            if del.value(i) {
                continue;
            }
            gkey.clear();
            for r in &keys {
                r.get(i).encode(&mut gkey);
            }
            vals.clear();
            vals.extend(ofs.iter().map(|r| r.get(i)));
            let mut s = seq.value(i);
            let id = match self.index.get(gkey.as_slice()) {
                Some(&id) => id,
                None => {
                    let key: Box<[V]> = keys.iter().map(|r| r.get(i)).collect();
                    self.key_id(key, gkey.as_slice().into())
                }
            };
            // Rows fanned out of one record share its order; keep them apart.
            while self.states[id as usize].events.contains((t, s)) {
                s += 1;
            }
            row.clear();
            row.extend_from_slice(&gkey);
            row.extend_from_slice(&t.to_be_bytes());
            row.extend_from_slice(&s.to_be_bytes());
            if self.legacy_state {
                for a in &self.aggs {
                    slot_value(&vals, a.slot).encode(&mut row);
                }
            } else {
                for v in vals.iter() {
                    v.encode(&mut row);
                }
            }
            wb.append_log(self.state_ds, &row);
            let first = self.windows.iter().map(|w| w.enter(t)).min().unwrap_or(t);
            let ks = &mut self.states[id as usize];
            if first <= ks.t {
                ks.dirty = Some(ks.dirty.map_or(first, |d| d.min(first)));
            }
            let at = ks.events.insert((t, s), &mut vals);
            // An event inside a cursor's passed prefix moves the cursor on
            // (the key is then dirty and rebuilt before its next change).
            for c in ks
                .enter
                .iter_mut()
                .chain(&mut ks.leave)
                .chain(&mut ks.closed)
            {
                if at < *c {
                    *c += 1;
                }
            }
            self.touched.push(id);
        }
        Ok(())
    }

    /// Write every change point up to `horizon` of the keys touched since the
    /// last call and of the keys whose timers are due.
    pub fn advance(&mut self, horizon: i64) -> Result<()> {
        let mut touched = std::mem::take(&mut self.touched);
        touched.sort_unstable();
        touched.dedup();
        for id in touched {
            if let Some(p) = self.states[id as usize].dirty.take() {
                let upto = self.states[id as usize].t;
                self.reinit(id, p.saturating_sub(1));
                self.sweep(id, upto)?;
            }
            self.sweep(id, horizon)?;
        }
        while let Some(&(t, id)) = self.timers.first() {
            if t > horizon {
                break;
            }
            self.timers.pop_first();
            if self.states[id as usize].timer == Some(t) {
                self.states[id as usize].timer = None;
            }
            self.sweep(id, horizon)?;
        }
        Ok(())
    }

    /// Number of keys and buffered events (for progress reports).
    pub fn size(&self) -> (usize, usize) {
        (
            self.states.len(),
            self.states.iter().map(|s| s.events.len()).sum(),
        )
    }

    /// Rebuild key `id` as of read time `t`: cursors and accumulators hold
    /// exactly the events that count at `t`.
    fn reinit(&mut self, id: u32, t: i64) {
        let ks = &mut self.states[id as usize];
        let ev = &ks.events;
        for (w, win) in self.windows.iter().enumerate() {
            if let Win::Session { gap } = *win {
                let pc = ev.count_upto(t.saturating_sub(gap).saturating_sub(1));
                ks.closed[w] = pc;
                // The most recent session closed by t ends at the last event
                // before `pc` that no event follows within the gap.
                let end = (0..pc)
                    .rev()
                    .find(|&i| ev.time_at(i + 1).is_none_or(|f| f - ev.time(i) > gap));
                match end {
                    Some(e) => {
                        ks.enter[w] = e + 1;
                        ks.leave[w] = session_start(ev, e, gap);
                    }
                    None => {
                        ks.enter[w] = 0;
                        ks.leave[w] = 0;
                    }
                }
                continue;
            }
            let upto = |bound: Option<i64>| bound.map_or(0, |b| ev.count_upto(b));
            ks.enter[w] = upto(max_event_entered(win, t));
            ks.leave[w] = upto(max_event_left(win, t));
        }
        for (a, acc) in self.aggs.iter().zip(ks.accs.iter_mut()) {
            acc.reset();
            for i in ks.leave[a.win]..ks.enter[a.win] {
                acc.update(slot_value(ev.vals(i), a.slot), true);
            }
        }
        ks.t = t;
        if let Some(old) = ks.timer.take() {
            self.timers.remove(&(old, id));
        }
    }

    /// Walk key `id` forward through its change points up to `upto`,
    /// emitting an output row at each.
    fn sweep(&mut self, id: u32, upto: i64) -> Result<()> {
        loop {
            let ks = &self.states[id as usize];
            let ev = &ks.events;
            let mut next = i64::MAX;
            for (w, win) in self.windows.iter().enumerate() {
                if let Win::Session { gap } = *win {
                    // Every event's possible close is a change point (so
                    // none disappears when sessions merge).
                    if let Some(e) = ev.time_at(ks.closed[w]) {
                        next = next.min(e.saturating_add(gap).saturating_add(1));
                    }
                    continue;
                }
                if let Some(e) = ev.time_at(ks.enter[w]) {
                    next = next.min(win.enter(e));
                }
                if let Some(e) = ev.time_at(ks.leave[w]) {
                    let l = win.leave(e);
                    if l != i64::MAX {
                        next = next.min(l);
                    }
                }
            }
            if next > upto || next == i64::MAX {
                let ks = &mut self.states[id as usize];
                if upto > ks.t {
                    ks.t = upto;
                }
                if next != i64::MAX && ks.timer != Some(next) {
                    if let Some(old) = ks.timer.take() {
                        self.timers.remove(&(old, id));
                    }
                    ks.timer = Some(next);
                    self.timers.insert((next, id));
                }
                return Ok(());
            }
            let ks = &mut self.states[id as usize];
            let ev = &ks.events;
            for (w, win) in self.windows.iter().enumerate() {
                if let Win::Session { gap } = *win {
                    let mut passed = None;
                    while let Some(e) = ev.time_at(ks.closed[w]) {
                        if e.saturating_add(gap).saturating_add(1) != next {
                            break;
                        }
                        passed = Some(ks.closed[w]);
                        ks.closed[w] += 1;
                    }
                    // The session ending at the last passed event closes now
                    // unless another event follows within the gap.
                    if let Some(end) = passed {
                        let t_end = ev.time(end);
                        if ev.time_at(end + 1).is_none_or(|f| f - t_end > gap) {
                            let start = session_start(ev, end, gap);
                            for (a, acc) in self.aggs.iter().zip(ks.accs.iter_mut()) {
                                if a.win == w {
                                    acc.reset();
                                    for i in start..=end {
                                        acc.update(slot_value(ev.vals(i), a.slot), true);
                                    }
                                }
                            }
                            ks.enter[w] = end + 1;
                            ks.leave[w] = start;
                        }
                    }
                    continue;
                }
                let accs = &mut ks.accs;
                let mut cross = |cursor: &mut usize, at: &dyn Fn(i64) -> i64, add: bool| {
                    while let Some(e) = ev.time_at(*cursor) {
                        if at(e) != next {
                            break;
                        }
                        let vals = ev.vals(*cursor);
                        for (a, acc) in self.aggs.iter().zip(accs.iter_mut()) {
                            if a.win == w {
                                acc.update(slot_value(vals, a.slot), add);
                            }
                        }
                        *cursor += 1;
                    }
                };
                cross(&mut ks.enter[w], &|e| win.enter(e), true);
                cross(&mut ks.leave[w], &|e| win.leave(e), false);
            }
            ks.t = next;
            let mut cells = std::mem::take(&mut self.cells);
            let r = self.values(id, next, &mut cells);
            self.cells = cells;
            r?;
            self.pending.push((id, next));
        }
    }

    /// Append the aggregation values of key `id` at read time `t` to `out`
    /// (its state must be positioned at `t`).
    fn values(&self, id: u32, t: i64, out: &mut Vec<Cell>) -> Result<()> {
        let ks = &self.states[id as usize];
        let ev = &ks.events;
        self.aggs
            .iter()
            .zip(&ks.accs)
            .map(|(a, acc)| {
                let or_default = |v: Option<V>| v.or_else(|| a.default.clone()).unwrap_or(V::Null);
                let v = match acc {
                    Acc::Rows(n) | Acc::NonNull(n) => V::I(*n),
                    Acc::Unique(m) => V::I(m.len() as i64),
                    Acc::SumI { sum, .. } => V::I(*sum as i64),
                    Acc::SumF { sum, n } => match a.kind {
                        AggKind::Average => or_default((*n > 0).then(|| V::F(*sum / *n as f64))),
                        _ => V::F(*sum),
                    },
                    Acc::Welford { n, m2, .. } => {
                        or_default((*n > 0).then(|| V::F((m2 / *n as f64).max(0.0).sqrt())))
                    }
                    Acc::Ordered(m) => match a.kind {
                        AggKind::Min => or_default(m.keys().next().map(|k| k.0.clone())),
                        AggKind::Max => or_default(m.keys().next_back().map(|k| k.0.clone())),
                        _ => {
                            let items: Vec<V> = m.keys().map(|k| k.0.clone()).collect();
                            return Ok(Cell::List(items));
                        }
                    },
                    Acc::Sketch(s) => or_default(s.quantile(a.p).map(V::F)),
                    Acc::None => {
                        // The events in the window: `events[leave..enter]`.
                        let range = ks.leave[a.win]..ks.enter[a.win].max(ks.leave[a.win]);
                        if a.kind == AggKind::ExpDecaySum {
                            let mut s = 0.0;
                            for i in range {
                                if let Some(x) = slot_value(ev.vals(i), a.slot).as_f64() {
                                    s += x * (-((t - ev.time(i)) as f64) / a.half_life).exp2();
                                }
                            }
                            V::F(s)
                        } else {
                            let mut items: Vec<V> = Vec::with_capacity(a.limit);
                            let mut push = |v: &V| {
                                if (a.dropnull && v.is_null())
                                    || (a.dedup
                                        && items.iter().any(|x| OrdV(x.clone()) == OrdV(v.clone())))
                                {
                                    return items.len() >= a.limit;
                                }
                                items.push(v.clone());
                                items.len() >= a.limit
                            };
                            if a.kind == AggKind::LastK {
                                for i in range.rev() {
                                    if push(slot_value(ev.vals(i), a.slot)) {
                                        break;
                                    }
                                }
                            } else {
                                for i in range {
                                    if push(slot_value(ev.vals(i), a.slot)) {
                                        break;
                                    }
                                }
                            }
                            return Ok(Cell::List(items));
                        }
                    }
                };
                Ok(Cell::V(v))
            })
            .try_for_each(|c| c.map(|c| out.push(c)))
    }

    /// The output rows produced since the last call: (key, change point,
    /// aggregation values).
    #[cfg(test)]
    fn take_rows(&mut self) -> Vec<(u32, i64, Vec<Cell>)> {
        let n = self.aggs.len();
        let mut cells = std::mem::take(&mut self.cells).into_iter();
        std::mem::take(&mut self.pending)
            .into_iter()
            .map(|(id, t)| (id, t, cells.by_ref().take(n).collect()))
            .collect()
    }

    /// The output rows produced since the last call, as one batch of the
    /// output dataset's schema.
    pub fn take_output(&mut self) -> Result<Option<RecordBatch>> {
        if self.pending.is_empty() {
            return Ok(None);
        }
        let pending = std::mem::take(&mut self.pending);
        let cells = std::mem::take(&mut self.cells);
        let stride = self.aggs.len();
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(self.out_src.len());
        for (j, src) in self.out_src.iter().enumerate() {
            let mut b = ColumnBuilder::new(self.out.fields()[j].dtype, pending.len());
            match src {
                OutSrc::Ts => {
                    for (_, t) in &pending {
                        b.push(&V::I(*t))?;
                    }
                }
                OutSrc::Key(k) => {
                    for (id, _) in &pending {
                        b.push(&self.states[*id as usize].key[*k])?;
                    }
                }
                OutSrc::Agg(a) => {
                    for c in cells.iter().skip(*a).step_by(stride) {
                        b.push_cell(c)?;
                    }
                }
            }
            cols.push(b.finish()?);
        }
        RecordBatch::try_new(self.out.schema(), cols)
            .map(Some)
            .map_err(|e| Error::Internal(format!("aggregate output: {e}")))
    }
}

/// The value an aggregation reads from an event's contributed values.
#[inline]
fn slot_value(vals: &[V], slot: Option<usize>) -> &V {
    static NULL: V = V::Null;
    slot.map_or(&NULL, |s| &vals[s])
}

/// Index of the first event of the session that ends at event `end`. A
/// session is a maximal run of events whose consecutive gaps are at most
/// `gap`; it closes `gap` + 1µs after its last event (an event exactly `gap`
/// later still joins it).
fn session_start(events: &Events, end: usize, gap: i64) -> usize {
    let mut later = events.time(end);
    for i in (0..end).rev() {
        let t = events.time(i);
        if later - t > gap {
            return i + 1;
        }
        later = t;
    }
    0
}

/// Largest event time whose event has entered window `w` by read time `t`.
fn max_event_entered(w: &Win, t: i64) -> Option<i64> {
    match *w {
        Win::Continuous(_) | Win::Session { .. } => Some(t),
        Win::Hopping {
            duration: Some(d),
            stride,
            lookback,
        } => {
            let j = (t.saturating_sub(d).saturating_sub(lookback)).div_euclid(stride);
            j.checked_mul(stride)?.checked_add(d - 1)
        }
        Win::Hopping {
            duration: None,
            stride,
            lookback,
        } => {
            let k = t.saturating_sub(lookback).div_euclid(stride);
            k.checked_mul(stride)?.checked_sub(1)
        }
    }
}

/// Largest event time whose event has left window `w` by read time `t`.
fn max_event_left(w: &Win, t: i64) -> Option<i64> {
    match *w {
        Win::Continuous(None) | Win::Session { .. } => None,
        Win::Continuous(Some(d)) => t.checked_sub(d)?.checked_sub(1),
        Win::Hopping {
            duration: Some(d),
            stride,
            lookback,
        } => {
            let j = (t.saturating_sub(d).saturating_sub(lookback)).div_euclid(stride);
            j.checked_mul(stride)?.checked_sub(1)
        }
        Win::Hopping { duration: None, .. } => None,
    }
}
