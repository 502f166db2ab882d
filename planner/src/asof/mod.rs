//! ASOF joins: training sets in one SQL statement.
//!
//! Two spellings, both left-preserving with `LEFT`:
//! - `l ASOF [LEFT] JOIN r MATCH_CONDITION (l.ts >= r.ts) [ON l.k = r.k]`
//!   (Snowflake's form, which sqlparser parses), and
//! - `l ASOF [LEFT] JOIN r ON l.k = r.k AND l.ts >= r.ts` (DuckDB's form: the
//!   one inequality in `ON` is the match condition),
//!
//! with `>=`, `>`, `<=` or `<`. Each left row meets the right row with the
//! same key values whose time is nearest on the allowed side of its own.
//! NULL keys and times never match.
//!
//! How it is planned:
//! 1. [`rewrite_tokens`] turns `ASOF LEFT JOIN` into `ASOF JOIN` with the
//!    match condition wrapped in `__thyme_left(...)`, and gives the DuckDB
//!    form a `MATCH_CONDITION (TRUE)`, so sqlparser parses every form;
//! 2. [`rewrite_statement`] turns each ASOF join into an ordinary (inner or
//!    left) join whose `ON` carries a marker call `__thyme_asof_ge(l.ts,
//!    r.ts)` for the match condition, so DataFusion's SQL planner resolves
//!    names and types as for any join;
//! 3. the analyzer rule [`AsOfRule`] replaces every join with a marker by an
//!    [`AsOfJoinNode`] (key equalities + the match condition). A keyed
//!    dataset on the right is read through its history (every version, with
//!    deletes), so the joined row is the dataset's row *as of the left
//!    row's time*; for a pipeline's aggregated dataset that is the window
//!    aggregate at that time;
//! 4. [`AsOfPlanner`] plans the node as an [`AsOfLookupExec`] that reads
//!    the right side at each left row's time (a featureset view, evaluated;
//!    or a keyed dataset by seeks when the left side is small next to its
//!    history), else as an [`AsOfHashJoinExec`] (the right side indexed in
//!    memory, the left side unsorted) when the right side fits the memory
//!    pool, else as an [`AsOfJoinExec`] (both sides sorted and merged; the
//!    sorts can spill).
//!
//! A session needs the rule, the query planner, the marker UDFs and the
//! relation planner [`crate::schema::AsOfRelationPlanner`] (which removes
//! the mark step 2 puts on the joined relation).

pub mod exec;
pub mod hash_exec;
pub mod lookup_exec;

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::DataType;
use async_trait::async_trait;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchema, DFSchemaRef, Result as DfResult};
use datafusion::config::ConfigOptions;
use datafusion::datasource::{provider_as_source, source_as_provider, TableProvider};
use datafusion::error::DataFusionError;
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::logical_plan::{Extension, SubqueryAlias, TableScanBuilder};
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, JoinType, LogicalPlan, Operator, ScalarUDF, ScalarUDFImpl,
    Signature, UserDefinedLogicalNode, UserDefinedLogicalNodeCore, Volatility,
};
use datafusion::optimizer::AnalyzerRule;
use datafusion::physical_expr::expressions::CastExpr;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use sqlparser::ast::{
    BinaryOperator, Expr as SqlExpr, FunctionArg, FunctionArgExpr, Ident, JoinConstraint,
    JoinOperator, Query, SetExpr, Statement, TableFactor, TableFunctionArgs, TableWithJoins, Value,
    VisitMut, VisitorMut,
};
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Token, TokenWithSpan, Word};

pub use exec::{AsOfJoinExec, AsOfJoinSpec, AsOfKind, AsOfOp};
pub use hash_exec::AsOfHashJoinExec;
pub use lookup_exec::{AsOfLookupExec, AsOfSource, DatasetSource, FeaturesetSource};

use crate::error::{Error, Result};
use crate::featureset::view::FeaturesetTable;
use crate::provider::{split_conjunction, DatasetTable, View};

const LEFT_MARKER: &str = "__thyme_left";
const MARKERS: [(&str, AsOfOp); 4] = [
    ("__thyme_asof_ge", AsOfOp::Ge),
    ("__thyme_asof_gt", AsOfOp::Gt),
    ("__thyme_asof_le", AsOfOp::Le),
    ("__thyme_asof_lt", AsOfOp::Lt),
];

fn is_kw(t: &Token, kw: Keyword) -> bool {
    matches!(t, Token::Word(Word { keyword, quote_style: None, .. }) if *keyword == kw)
}

fn word(s: &str) -> TokenWithSpan {
    TokenWithSpan::wrap(Token::make_word(s, None))
}

fn tok(t: Token) -> TokenWithSpan {
    TokenWithSpan::wrap(t)
}

/// Whether the statement's tokens use `ASOF`.
pub fn uses_asof(tokens: &[TokenWithSpan]) -> bool {
    tokens.iter().any(|t| is_kw(&t.token, Keyword::ASOF))
}

/// Step 1 (see the module docs).
pub fn rewrite_tokens(tokens: Vec<TokenWithSpan>) -> Result<Vec<TokenWithSpan>> {
    if !uses_asof(&tokens) {
        return Ok(tokens);
    }
    let ends_relation = |t: &Token| {
        [
            Keyword::MATCH_CONDITION,
            Keyword::ON,
            Keyword::USING,
            Keyword::JOIN,
            Keyword::LEFT,
            Keyword::RIGHT,
            Keyword::INNER,
            Keyword::FULL,
            Keyword::CROSS,
            Keyword::NATURAL,
            Keyword::ASOF,
            Keyword::WHERE,
            Keyword::GROUP,
            Keyword::ORDER,
            Keyword::LIMIT,
            Keyword::HAVING,
            Keyword::UNION,
            Keyword::WINDOW,
            Keyword::QUALIFY,
        ]
        .iter()
        .any(|k| is_kw(t, *k))
            || matches!(t, Token::Comma | Token::RParen | Token::SemiColon)
    };
    let mut out = Vec::with_capacity(tokens.len() + 8);
    let mut i = 0;
    while i < tokens.len() {
        if !is_kw(&tokens[i].token, Keyword::ASOF) {
            out.push(tokens[i].clone());
            i += 1;
            continue;
        }
        let mut j = i + 1;
        let mut left = false;
        if tokens
            .get(j)
            .is_some_and(|t| is_kw(&t.token, Keyword::LEFT))
        {
            left = true;
            j += 1;
            if tokens
                .get(j)
                .is_some_and(|t| is_kw(&t.token, Keyword::OUTER))
            {
                j += 1;
            }
        }
        if !tokens
            .get(j)
            .is_some_and(|t| is_kw(&t.token, Keyword::JOIN))
        {
            return Err(Error::Syntax("expected JOIN after ASOF [LEFT]".into()));
        }
        out.push(tokens[i].clone());
        out.push(tokens[j].clone());
        i = j + 1;
        // The joined relation: up to MATCH_CONDITION / ON / the next clause.
        let mut depth = 0i32;
        while i < tokens.len() {
            let t = &tokens[i].token;
            if depth == 0 && i > j + 1 && ends_relation(t) {
                break;
            }
            match t {
                Token::LParen => depth += 1,
                Token::RParen => {
                    if depth == 0 {
                        break;
                    }
                    depth -= 1;
                }
                _ => {}
            }
            out.push(tokens[i].clone());
            i += 1;
        }
        if tokens
            .get(i)
            .is_some_and(|t| is_kw(&t.token, Keyword::MATCH_CONDITION))
        {
            out.push(tokens[i].clone());
            i += 1;
            if tokens.get(i).is_none_or(|t| t.token != Token::LParen) {
                return Err(Error::Syntax("expected ( after MATCH_CONDITION".into()));
            }
            out.push(tokens[i].clone());
            i += 1;
            if left {
                out.push(word(LEFT_MARKER));
                out.push(tok(Token::LParen));
            }
            let mut depth = 0i32;
            while i < tokens.len() {
                match tokens[i].token {
                    Token::LParen => depth += 1,
                    Token::RParen if depth == 0 => break,
                    Token::RParen => depth -= 1,
                    _ => {}
                }
                out.push(tokens[i].clone());
                i += 1;
            }
            if left {
                out.push(tok(Token::RParen));
            }
        } else {
            out.push(tok(Token::make_keyword("MATCH_CONDITION")));
            out.push(tok(Token::LParen));
            if left {
                out.push(word(LEFT_MARKER));
                out.push(tok(Token::LParen));
            }
            out.push(tok(Token::make_keyword("TRUE")));
            if left {
                out.push(tok(Token::RParen));
            }
            out.push(tok(Token::RParen));
        }
    }
    Ok(out)
}

fn conjuncts(e: SqlExpr, out: &mut Vec<SqlExpr>) {
    match e {
        SqlExpr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            conjuncts(*left, out);
            conjuncts(*right, out);
        }
        SqlExpr::Nested(inner)
            if matches!(
                *inner,
                SqlExpr::BinaryOp {
                    op: BinaryOperator::And,
                    ..
                }
            ) =>
        {
            conjuncts(*inner, out)
        }
        other => out.push(other),
    }
}

fn inequality(e: &SqlExpr) -> Option<(&SqlExpr, &'static str, &SqlExpr)> {
    let e = match e {
        SqlExpr::Nested(inner) => inner.as_ref(),
        e => e,
    };
    let SqlExpr::BinaryOp { left, op, right } = e else {
        return None;
    };
    let name = match op {
        BinaryOperator::GtEq => "__thyme_asof_ge",
        BinaryOperator::Gt => "__thyme_asof_gt",
        BinaryOperator::LtEq => "__thyme_asof_le",
        BinaryOperator::Lt => "__thyme_asof_lt",
        _ => return None,
    };
    Some((left, name, right))
}

/// Marks the joined relation of an ASOF join (`r` in `l ASOF JOIN r`) with
/// the name of the column the match condition reads from it (`r.ts`), as
/// table arguments `('__thyme_asof_right', 'ts')`. The relation planner
/// ([`crate::schema::AsOfRelationPlanner`]) removes the mark; a featureset
/// view, which has no time of its own, gets a time column of that name (the
/// time its features are evaluated at). Only plain table names are marked.
fn mark_right(relation: &mut TableFactor, a: &SqlExpr, b: &SqlExpr) {
    let TableFactor::Table {
        name,
        alias,
        args,
        version: None,
        ..
    } = relation
    else {
        return;
    };
    if args.is_some() {
        return;
    }
    let qualifier = match alias {
        Some(a) => a.name.clone(),
        None => match name.0.last().and_then(|p| p.as_ident()) {
            Some(i) => i.clone(),
            None => return,
        },
    };
    let same = |x: &Ident, y: &Ident| match (x.quote_style, y.quote_style) {
        (None, None) => x.value.eq_ignore_ascii_case(&y.value),
        _ => x.value == y.value,
    };
    let column = [a, b].into_iter().find_map(|e| match e {
        SqlExpr::CompoundIdentifier(ids) if ids.len() == 2 && same(&ids[0], &qualifier) => {
            let c = &ids[1];
            Some(match c.quote_style {
                None => c.value.to_lowercase(),
                Some(_) => c.value.clone(),
            })
        }
        _ => None,
    });
    let Some(column) = column else { return };
    let lit = |s: &str| {
        FunctionArg::Unnamed(FunctionArgExpr::Expr(SqlExpr::value(
            Value::SingleQuotedString(s.to_string()),
        )))
    };
    *args = Some(TableFunctionArgs {
        args: vec![lit(RIGHT_MARK), lit(&column)],
        settings: None,
    });
}

/// The first table argument of a relation marked by [`mark_right`].
pub const RIGHT_MARK: &str = "__thyme_asof_right";

/// The time column named by [`mark_right`]'s mark, if `args` is one.
pub fn right_mark(args: &TableFunctionArgs) -> Option<String> {
    let text = |a: &FunctionArg| match a {
        FunctionArg::Unnamed(FunctionArgExpr::Expr(SqlExpr::Value(v))) => match &v.value {
            Value::SingleQuotedString(s) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    };
    match args.args.as_slice() {
        [m, c] if text(m).as_deref() == Some(RIGHT_MARK) => text(c),
        _ => None,
    }
}

fn unsupported(m: impl Into<String>) -> Error {
    Error::Unsupported(m.into())
}

fn fix_join_list(
    twj: &mut TableWithJoins,
    dialect: &dyn sqlparser::dialect::Dialect,
) -> Result<()> {
    for join in &mut twj.joins {
        let JoinOperator::AsOf {
            match_condition,
            constraint,
        } = &join.join_operator
        else {
            continue;
        };
        let (left, cond) = match match_condition {
            SqlExpr::Function(f) if f.name.to_string().eq_ignore_ascii_case(LEFT_MARKER) => {
                let inner = match &f.args {
                    sqlparser::ast::FunctionArguments::List(l) if l.args.len() == 1 => {
                        match &l.args[0] {
                            sqlparser::ast::FunctionArg::Unnamed(
                                sqlparser::ast::FunctionArgExpr::Expr(e),
                            ) => e.clone(),
                            _ => return Err(Error::Syntax("bad ASOF LEFT JOIN".into())),
                        }
                    }
                    _ => return Err(Error::Syntax("bad ASOF LEFT JOIN".into())),
                };
                (true, inner)
            }
            other => (false, other.clone()),
        };
        let mut parts = Vec::new();
        match constraint {
            JoinConstraint::On(e) => conjuncts(e.clone(), &mut parts),
            JoinConstraint::None => {}
            _ => {
                return Err(unsupported(
                    "ASOF JOIN with USING or NATURAL (write the keys in ON)",
                ))
            }
        }
        let marker = if matches!(cond, SqlExpr::Value(ref v) if v.value == Value::Boolean(true)) {
            // DuckDB's form: the one inequality in ON.
            let found: Vec<usize> = parts
                .iter()
                .enumerate()
                .filter(|(_, p)| inequality(p).is_some())
                .map(|(i, _)| i)
                .collect();
            if found.len() != 1 {
                return Err(Error::Syntax(format!(
                    "ASOF JOIN ... ON needs exactly one time comparison (>=, >, <= or <) besides the key equalities, found {}",
                    found.len()
                )));
            }
            let p = parts.remove(found[0]);
            let (a, name, b) = inequality(&p).expect("found");
            mark_right(&mut join.relation, a, b);
            format!("{name}({a}, {b})")
        } else {
            let Some((a, name, b)) = inequality(&cond) else {
                return Err(Error::Syntax(format!(
                    "MATCH_CONDITION must compare the two sides' times with >=, >, <= or <, not {cond}"
                )));
            };
            mark_right(&mut join.relation, a, b);
            format!("{name}({a}, {b})")
        };
        let marker = sqlparser::parser::Parser::new(dialect)
            .try_with_sql(&marker)
            .and_then(|mut p| p.parse_expr())
            .map_err(|e| Error::Syntax(e.to_string()))?;
        let on = parts
            .into_iter()
            .rev()
            .fold(marker, |acc, p| SqlExpr::BinaryOp {
                left: Box::new(p),
                op: BinaryOperator::And,
                right: Box::new(acc),
            });
        join.join_operator = if left {
            JoinOperator::LeftOuter(JoinConstraint::On(on))
        } else {
            JoinOperator::Inner(JoinConstraint::On(on))
        };
    }
    Ok(())
}

struct JoinFixer<'d> {
    dialect: &'d dyn sqlparser::dialect::Dialect,
}

impl VisitorMut for JoinFixer<'_> {
    type Break = Error;

    fn pre_visit_query(&mut self, query: &mut Query) -> std::ops::ControlFlow<Error> {
        if let SetExpr::Select(select) = query.body.as_mut() {
            for twj in &mut select.from {
                if let Err(e) = fix_join_list(twj, self.dialect) {
                    return std::ops::ControlFlow::Break(e);
                }
            }
        }
        std::ops::ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, tf: &mut TableFactor) -> std::ops::ControlFlow<Error> {
        if let TableFactor::NestedJoin {
            table_with_joins, ..
        } = tf
        {
            if let Err(e) = fix_join_list(table_with_joins, self.dialect) {
                return std::ops::ControlFlow::Break(e);
            }
        }
        std::ops::ControlFlow::Continue(())
    }
}

/// Step 2 (see the module docs).
pub fn rewrite_statement(
    stmt: &mut Statement,
    dialect: &dyn sqlparser::dialect::Dialect,
) -> Result<()> {
    match stmt.visit(&mut JoinFixer { dialect }) {
        std::ops::ControlFlow::Break(e) => Err(e),
        std::ops::ControlFlow::Continue(()) => Ok(()),
    }
}

/// The marker functions (planned away by [`AsOfRule`]; evaluating one
/// means it was used outside an ASOF join).
#[derive(Debug, PartialEq, Eq, Hash)]
struct Marker {
    name: &'static str,
    signature: Signature,
}

impl ScalarUDFImpl for Marker {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Boolean)
    }
    fn invoke_with_args(
        &self,
        _args: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> DfResult<ColumnarValue> {
        Err(DataFusionError::External(Box::new(Error::Unsupported(
            "the ASOF match condition outside an ASOF JOIN".into(),
        ))))
    }
}

/// The marker UDFs to register on the engine's context.
pub fn marker_udfs() -> Vec<ScalarUDF> {
    MARKERS
        .iter()
        .map(|(name, _)| {
            ScalarUDF::new_from_impl(Marker {
                name,
                signature: Signature::any(2, Volatility::Immutable),
            })
        })
        .collect()
}

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

/// Whether every column `e` reads is in `schema` (and it reads one).
fn reads_only(e: &Expr, schema: &DFSchema) -> bool {
    let cols = e.column_refs();
    !cols.is_empty() && cols.iter().all(|c| schema.has_column(c))
}

fn marker_of(e: &Expr) -> Option<(AsOfOp, Expr, Expr)> {
    let Expr::ScalarFunction(ScalarFunction { func, args }) = e else {
        return None;
    };
    let op = MARKERS.iter().find(|(n, _)| *n == func.name())?.1;
    let [a, b] = args.as_slice() else { return None };
    Some((op, a.clone(), b.clone()))
}

/// The right input as planned, and what it is: a keyed dataset's current
/// view becomes its history; a featureset view (with its ASOF time column)
/// becomes an empty relation of the same schema, as it is evaluated rather
/// than scanned.
fn right_source(plan: &LogicalPlan) -> DfResult<Option<(LogicalPlan, RightSource)>> {
    match plan {
        LogicalPlan::SubqueryAlias(sa) => Ok(match right_source(&sa.input)? {
            Some((inner, src)) => Some((
                LogicalPlan::SubqueryAlias(SubqueryAlias::try_new(
                    Arc::new(inner),
                    sa.alias.clone(),
                )?),
                src,
            )),
            None => None,
        }),
        LogicalPlan::TableScan(scan)
            if scan.projection.is_none() && scan.filters.is_empty() && scan.fetch.is_none() =>
        {
            let provider = source_as_provider(&scan.source)?;
            let any: &dyn std::any::Any = provider.as_ref();
            if let Some(v) = any.downcast_ref::<FeaturesetTable>() {
                if v.asof_time().is_none() {
                    return Ok(None);
                }
                let empty = LogicalPlan::EmptyRelation(datafusion::logical_expr::EmptyRelation {
                    produce_one_row: false,
                    schema: scan.projected_schema.clone(),
                });
                return Ok(Some((empty, RightSource::Featureset(v.clone()))));
            }
            let Some(t) = any.downcast_ref::<DatasetTable>() else {
                return Ok(None);
            };
            if t.view() != View::Current || !t.dataset().is_keyed() || t.pinned_as_of().is_some() {
                return Ok(None);
            }
            let hist = t.with_view(View::History);
            let scan =
                TableScanBuilder::new(scan.table_name.clone(), provider_as_source(Arc::new(hist)))
                    .build()?;
            Ok(Some((
                LogicalPlan::TableScan(scan),
                RightSource::Dataset(t.clone()),
            )))
        }
        _ => Ok(None),
    }
}

/// Step 3 (see the module docs).
#[derive(Debug, Default)]
pub struct AsOfRule;

impl AnalyzerRule for AsOfRule {
    fn name(&self) -> &str {
        "thyme_asof_join"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> DfResult<LogicalPlan> {
        Ok(plan
            .transform_up_with_subqueries(|p| {
                let LogicalPlan::Join(join) = &p else {
                    return Ok(Transformed::no(p));
                };
                let mut parts = Vec::new();
                if let Some(f) = &join.filter {
                    parts.extend(split_conjunction(f).into_iter().cloned());
                }
                let markers: Vec<usize> = parts
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| marker_of(e).is_some())
                    .map(|(i, _)| i)
                    .collect();
                if markers.is_empty() {
                    return Ok(Transformed::no(p));
                }
                let ls = join.left.schema().clone();
                let rs = join.right.schema().clone();
                let (op, a, b) = marker_of(&parts.remove(markers[0])).expect("marker");
                let (left_ts, right_ts, op) = if reads_only(&a, &ls) && reads_only(&b, &rs) {
                    (a, b, op)
                } else if reads_only(&b, &ls) && reads_only(&a, &rs) {
                    (b, a, op.flip())
                } else {
                    return Err(Error::Unsupported(
                        "an ASOF match condition that does not compare a time of each side".into(),
                    )
                    .into());
                };
                let mut on: Vec<(Expr, Expr)> = join.on.clone();
                for e in parts {
                    let ok = match &e {
                        Expr::BinaryExpr(BinaryExpr {
                            left,
                            op: Operator::Eq,
                            right,
                        }) => {
                            if reads_only(left, &ls) && reads_only(right, &rs) {
                                on.push((*left.clone(), *right.clone()));
                                true
                            } else if reads_only(right, &ls) && reads_only(left, &rs) {
                                on.push((*right.clone(), *left.clone()));
                                true
                            } else {
                                false
                            }
                        }
                        _ => false,
                    };
                    if !ok {
                        return Err(Error::Unsupported(format!(
                            "ASOF JOIN condition {e}: besides the match condition, ON may only hold equalities between the two sides"
                        ))
                        .into());
                    }
                }
                let kind = match join.join_type {
                    JoinType::Inner => AsOfKind::Inner,
                    JoinType::Left => AsOfKind::Left,
                    other => {
                        return Err(Error::Unsupported(format!("ASOF {other} JOIN")).into());
                    }
                };
                let (right, source) = match right_source(&join.right)? {
                    Some(found) => found,
                    None => (join.right.as_ref().clone(), RightSource::Plan),
                };
                let node = AsOfJoinNode {
                    left: join.left.as_ref().clone(),
                    right,
                    on,
                    left_ts,
                    right_ts,
                    op,
                    kind,
                    source,
                    schema: join.schema.clone(),
                };
                Ok(Transformed::yes(LogicalPlan::Extension(Extension {
                    node: Arc::new(node),
                })))
            })?
            .data)
    }
}

/// Step 4: plans [`AsOfJoinNode`]s.
#[derive(Debug, Default)]
pub struct AsOfPlanner;

fn as_int64(e: Arc<dyn PhysicalExpr>, t: &DataType, what: &str) -> DfResult<Arc<dyn PhysicalExpr>> {
    match t {
        DataType::Int64 => Ok(e),
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::Date32
        | DataType::Timestamp(_, _) => Ok(Arc::new(CastExpr::new(e, DataType::Int64, None))),
        other => Err(Error::Unsupported(format!(
            "ASOF match on {what} of type {other} (use timestamps, dates or integers)"
        ))
        .into()),
    }
}

#[async_trait]
impl ExtensionPlanner for AsOfPlanner {
    async fn plan_extension(
        &self,
        planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        session: &dyn datafusion::catalog::Session,
        planning_ctx: &datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext,
    ) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
        let Some(n) = node.as_any().downcast_ref::<AsOfJoinNode>() else {
            return Ok(None);
        };
        let (ls, rs) = (logical_inputs[0].schema(), logical_inputs[1].schema());
        // The join repartitions (merge) or reads per batch (seeks): its
        // inputs' scans may run on every core.
        let parts = session.config().target_partitions();
        let lp = crate::scan::split_scans(physical_inputs[0].clone(), parts)?;
        let rp = crate::scan::split_scans(physical_inputs[1].clone(), parts)?;
        let schema = Arc::new(n.schema.as_arrow().clone());
        let left = Left {
            planner,
            schema: ls,
            plan: lp.clone(),
            session,
            ctx: planning_ctx,
        };
        if let RightSource::Featureset(view) = &n.source {
            return plan_featureset(n, view, &left, schema).map(Some);
        }
        let strategy = session
            .config()
            .get_extension::<AsOfStrategy>()
            .map(|s| *s)
            .unwrap_or_default();
        if let (RightSource::Dataset(t), false) = (
            &n.source,
            matches!(strategy, AsOfStrategy::Merge | AsOfStrategy::Hash),
        ) {
            if let Some(plan) = plan_dataset_seek(n, t, strategy, &left, schema.clone())? {
                return Ok(Some(plan));
            }
        }
        let mut left_keys = Vec::with_capacity(n.on.len());
        let mut right_keys = Vec::with_capacity(n.on.len());
        for (l, r) in &n.on {
            let le = planner.create_physical_expr(l, ls, session, planning_ctx)?;
            let mut re = planner.create_physical_expr(r, rs, session, planning_ctx)?;
            let lt = le.data_type(&lp.schema())?;
            let rt = re.data_type(&rp.schema())?;
            if lt != rt {
                re = Arc::new(CastExpr::new(re, lt, None));
            }
            left_keys.push(le);
            right_keys.push(re);
        }
        let lts = planner.create_physical_expr(&n.left_ts, ls, session, planning_ctx)?;
        let rts = planner.create_physical_expr(&n.right_ts, rs, session, planning_ctx)?;
        let (ltt, rtt) = (lts.data_type(&lp.schema())?, rts.data_type(&rp.schema())?);
        let unit = |t: &DataType| match t {
            DataType::Timestamp(u, _) => Some(*u),
            _ => None,
        };
        let rts = match (unit(&ltt), unit(&rtt)) {
            (Some(a), Some(b)) if a != b => {
                Arc::new(CastExpr::new(rts, ltt.clone(), None)) as Arc<dyn PhysicalExpr>
            }
            (Some(_), None) | (None, Some(_)) if ltt != rtt => {
                return Err(
                    Error::Unsupported(format!("ASOF match between {ltt} and {rtt}")).into(),
                )
            }
            _ => rts,
        };
        let lts = as_int64(lts, &ltt, "the left time")?;
        let rtt2 = rts.data_type(&rp.schema())?;
        let rts = as_int64(rts, &rtt2, "the right time")?;
        let right_deleted = n
            .source
            .deleted_flag()
            .then(|| rp.schema().fields().len().saturating_sub(1));
        let hash = match strategy {
            AsOfStrategy::Merge => false,
            AsOfStrategy::Hash => true,
            AsOfStrategy::Auto | AsOfStrategy::Seek => fits_memory(&rp, session)?,
        };
        let history = if n.source.deleted_flag() {
            " with dataset history"
        } else {
            ""
        };
        let spec = AsOfJoinSpec {
            left_keys,
            right_keys,
            left_ts: lts,
            right_ts: rts,
            op: n.op,
            kind: n.kind,
            right_deleted,
            strategy: format!("{}{history}", if hash { "hash" } else { "merge" }),
        };
        Ok(Some(if hash {
            Arc::new(AsOfHashJoinExec::try_new(lp, rp, spec, schema)?) as Arc<dyn ExecutionPlan>
        } else {
            Arc::new(AsOfJoinExec::try_new(lp, rp, spec, schema)?)
        }))
    }
}

/// Whether the right side of a join, as estimated, takes at most half of
/// the session's memory pool (always, for an unbounded pool): the hash
/// strategy holds it in memory, the merge's sorts can spill instead.
fn fits_memory(
    right: &Arc<dyn ExecutionPlan>,
    session: &dyn datafusion::catalog::Session,
) -> DfResult<bool> {
    use datafusion::execution::memory_pool::MemoryLimit;
    let MemoryLimit::Finite(limit) = session.runtime_env().memory_pool.memory_limit() else {
        return Ok(true);
    };
    let rows = datafusion::physical_plan::StatisticsContext::new()
        .compute(
            right.as_ref(),
            &datafusion::physical_plan::StatisticsArgs::new(),
        )?
        .num_rows
        .get_value()
        .copied();
    let Some(rows) = rows else {
        return Ok(false);
    };
    // Fixed-width columns at their width, others at 32 bytes; 16 bytes of
    // index per row.
    let width: usize = right
        .schema()
        .fields()
        .iter()
        .map(|f| f.data_type().primitive_width().unwrap_or(32))
        .sum::<usize>()
        + 16;
    Ok(rows.saturating_mul(width) <= limit / 2)
}

/// How an ASOF join with a keyed dataset on the right reads it, from the
/// session variable `thyme.asof_strategy` (`auto`, `seek`, `hash`,
/// `merge`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AsOfStrategy {
    /// Seeks when the left side is small next to the dataset's history
    /// (see [`SEEK_RATIO`]), else hash when the right side fits the memory
    /// pool, else merge.
    #[default]
    Auto,
    /// Seeks whenever the join allows them (a backward match on the
    /// dataset's own key and time).
    Seek,
    /// Always index the right side in memory ([`AsOfHashJoinExec`]).
    Hash,
    /// Always sort both sides and merge ([`AsOfJoinExec`]).
    Merge,
}

impl AsOfStrategy {
    /// The session variable's value, if valid.
    pub fn parse(s: &str) -> Option<AsOfStrategy> {
        match s.to_ascii_lowercase().as_str() {
            "auto" | "default" | "" => Some(AsOfStrategy::Auto),
            "seek" => Some(AsOfStrategy::Seek),
            "hash" => Some(AsOfStrategy::Hash),
            "merge" => Some(AsOfStrategy::Merge),
            _ => None,
        }
    }
}

/// Seeks are chosen when `left rows * SEEK_RATIO <= dataset versions`. On
/// the 2-core reference machine one as-of read costs 10-15 µs
/// (`bench/offline.sh`: 2M reads in 10.8 s on two cores; `bench/storage.sh`:
/// 60-70k as-of lookups/s). The sorted merge cost about 0.6 µs per row of
/// either side, which set the ratio; the hash join now costs about 0.25 µs
/// of CPU per row (`bench/asof.sh`: 10M x 10M in about 2.5 s on two
/// cores), which would put it nearer 50. It stays at 16: seeks read no
/// history and hold no memory, and the difference only matters for left
/// sides between 1/50 and 1/16 of the history.
pub const SEEK_RATIO: usize = 16;

fn column_name(e: &Expr) -> Option<&str> {
    match e {
        Expr::Column(c) => Some(c.name.as_str()),
        Expr::Cast(c) => column_name(&c.expr),
        _ => None,
    }
}

/// The time types a read as of the left row's time accepts.
fn readable_time(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64
    )
}

/// The left input of a join being planned, and what plans its expressions.
struct Left<'a> {
    planner: &'a dyn PhysicalPlanner,
    schema: &'a DFSchemaRef,
    plan: Arc<dyn ExecutionPlan>,
    session: &'a dyn datafusion::catalog::Session,
    ctx: &'a datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext,
}

impl Left<'_> {
    /// A physical expression over the left input.
    fn expr(&self, e: &Expr) -> DfResult<Arc<dyn PhysicalExpr>> {
        self.planner
            .create_physical_expr(e, self.schema, self.session, self.ctx)
    }

    /// The key expressions bound to each key of the right side, in its order.
    fn keys(&self, bound: &[Option<&Expr>]) -> DfResult<Vec<Arc<dyn PhysicalExpr>>> {
        bound
            .iter()
            .map(|e| self.expr(e.expect("every key bound")))
            .collect()
    }
}

/// A featureset view on the right: evaluated at each left row's time.
fn plan_featureset(
    n: &AsOfJoinNode,
    view: &FeaturesetTable,
    left: &Left<'_>,
    schema: arrow::datatypes::SchemaRef,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    let lp = left.plan.clone();
    let name = view.sql_name();
    let time = view.asof_time().unwrap_or_default();
    if column_name(&n.right_ts) != Some(time) {
        return Err(Error::Unsupported(format!(
            "an ASOF match condition on {} of featureset view {name}: compare the left time with its time column {time}",
            n.right_ts
        ))
        .into());
    }
    if !matches!(n.op, AsOfOp::Ge | AsOfOp::Gt) {
        return Err(Error::Unsupported(format!(
            "ASOF JOIN with featureset view {name} using {}: a featureset is read as of the left row's time (>=) or just before it (>)",
            n.op.symbol()
        ))
        .into());
    }
    let mut bound: Vec<Option<&Expr>> = vec![None; view.inputs().len()];
    for (l, r) in &n.on {
        let col = column_name(r);
        let Some(i) = col.and_then(|c| view.inputs().iter().position(|x| x == c)) else {
            return Err(Error::Unsupported(format!(
                "ASOF JOIN with featureset view {name} on {r}: the ON equalities bind the view's inputs ({})",
                view.inputs().join(", ")
            ))
            .into());
        };
        if bound[i].is_some() {
            return Err(Error::Unsupported(format!(
                "ASOF JOIN binding input {} of featureset view {name} twice",
                view.inputs()[i]
            ))
            .into());
        }
        bound[i] = Some(l);
    }
    let missing: Vec<&str> = view
        .inputs()
        .iter()
        .zip(&bound)
        .filter(|(_, b)| b.is_none())
        .map(|(i, _)| i.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(Error::UnboundInputs(format!(
            "featureset view {name} is computed from its inputs {}: bind {} in the ASOF JOIN's ON, e.g. ON l.{} = f.{}",
            view.inputs().join(", "),
            missing.join(" and "),
            missing[0],
            missing[0]
        ))
        .into());
    }
    let keys = left.keys(&bound)?;
    let lts = left.expr(&n.left_ts)?;
    let ltt = lts.data_type(&lp.schema())?;
    if !readable_time(&ltt) {
        return Err(Error::Unsupported(format!(
            "ASOF JOIN with featureset view {name} at a left time of type {ltt} (use a timestamp or a date)"
        ))
        .into());
    }
    let qualified: Vec<String> = view
        .inputs()
        .iter()
        .map(|i| format!("{}.{i}", view.name()))
        .collect();
    let n_features = schema.fields().len() - lp.schema().fields().len() - 1;
    let outputs: Vec<String> = view.schema().fields()[..n_features]
        .iter()
        .map(|f| format!("{}.{}", view.name(), f.name()))
        .collect();
    let plan = view.features().plan(&qualified, &outputs)?;
    let source = Arc::new(FeaturesetSource {
        features: view.features().clone(),
        plan,
        view: name.to_string(),
    });
    Ok(Arc::new(AsOfLookupExec::try_new(
        lp,
        keys,
        lts,
        n.op,
        n.kind,
        source,
        "featureset views are evaluated".into(),
        schema,
    )?))
}

/// A keyed dataset on the right, read by seeks when the join allows it and
/// the strategy (or the sizes, for `auto`) says so.
fn plan_dataset_seek(
    n: &AsOfJoinNode,
    t: &DatasetTable,
    strategy: AsOfStrategy,
    left: &Left<'_>,
    schema: arrow::datatypes::SchemaRef,
) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
    let lp = left.plan.clone();
    let ds = t.dataset();
    if !matches!(n.op, AsOfOp::Ge | AsOfOp::Gt) {
        return Ok(None);
    }
    let ts_name = &ds.fields()[ds.ts_index()].name;
    if !matches!(&n.right_ts, Expr::Column(c) if &c.name == ts_name) {
        return Ok(None);
    }
    // Each key field bound once, by a plain column of the right.
    let mut bound: Vec<Option<&Expr>> = vec![None; ds.key_indices().len()];
    for (l, r) in &n.on {
        let Expr::Column(c) = r else { return Ok(None) };
        let Some(i) = ds
            .key_indices()
            .iter()
            .position(|&k| ds.fields()[k].name == c.name)
        else {
            return Ok(None);
        };
        if bound[i].replace(l).is_some() {
            return Ok(None);
        }
    }
    if bound.iter().any(Option::is_none) {
        return Ok(None);
    }
    let lts = left.expr(&n.left_ts)?;
    if !readable_time(&lts.data_type(&lp.schema())?) {
        return Ok(None);
    }
    let versions = t.store().log_end(ds.id).map_err(Error::from)? as usize;
    let left_rows = datafusion::physical_plan::StatisticsContext::new()
        .compute(
            lp.as_ref(),
            &datafusion::physical_plan::StatisticsArgs::new(),
        )?
        .num_rows
        .get_value()
        .copied();
    let reason = match (strategy, left_rows) {
        (AsOfStrategy::Seek, _) => "thyme.asof_strategy = seek".to_string(),
        (_, Some(rows)) if rows.saturating_mul(SEEK_RATIO) <= versions => {
            format!("left ~{rows} rows, dataset ~{versions} versions")
        }
        _ => return Ok(None),
    };
    let keys = left.keys(&bound)?;
    let source = Arc::new(DatasetSource {
        store: t.store().clone(),
        ds: ds.clone(),
    });
    Ok(Some(Arc::new(AsOfLookupExec::try_new(
        lp, keys, lts, n.op, n.kind, source, reason, schema,
    )?)))
}

/// DataFusion's physical planner with Thyme's extension planners.
#[derive(Debug, Default)]
pub struct ThymeQueryPlanner;

#[async_trait]
impl QueryPlanner for ThymeQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session_state: &dyn datafusion::catalog::Session,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let planner = DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(AsOfPlanner)]);
        planner
            .create_physical_plan(logical_plan, session_state)
            .await
    }
}
