//! [`DatasetTable`]: a dataset as a DataFusion table.
//!
//! Two views of every dataset:
//! - **current** (`public.<name>`): keyed datasets show the row of every key
//!   as of the query time `t` (the newest version with event time `<= t`,
//!   keys whose newest version is a delete are absent); keyless datasets
//!   show every event with event time `<= t`.
//! - **history** (`history.<name>`): every version of a keyed dataset (or
//!   every event), with a trailing `_deleted` column, ordered by key then
//!   event time.
//!
//! The query time comes from, in order: a per-table `FOR SYSTEM_TIME AS OF`,
//! the statement's `AS OF` / `SET thyme.as_of` ([`QueryAsOf`] in the session
//! config), and otherwise the statement's start time (now).
//!
//! Filters on key fields (`k = v`, `k IN (...)`) become point seeks and
//! filters on the event-time field become time ranges; every pushed filter is
//! `Inexact`, so DataFusion re-checks it above the scan.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::{Result as DfResult, ScalarValue};
use datafusion::datasource::{TableProvider, TableType};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use thyme_storage::{TemporalStore, TimeRange};

use crate::scan::{ScanSpec, TemporalScanExec};
use thyme_table::catalog::Dataset;
use thyme_table::codec::encode_key_scalar;

/// The statement-level query time, stored as a session-config extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryAsOf(pub i64);

/// Which view of a dataset a table shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Current,
    History,
}

/// Name of the extra column of history views.
pub const DELETED_COLUMN: &str = "_deleted";

/// Maximum number of point keys a scan expands `IN` lists into.
const MAX_POINT_KEYS: usize = 100_000;

#[derive(Debug, Clone)]
pub struct DatasetTable {
    ds: Arc<Dataset>,
    store: Arc<dyn TemporalStore>,
    view: View,
    as_of: Option<i64>,
    schema: SchemaRef,
}

impl DatasetTable {
    pub fn new(ds: Arc<Dataset>, store: Arc<dyn TemporalStore>, view: View) -> Self {
        let schema = match view {
            View::Current => ds.schema(),
            View::History => {
                let base = ds.schema();
                let mut fields: Vec<Field> = base
                    .fields()
                    .iter()
                    .enumerate()
                    .map(|(i, f)| {
                        let required = ds.key_indices().contains(&i) || i == ds.ts_index();
                        f.as_ref()
                            .clone()
                            .with_nullable(!required || f.is_nullable())
                    })
                    .collect();
                fields.push(Field::new(DELETED_COLUMN, DataType::Boolean, false));
                Arc::new(Schema::new(fields))
            }
        };
        DatasetTable {
            ds,
            store,
            view,
            as_of: None,
            schema,
        }
    }

    /// The same table pinned to a query time (`FOR SYSTEM_TIME AS OF`).
    pub fn with_as_of(mut self, ts: i64) -> Self {
        self.as_of = Some(ts);
        self
    }

    /// The same dataset in another view.
    pub fn with_view(&self, view: View) -> DatasetTable {
        DatasetTable::new(self.ds.clone(), self.store.clone(), view)
    }

    pub fn dataset(&self) -> &Arc<Dataset> {
        &self.ds
    }

    /// The store the table reads.
    pub fn store(&self) -> &Arc<dyn TemporalStore> {
        &self.store
    }

    pub fn view(&self) -> View {
        self.view
    }

    /// The time this table is pinned to (`FOR SYSTEM_TIME AS OF`), if any.
    pub fn pinned_as_of(&self) -> Option<i64> {
        self.as_of
    }

    /// Turn pushed-down filters into a scan specification.
    fn spec(&self, filters: &[Expr], as_of: i64) -> ScanSpec {
        let ds = &self.ds;
        let fields = ds.fields();
        let mut range = TimeRange::ALL;
        // Per key field: the set of allowed values, if constrained.
        let mut key_values: Vec<Option<Vec<ScalarValue>>> = vec![None; ds.key_indices().len()];
        let mut contradiction = false;
        for f in filters {
            for conj in split_conjunction(f) {
                if let Some((col, op, v)) = column_op_literal(conj) {
                    if col == ds.def.timestamp {
                        let Ok(ScalarValue::TimestampMicrosecond(Some(t), _)) =
                            v.cast_to(&fields[ds.ts_index()].dtype.arrow())
                        else {
                            continue;
                        };
                        match op {
                            Operator::Eq => {
                                range.start = range.start.max(t);
                                range.end = range.end.min(t);
                            }
                            Operator::Gt => range.start = range.start.max(t.saturating_add(1)),
                            Operator::GtEq => range.start = range.start.max(t),
                            Operator::Lt => range.end = range.end.min(t.saturating_sub(1)),
                            Operator::LtEq => range.end = range.end.min(t),
                            _ => {}
                        }
                    } else if op == Operator::Eq {
                        if let Some(k) = ds.def.keys.iter().position(|k| *k == col) {
                            intersect(&mut key_values[k], vec![v], &mut contradiction);
                        }
                    }
                } else if let Expr::InList(il) = conj {
                    if il.negated {
                        continue;
                    }
                    let Expr::Column(c) = il.expr.as_ref() else {
                        continue;
                    };
                    let Some(k) = ds.def.keys.iter().position(|k| *k == c.name) else {
                        continue;
                    };
                    let vals: Option<Vec<ScalarValue>> = il
                        .list
                        .iter()
                        .map(|e| match e {
                            Expr::Literal(v, _) => Some(v.clone()),
                            _ => None,
                        })
                        .collect();
                    if let Some(vals) = vals {
                        intersect(&mut key_values[k], vals, &mut contradiction);
                    }
                }
            }
        }
        if contradiction {
            return ScanSpec::Nothing;
        }
        if !ds.is_keyed() {
            return ScanSpec::Events {
                range: TimeRange {
                    start: range.start,
                    end: if self.view == View::Current {
                        range.end.min(as_of)
                    } else {
                        range.end
                    },
                },
            };
        }
        // Encode the constrained leading key fields.
        let mut prefixes: Vec<Vec<u8>> = vec![Vec::new()];
        let mut complete = true;
        for (k, vals) in key_values.iter().enumerate() {
            let Some(vals) = vals else {
                complete = false;
                break;
            };
            let dtype = fields[ds.key_indices()[k]].dtype;
            if prefixes.len() * vals.len() > MAX_POINT_KEYS {
                complete = false;
                break;
            }
            let mut next = Vec::with_capacity(prefixes.len() * vals.len());
            for p in &prefixes {
                for v in vals {
                    let mut key = p.clone();
                    if encode_key_scalar(dtype, v, &mut key).is_some() {
                        next.push(key);
                    }
                }
            }
            prefixes = next;
        }
        prefixes.sort();
        prefixes.dedup();
        match self.view {
            View::Current if complete => ScanSpec::PointKeys {
                keys: prefixes,
                as_of,
            },
            View::Current => ScanSpec::Latest { prefixes, as_of },
            View::History => ScanSpec::History { prefixes, range },
        }
    }
}

fn intersect(
    slot: &mut Option<Vec<ScalarValue>>,
    vals: Vec<ScalarValue>,
    contradiction: &mut bool,
) {
    match slot {
        None => *slot = Some(vals),
        Some(prev) => {
            prev.retain(|v| vals.contains(v));
            if prev.is_empty() {
                *contradiction = true;
            }
        }
    }
}

/// The conjuncts of an `AND` tree.
pub(crate) fn split_conjunction(e: &Expr) -> Vec<&Expr> {
    match e {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::And,
            right,
        }) => {
            let mut v = split_conjunction(left);
            v.extend(split_conjunction(right));
            v
        }
        other => vec![other],
    }
}

/// `col <op> literal` or `literal <op> col`, normalized to the former.
pub(crate) fn column_op_literal(e: &Expr) -> Option<(String, Operator, ScalarValue)> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = e else {
        return None;
    };
    let unwrap_lit = |e: &Expr| match e {
        Expr::Literal(v, _) if !v.is_null() => Some(v.clone()),
        _ => None,
    };
    match (left.as_ref(), right.as_ref()) {
        (Expr::Column(c), r) => Some((c.name.clone(), *op, unwrap_lit(r)?)),
        (l, Expr::Column(c)) => Some((c.name.clone(), op.swap()?, unwrap_lit(l)?)),
        _ => None,
    }
}

/// The query time to use for a scan in `state`.
pub fn session_as_of(state: &dyn Session) -> i64 {
    if let Some(q) = state.config().get_extension::<QueryAsOf>() {
        return q.0;
    }
    state
        .execution_props()
        .query_execution_start_time
        .map(|t| t.timestamp_micros())
        .unwrap_or_else(|| chrono::Utc::now().timestamp_micros())
}

#[async_trait]
impl TableProvider for DatasetTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let as_of = self.as_of.unwrap_or_else(|| session_as_of(state));
        let spec = self.spec(filters, as_of);
        let projection: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        Ok(Arc::new(TemporalScanExec::new(
            self.ds.clone(),
            self.store.clone(),
            self.schema.clone(),
            projection,
            spec,
            limit,
        )))
    }
}
