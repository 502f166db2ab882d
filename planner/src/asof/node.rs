//! The logical ASOF join node ([`AsOfJoinNode`]) and what its right side
//! is ([`RightSource`]).

use std::fmt;

use datafusion::common::{DFSchemaRef, Result as DfResult};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{Expr, LogicalPlan, UserDefinedLogicalNodeCore};

use crate::provider::DatasetTable;
use crate::view::FeaturesetTable;

use crate::asof::*;

/// The logical ASOF join.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AsOfJoinNode {
    pub left: LogicalPlan,
    pub right: LogicalPlan,
    /// (left, right) key expressions.
    pub on: Vec<(Expr, Expr)>,
    pub left_ts: Expr,
    pub right_ts: Expr,
    pub op: AsOfOp,
    pub kind: AsOfKind,
    pub source: RightSource,
    pub schema: DFSchemaRef,
}

/// What the right side of an ASOF join is.
#[derive(Debug, Clone)]
pub enum RightSource {
    /// Any plan (merged).
    Plan,
    /// A keyed dataset: the right input is its history (last column
    /// `_deleted`), merged; or the store is read by seeks.
    Dataset(DatasetTable),
    /// A featureset view (the right input is empty): evaluated at each left
    /// row's time.
    Featureset(FeaturesetTable),
}

impl RightSource {
    fn id(&self) -> (u8, &str) {
        match self {
            RightSource::Plan => (0, ""),
            RightSource::Dataset(t) => (1, t.dataset().name()),
            RightSource::Featureset(v) => (2, v.sql_name()),
        }
    }

    /// Whether the right input carries a `_deleted` flag.
    pub fn deleted_flag(&self) -> bool {
        matches!(self, RightSource::Dataset(_))
    }
}

impl PartialEq for RightSource {
    fn eq(&self, other: &Self) -> bool {
        self.id() == other.id()
    }
}

impl Eq for RightSource {}

impl std::hash::Hash for RightSource {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.id().hash(state)
    }
}

impl PartialOrd for AsOfJoinNode {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        (self.op, self.kind, self.source.id()).partial_cmp(&(
            other.op,
            other.kind,
            other.source.id(),
        ))
    }
}

impl UserDefinedLogicalNodeCore for AsOfJoinNode {
    fn name(&self) -> &str {
        "AsOfJoin"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.left, &self.right]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        let mut v: Vec<Expr> = Vec::with_capacity(self.on.len() * 2 + 2);
        for (l, r) in &self.on {
            v.push(l.clone());
            v.push(r.clone());
        }
        v.push(self.left_ts.clone());
        v.push(self.right_ts.clone());
        v
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let on: Vec<String> = self.on.iter().map(|(l, r)| format!("{l} = {r}")).collect();
        write!(
            f,
            "AsOfJoin: kind={:?}, on=[{}], match={} {} {}{}",
            self.kind,
            on.join(", "),
            self.left_ts,
            self.op.symbol(),
            self.right_ts,
            match &self.source {
                RightSource::Plan => String::new(),
                RightSource::Dataset(t) => format!(", right=dataset {}", t.dataset().name()),
                RightSource::Featureset(v) => format!(", right=featureset view {}", v.sql_name()),
            }
        )
    }

    fn with_exprs_and_inputs(&self, exprs: Vec<Expr>, inputs: Vec<LogicalPlan>) -> DfResult<Self> {
        let [left, right]: [LogicalPlan; 2] = inputs
            .try_into()
            .map_err(|_| DataFusionError::Internal("AsOfJoin has two inputs".into()))?;
        let n = self.on.len();
        if exprs.len() != 2 * n + 2 {
            return Err(DataFusionError::Internal("AsOfJoin expressions".into()));
        }
        let on = (0..n)
            .map(|i| (exprs[2 * i].clone(), exprs[2 * i + 1].clone()))
            .collect();
        Ok(AsOfJoinNode {
            left,
            right,
            on,
            left_ts: exprs[2 * n].clone(),
            right_ts: exprs[2 * n + 1].clone(),
            op: self.op,
            kind: self.kind,
            source: self.source.clone(),
            schema: self.schema.clone(),
        })
    }
}
