//! Session variables: `SET` and `SHOW` (`thyme.as_of`,
//! `thyme.asof_strategy` and the settings clients send).

use sqlparser::ast::{Expr as SqlExpr, Value};

use crate::asof::AsOfStrategy;
use thyme_table::error::{Error, Result};

use super::*;

impl Session {
    pub(super) fn show(&self, name: &str) -> Option<String> {
        match name {
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
