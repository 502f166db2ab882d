//! The ASOF JOIN syntax, before DataFusion sees the statement.
//!
//! 1. [`rewrite_tokens`] turns `ASOF LEFT JOIN` into `ASOF JOIN` with the
//!    match condition wrapped in `__thyme_left(...)`, and gives the DuckDB
//!    form a `MATCH_CONDITION (TRUE)`, so sqlparser parses every form;
//! 2. [`rewrite_statement`] turns each ASOF join into an ordinary (inner or
//!    left) join whose `ON` carries a marker call `__thyme_asof_ge(l.ts,
//!    r.ts)` for the match condition, so DataFusion's SQL planner resolves
//!    names and types as for any join, and marks a joined featureset view
//!    with the column its match condition reads ([`right_mark`]).
//!
//! The planning that follows lives in [`crate::asof`].

use arrow::datatypes::DataType;
use datafusion::common::Result as DfResult;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, ScalarUDFImpl, Signature, Volatility};
use sqlparser::ast::{
    BinaryOperator, Expr as SqlExpr, FunctionArg, FunctionArgExpr, Ident, JoinConstraint,
    JoinOperator, Query, SetExpr, Statement, TableFactor, TableFunctionArgs, TableWithJoins, Value,
    VisitMut, VisitorMut,
};
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Token, TokenWithSpan, Word};

use thyme_table::error::{Error, Result};

/// How the left time compares with the right time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AsOfOp {
    /// `l.ts >= r.ts`
    Ge,
    /// `l.ts > r.ts`
    Gt,
    /// `l.ts <= r.ts`
    Le,
    /// `l.ts < r.ts`
    Lt,
}

impl AsOfOp {
    pub fn symbol(self) -> &'static str {
        match self {
            AsOfOp::Ge => ">=",
            AsOfOp::Gt => ">",
            AsOfOp::Le => "<=",
            AsOfOp::Lt => "<",
        }
    }

    /// The same condition with the sides swapped (`a >= b` is `b <= a`).
    pub fn flip(self) -> AsOfOp {
        match self {
            AsOfOp::Ge => AsOfOp::Le,
            AsOfOp::Gt => AsOfOp::Lt,
            AsOfOp::Le => AsOfOp::Ge,
            AsOfOp::Lt => AsOfOp::Gt,
        }
    }

    pub fn backward(self) -> bool {
        matches!(self, AsOfOp::Ge | AsOfOp::Gt)
    }
}

pub const LEFT_MARKER: &str = "__thyme_left";
pub const MARKERS: [(&str, AsOfOp); 4] = [
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
