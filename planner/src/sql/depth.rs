//! How deeply a statement can nest, bounded from its tokens alone, before
//! anything builds or walks a tree of it.
//!
//! Every later stage (the parser's left-deep operator chains, cloning and
//! dropping the syntax tree, DataFusion's planner and optimizer) recurses
//! once per level, so a statement of a few kilobytes (`1+1+...+1`, a long
//! `OR` chain, hundreds of `UNION ALL` branches) could otherwise exhaust a
//! thread's stack and abort the process. The bound is an over-estimate of
//! the syntax tree's depth that counts, per nesting level (parentheses,
//! brackets, `CASE ... END`):
//! - the chained binary operators since the last separator (a comma or a
//!   clause keyword such as `SELECT`, `WHERE`, `WHEN`: a list does not
//!   nest, so each item starts again);
//! - the set operations (`UNION`, `INTERSECT`, `EXCEPT`) of the level,
//!   which chain across clauses;
//!
//! and adds the levels themselves. A statement whose bound exceeds the
//! server's `max_expression_depth` is refused with SQLSTATE 54001, as
//! Postgres refuses one past `max_stack_depth`.

use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Token, TokenWithSpan, Word};

#[derive(Default, Clone, Copy)]
struct Level {
    /// Chained operators since the last separator.
    ops: usize,
    /// Set operations of the level.
    sets: usize,
}

/// Leave the innermost level: its operators no longer add to the depth.
fn close(levels: &mut Vec<Level>, sum: &mut usize) {
    let l = levels.pop().expect("more than one level");
    *sum -= l.ops + l.sets;
}

/// The depth bound of a run of tokens (several statements: the deepest).
pub fn depth_bound(tokens: &[TokenWithSpan]) -> usize {
    let mut levels: Vec<Level> = vec![Level::default()];
    // Sum of `ops + sets` over the open levels, kept up to date.
    let mut sum = 0usize;
    let mut deepest = 0usize;
    for t in tokens {
        let top = levels.len() - 1;
        match &t.token {
            Token::LParen | Token::LBracket => levels.push(Level::default()),
            Token::RParen | Token::RBracket if levels.len() > 1 => close(&mut levels, &mut sum),
            Token::Comma => {
                sum -= levels[top].ops;
                levels[top].ops = 0;
            }
            Token::SemiColon => {
                levels.truncate(1);
                levels[0] = Level::default();
                sum = 0;
            }
            Token::Word(Word {
                keyword,
                quote_style: None,
                ..
            }) => match keyword {
                Keyword::CASE => levels.push(Level::default()),
                Keyword::END if levels.len() > 1 => close(&mut levels, &mut sum),
                Keyword::UNION | Keyword::INTERSECT | Keyword::EXCEPT => {
                    levels[top].sets += 1;
                    sum += 1;
                }
                Keyword::AND
                | Keyword::OR
                | Keyword::NOT
                | Keyword::IS
                | Keyword::LIKE
                | Keyword::ILIKE
                | Keyword::SIMILAR
                | Keyword::IN
                | Keyword::BETWEEN
                | Keyword::COLLATE
                | Keyword::AT => {
                    levels[top].ops += 1;
                    sum += 1;
                }
                Keyword::SELECT
                | Keyword::FROM
                | Keyword::WHERE
                | Keyword::GROUP
                | Keyword::HAVING
                | Keyword::ORDER
                | Keyword::LIMIT
                | Keyword::OFFSET
                | Keyword::WHEN
                | Keyword::THEN
                | Keyword::ELSE
                | Keyword::ON
                | Keyword::USING
                | Keyword::VALUES
                | Keyword::SET
                | Keyword::RETURNING
                | Keyword::WITH
                | Keyword::AS => {
                    sum -= levels[top].ops;
                    levels[top].ops = 0;
                }
                _ => {}
            },
            Token::Plus
            | Token::Minus
            | Token::Mul
            | Token::Div
            | Token::DuckIntDiv
            | Token::Mod
            | Token::StringConcat
            | Token::Eq
            | Token::DoubleEq
            | Token::Neq
            | Token::Lt
            | Token::Gt
            | Token::LtEq
            | Token::GtEq
            | Token::Spaceship
            | Token::DoubleColon
            | Token::Caret
            | Token::Ampersand
            | Token::Pipe
            | Token::ShiftLeft
            | Token::ShiftRight
            | Token::Tilde
            | Token::TildeAsterisk
            | Token::ExclamationMarkTilde
            | Token::ExclamationMarkTildeAsterisk
            | Token::Arrow
            | Token::LongArrow
            | Token::HashArrow
            | Token::HashLongArrow
            | Token::AtArrow
            | Token::ArrowAt
            | Token::Question
            | Token::CustomBinaryOperator(_) => {
                levels[top].ops += 1;
                sum += 1;
            }
            _ => {}
        }
        deepest = deepest.max(sum + levels.len() - 1);
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::tokenizer::Tokenizer;

    fn bound(sql: &str) -> usize {
        let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
            .tokenize_with_location()
            .unwrap();
        let significant: Vec<_> = tokens
            .into_iter()
            .filter(|t| !matches!(t.token, Token::Whitespace(_)))
            .collect();
        depth_bound(&significant)
    }

    fn repeat(item: &str, sep: &str, n: usize) -> String {
        vec![item; n].join(sep)
    }

    #[test]
    fn chains_nest_and_lists_do_not() {
        assert!(bound("SELECT 1") <= 1);
        // A chain of n operators nests n deep.
        let chain = format!("SELECT {}", repeat("1", " + ", 401));
        assert!(bound(&chain) >= 400);
        let ors = format!("SELECT * FROM t WHERE {}", repeat("a = 1", " OR ", 1000));
        assert!(bound(&ors) >= 1000);
        let unions = repeat("SELECT 1", " UNION ALL ", 501);
        assert!(bound(&unions) >= 500);
        // Lists are flat: 8,000 columns, a long IN list, many CASE arms.
        let columns = format!("SELECT {} FROM t", repeat("a + b", ", ", 8000));
        assert!(bound(&columns) <= 3, "{}", bound(&columns));
        let list = format!("SELECT * FROM t WHERE a IN ({})", repeat("1", ", ", 10000));
        assert!(bound(&list) <= 4);
        let case = format!(
            "SELECT CASE {} END FROM t",
            repeat("WHEN a = 1 THEN b + 1", " ", 2000)
        );
        assert!(bound(&case) <= 4, "{}", bound(&case));
        // Parentheses nest.
        let nested = format!("SELECT {}1{}", "(".repeat(300), ")".repeat(300));
        assert!(bound(&nested) >= 300);
        // Each statement of a script starts again.
        let script = repeat(&format!("SELECT {}", repeat("1", " + ", 10)), "; ", 500);
        assert!(bound(&script) <= 12);
    }
}
