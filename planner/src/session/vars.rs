//! Session variables: `SET` and `SHOW` (`thyme.as_of`,
//! `thyme.asof_strategy` and the settings clients send).

use sqlparser::ast::{Expr as SqlExpr, Value};

use crate::asof::AsOfStrategy;
use thyme_table::error::{Error, Result};

use super::*;

/// A duration setting in Postgres' forms: a number of milliseconds, or a
/// number with a unit (`ms`, `s`, `min`, `h`, `d`); `None` if it is
/// neither.
pub fn parse_millis(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "ms" => 1.0,
        "s" => 1e3,
        "min" => 60e3,
        "h" => 3600e3,
        "d" => 86_400e3,
        _ => return None,
    };
    let ms = (number * scale).round();
    (ms.is_finite() && ms >= 0.0 && ms <= i32::MAX as f64).then_some(ms as u64)
}

/// Milliseconds as `SHOW` gives them (`0`, `250ms`, `5s`).
fn format_millis(ms: u64) -> String {
    match ms {
        0 => "0".into(),
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}

impl Session {
    /// The time limit of the next statement (`None`: none), from
    /// `SET statement_timeout` or the server's default.
    pub fn statement_timeout(&self) -> Option<std::time::Duration> {
        let ms = match self.vars.get(STATEMENT_TIMEOUT_VARIABLE) {
            Some(v) => parse_millis(v).unwrap_or(0),
            None => self.engine.limits.statement_timeout_ms,
        };
        (ms > 0).then(|| std::time::Duration::from_millis(ms))
    }

    pub(super) fn show(&self, name: &str) -> Option<String> {
        match name {
            STATEMENT_TIMEOUT_VARIABLE => Some(format_millis(
                self.statement_timeout().map_or(0, |d| d.as_millis() as u64),
            )),
            AS_OF_VARIABLE => Some(
                self.as_of
                    .and_then(chrono::DateTime::from_timestamp_micros)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
                    .unwrap_or_default(),
            ),
            _ => self.vars.get(name).cloned().or_else(|| {
                Some(
                    match name {
                        "server_version" => "15.0",
                        "server_version_num" => "150000",
                        "server_encoding" | "client_encoding" => "UTF8",
                        "standard_conforming_strings" => "on",
                        "datestyle" => "ISO, MDY",
                        "timezone" => "UTC",
                        "transaction_isolation"
                        | "default_transaction_isolation"
                        | "transaction.isolation.level" => "read committed",
                        "integer_datetimes" => "on",
                        "search_path" => "public",
                        "max_identifier_length" => "63",
                        _ => return None,
                    }
                    .to_string(),
                )
            }),
        }
    }

    pub(super) fn set(&mut self, set: &sqlparser::ast::Set) -> Result<()> {
        use sqlparser::ast::Set;
        match set {
            Set::SingleAssignment {
                variable, values, ..
            } => {
                let name = variable.to_string().to_lowercase();
                let value = values
                    .first()
                    .ok_or_else(|| Error::Syntax("SET needs a value".into()))?;
                if name == AS_OF_VARIABLE {
                    let clear = match value {
                        SqlExpr::Identifier(i) => i.value.eq_ignore_ascii_case("default"),
                        SqlExpr::Value(v) => match &v.value {
                            Value::SingleQuotedString(s) => {
                                s.is_empty() || s.eq_ignore_ascii_case("now")
                            }
                            Value::Null => true,
                            _ => false,
                        },
                        _ => false,
                    };
                    self.as_of = if clear {
                        None
                    } else {
                        Some(self.eval_as_of(value, None)?)
                    };
                } else {
                    let text = match value {
                        SqlExpr::Value(v) => match &v.value {
                            Value::SingleQuotedString(s) => s.clone(),
                            other => other.to_string(),
                        },
                        other => other.to_string(),
                    };
                    if name == STATEMENT_TIMEOUT_VARIABLE {
                        if text.eq_ignore_ascii_case("default") {
                            self.vars.remove(&name);
                            return Ok(());
                        }
                        let ms = parse_millis(&text).ok_or_else(|| {
                            Error::InvalidParameter(format!(
                                "invalid value for parameter \"statement_timeout\": {text:?} (milliseconds, or a number with a unit: ms, s, min, h, d)"
                            ))
                        })?;
                        self.vars.insert(name, ms.to_string());
                        return Ok(());
                    }
                    if name == ASOF_STRATEGY_VARIABLE && AsOfStrategy::parse(&text).is_none() {
                        return Err(Error::InvalidParameter(format!(
                            "{ASOF_STRATEGY_VARIABLE} is auto, seek, hash or merge, not {text:?}"
                        )));
                    }
                    self.vars.insert(name, text);
                }
                Ok(())
            }
            // SET TIME ZONE, SET NAMES, SET SESSION CHARACTERISTICS ...: accepted.
            _ => Ok(()),
        }
    }
}
