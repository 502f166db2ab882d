//! SQL front end: Thyme's dialect and statement parsing.
//!
//! Thyme speaks PostgreSQL plus two temporal forms:
//! - per table: `FROM t FOR SYSTEM_TIME AS OF <expr>` (parsed by sqlparser
//!   once the dialect enables table versioning), and
//! - per statement: a trailing `AS OF <expr>` after the whole statement, e.g.
//!   `SELECT * FROM user_stats WHERE uid = 'a' AS OF '2024-01-15'`.
//!
//! `ASOF [LEFT] JOIN` is rewritten here too (see [`asof`], then [`crate::asof`]).
//!
//! The statement-level clause is found on the token stream: a top-level
//! `AS OF` (outside parentheses, not part of `FOR SYSTEM_TIME AS OF`) splits
//! the statement's tokens from the expression's, and each part is parsed with
//! sqlparser's own parser. Statements without Thyme syntax go through
//! `datafusion-pg-catalog`'s compatibility parser, which also rewrites the
//! catalog queries that psql and drivers send.

pub mod asof;
pub mod depth;

use std::any::TypeId;

use datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use sqlparser::ast::{Expr as SqlExpr, Statement};
use sqlparser::dialect::{Dialect, PostgreSqlDialect, Precedence};
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer, Word};

use thyme_table::error::{Error, Result};

/// PostgreSQL with table versioning (`FOR SYSTEM_TIME AS OF`).
#[derive(Debug, Default)]
pub struct ThymeDialect {
    pg: PostgreSqlDialect,
}

macro_rules! delegate {
    ($($name:ident($($arg:ident : $ty:ty),*) -> $ret:ty;)*) => {
        $(fn $name(&self $(, $arg: $ty)*) -> $ret { self.pg.$name($($arg),*) })*
    };
}

impl Dialect for ThymeDialect {
    fn dialect(&self) -> TypeId {
        // Behave as PostgreSQL wherever the parser checks the dialect by type.
        TypeId::of::<PostgreSqlDialect>()
    }
    fn supports_table_versioning(&self) -> bool {
        true
    }
    /// Named arguments are plain identifiers (`f(name => value)`). With
    /// expression names (`json_object('label': 'value')`, which DataFusion
    /// has no function for) the parser first reads every argument as a
    /// name, fails and reads it again: parsing nested calls
    /// (`abs(abs(...))`) takes time exponential in their depth.
    fn supports_named_fn_args_with_expr_name(&self) -> bool {
        false
    }
    fn get_next_precedence(&self, parser: &Parser) -> Option<Result<u8, ParserError>> {
        self.pg.get_next_precedence(parser)
    }
    delegate! {
        identifier_quote_style(identifier: &str) -> Option<char>;
        is_delimited_identifier_start(ch: char) -> bool;
        is_identifier_start(ch: char) -> bool;
        is_identifier_part(ch: char) -> bool;
        supports_unicode_string_literal() -> bool;
        is_reserved_for_identifier(kw: Keyword) -> bool;
        is_custom_operator_part(ch: char) -> bool;
        supports_filter_during_aggregation() -> bool;
        supports_group_by_expr() -> bool;
        prec_value(prec: Precedence) -> u8;
        allow_extract_custom() -> bool;
        allow_extract_single_quotes() -> bool;
        supports_create_index_with_clause() -> bool;
        supports_explain_with_utility_options() -> bool;
        supports_listen_notify() -> bool;
        supports_factorial_operator() -> bool;
        supports_bitwise_shift_operators() -> bool;
        supports_comment_on() -> bool;
        supports_load_extension() -> bool;
        supports_named_fn_args_with_colon_operator() -> bool;
        supports_empty_projections() -> bool;
        supports_nested_comments() -> bool;
        supports_string_escape_constant() -> bool;
        supports_numeric_literal_underscores() -> bool;
        supports_array_typedef_with_brackets() -> bool;
        supports_geometric_types() -> bool;
        supports_set_names() -> bool;
        supports_alter_column_type_using() -> bool;
        supports_notnull_operator() -> bool;
        supports_interval_options() -> bool;
        supports_insert_table_alias() -> bool;
        supports_create_table_like_parenthesized() -> bool;
        supports_select_wildcard_with_alias() -> bool;
        supports_comma_separated_trim() -> bool;
        supports_xml_expressions() -> bool;
        supports_comment_optimizer_hint() -> bool;
    }
}

/// A parsed statement plus its statement-level `AS OF` expression.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedStatement {
    pub statement: Statement,
    pub as_of: Option<SqlExpr>,
}

fn syntax(e: ParserError) -> Error {
    match e {
        ParserError::TokenizerError(s) | ParserError::ParserError(s) => Error::Syntax(s),
        ParserError::RecursionLimitExceeded => {
            Error::TooComplex("its expressions nest more deeply than the parser allows".into())
        }
    }
}

/// Deepest and longest statements given to the compatibility parser.
const COMPAT_MAX_DEPTH: usize = 8;
const COMPAT_MAX_BYTES: usize = 16 << 10;

/// Most parameters (`$n`) a statement may use: the protocol counts them in
/// 16 bits, as Postgres does.
pub const MAX_PARAMETERS: u64 = 65_535;

/// Deepest nesting accepted by default (see [`depth`]).
pub const DEFAULT_MAX_DEPTH: usize = 1000;

fn is_kw(t: &Token, kw: Keyword) -> bool {
    matches!(t, Token::Word(Word { keyword, quote_style: None, .. }) if *keyword == kw)
}

/// Parser for Thyme SQL (see the module docs). Cheap to share.
#[derive(Debug)]
pub struct SqlParser {
    compat: PostgresCompatibilityParser,
    dialect: ThymeDialect,
    /// Deepest nesting accepted ([`depth::depth_bound`]).
    max_depth: usize,
}

impl Default for SqlParser {
    fn default() -> Self {
        SqlParser {
            compat: PostgresCompatibilityParser::default(),
            dialect: ThymeDialect::default(),
            max_depth: DEFAULT_MAX_DEPTH,
        }
    }
}

impl SqlParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// A parser refusing statements that nest deeper than `max_depth`.
    pub fn with_max_depth(max_depth: usize) -> Self {
        SqlParser {
            max_depth,
            ..Self::default()
        }
    }

    /// Parse a query string into statements.
    pub fn parse(&self, sql: &str) -> Result<Vec<ParsedStatement>> {
        let tokens = Tokenizer::new(&self.dialect, sql)
            .tokenize_with_location()
            .map_err(|e| Error::Syntax(e.to_string()))?;
        let significant: Vec<TokenWithSpan> = tokens
            .into_iter()
            .filter(|t| !matches!(t.token, Token::Whitespace(_)))
            .collect();
        let params = significant
            .iter()
            .filter_map(|t| match &t.token {
                Token::Placeholder(p) => p.strip_prefix('$')?.parse::<u64>().ok(),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        if params > MAX_PARAMETERS {
            return Err(Error::LimitExceeded(format!(
                "statement uses parameter ${params}; at most {MAX_PARAMETERS} parameters are allowed"
            )));
        }
        let depth = depth::depth_bound(&significant);
        if depth > self.max_depth {
            return Err(Error::TooComplex(format!(
                "it nests about {depth} levels deep, more than the limit of {} (max_expression_depth)",
                self.max_depth
            )));
        }
        let compat = depth <= COMPAT_MAX_DEPTH && sql.len() <= COMPAT_MAX_BYTES;
        // Split into statements at top-level semicolons.
        let mut statements: Vec<Vec<TokenWithSpan>> = vec![Vec::new()];
        let mut depth = 0i32;
        for t in significant {
            match t.token {
                Token::LParen | Token::LBracket => depth += 1,
                Token::RParen | Token::RBracket => depth -= 1,
                _ => {}
            }
            if t.token == Token::SemiColon && depth <= 0 {
                statements.push(Vec::new());
            } else if t.token != Token::EOF {
                statements.last_mut().expect("non-empty").push(t);
            }
        }
        statements.retain(|s| !s.is_empty());
        let uses_thyme_syntax = statements.iter().any(|s| {
            find_statement_as_of(s).is_some()
                || s.iter().any(|t| is_kw(&t.token, Keyword::SYSTEM_TIME))
                || asof::uses_asof(s)
        });
        // The compatibility parser swaps the catalog queries tools send
        // (short and shallow) for ones DataFusion can run; it parses with
        // PostgreSQL's dialect, whose expression-named function arguments
        // make nested calls exponential (see `ThymeDialect`), so deep or
        // long statements take Thyme's own parser (its rewrite rules still
        // apply).
        if !uses_thyme_syntax && compat {
            let parsed = self.compat.parse(sql).map_err(syntax)?;
            return Ok(parsed
                .into_iter()
                .map(|statement| ParsedStatement {
                    statement,
                    as_of: None,
                })
                .collect());
        }
        statements
            .into_iter()
            .map(|tokens| self.parse_one(tokens))
            .collect()
    }

    fn parse_one(&self, tokens: Vec<TokenWithSpan>) -> Result<ParsedStatement> {
        let (stmt_tokens, as_of_tokens) = match find_statement_as_of(&tokens) {
            Some(i) => (tokens[..i].to_vec(), Some(tokens[i + 2..].to_vec())),
            None => (tokens, None),
        };
        let stmt_tokens = asof::rewrite_tokens(stmt_tokens)?;
        let mut statement = Parser::new(&self.dialect)
            .with_recursion_limit(self.max_depth)
            .with_tokens_with_locations(stmt_tokens)
            .parse_statement()
            .map_err(syntax)?;
        asof::rewrite_statement(&mut statement, &self.dialect)?;
        let as_of = match as_of_tokens {
            None => None,
            Some(t) if t.is_empty() => {
                return Err(Error::Syntax("expected a timestamp after AS OF".into()))
            }
            Some(t) => {
                let mut p = Parser::new(&self.dialect)
                    .with_recursion_limit(self.max_depth)
                    .with_tokens_with_locations(t);
                let e = p.parse_expr().map_err(syntax)?;
                let next = p.next_token();
                if next.token != Token::EOF {
                    return Err(Error::Syntax(format!(
                        "unexpected {} after the AS OF timestamp",
                        next.token
                    )));
                }
                Some(e)
            }
        };
        let statement = self.compat.rewrite(statement);
        Ok(ParsedStatement { statement, as_of })
    }
}

/// Position of a statement-level `AS OF`: the last top-level `AS OF` that is
/// not preceded by `SYSTEM_TIME` (which makes it a table version clause).
fn find_statement_as_of(tokens: &[TokenWithSpan]) -> Option<usize> {
    let mut depth = 0i32;
    let mut found = None;
    for i in 0..tokens.len() {
        match tokens[i].token {
            Token::LParen | Token::LBracket => depth += 1,
            Token::RParen | Token::RBracket => depth -= 1,
            _ => {}
        }
        if depth == 0
            && is_kw(&tokens[i].token, Keyword::AS)
            && tokens
                .get(i + 1)
                .is_some_and(|t| is_kw(&t.token, Keyword::OF))
            && !(i > 0
                && (is_kw(&tokens[i - 1].token, Keyword::SYSTEM_TIME)
                    || is_kw(&tokens[i - 1].token, Keyword::TIMESTAMP)
                    || is_kw(&tokens[i - 1].token, Keyword::VERSION)))
        {
            found = Some(i);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_level_as_of() {
        let p = SqlParser::new();
        let s = p
            .parse("SELECT * FROM t WHERE k = 'a' AS OF '2024-01-01'; SELECT 1")
            .unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].statement.to_string(), "SELECT * FROM t WHERE k = 'a'");
        assert_eq!(s[0].as_of.as_ref().unwrap().to_string(), "'2024-01-01'");
        assert!(s[1].as_of.is_none());
    }

    #[test]
    fn as_of_with_placeholder_and_subquery() {
        let p = SqlParser::new();
        let s = p.parse("SELECT (SELECT 1) AS x FROM t AS OF $1").unwrap();
        assert_eq!(s[0].as_of.as_ref().unwrap().to_string(), "$1");
        let text = s[0].statement.to_string();
        assert!(
            text.starts_with("SELECT (SELECT 1") && text.ends_with("AS x FROM t"),
            "{text}"
        );
    }

    #[test]
    fn table_version_is_not_statement_as_of() {
        let p = SqlParser::new();
        let s = p
            .parse("SELECT * FROM t FOR SYSTEM_TIME AS OF '2024-01-01' JOIN u ON t.k = u.k")
            .unwrap();
        assert!(s[0].as_of.is_none());
        assert!(s[0]
            .statement
            .to_string()
            .contains("FOR SYSTEM_TIME AS OF '2024-01-01'"));
    }

    #[test]
    fn errors_are_syntax_errors() {
        let p = SqlParser::new();
        assert!(matches!(p.parse("SELEC 1"), Err(Error::Syntax(_))));
        assert!(matches!(p.parse("SELECT 1 AS OF"), Err(Error::Syntax(_))));
        assert!(matches!(
            p.parse("SELECT 1 AS OF '2024' garbage"),
            Err(Error::Syntax(_))
        ));
    }
}
