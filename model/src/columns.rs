//! Column-oriented rows as ingestion receives them (`{"data": {column:
//! [values]}}`): which input column feeds each dataset field (after a
//! source's `preproc`, field defaults and optional fields), and checking
//! every value against its field's type before anything is stored.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::payload::{Dataset, Preproc};
use crate::values::{short, Checker};

/// Where a field's values come from.
#[derive(Debug, Clone, Copy)]
pub enum Column<'a> {
    /// One value per row.
    Values(&'a [Value]),
    /// The same value for every row (a `preproc` constant, a default, or
    /// null for an absent optional field).
    Const(&'a Value),
}

impl<'a> Column<'a> {
    #[inline]
    pub fn get(&self, row: usize) -> &'a Value {
        match self {
            Column::Values(v) => &v[row],
            Column::Const(v) => v,
        }
    }
}

/// A request-level or row-level problem, with the row (0-based index into
/// the columns), the field and the offending value when there is one.
#[derive(Debug, Clone, PartialEq)]
pub struct RowError {
    pub row: Option<usize>,
    pub field: Option<String>,
    pub value: Option<Value>,
    pub message: String,
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RowError {}

fn request_error(field: Option<&str>, message: String) -> RowError {
    RowError {
        row: None,
        field: field.map(str::to_string),
        value: None,
        message,
    }
}

static NULL: Value = Value::Null;

/// The columns of `ds`'s fields, in field order, and the number of rows.
pub fn resolve<'a>(
    ds: &'a Dataset,
    preproc: Option<&'a BTreeMap<String, Preproc>>,
    data: &'a Map<String, Value>,
) -> Result<(Vec<Column<'a>>, usize), RowError> {
    let mut len: Option<(usize, &str)> = None;
    let mut column = |name: &'a str| -> Result<Option<Column<'a>>, RowError> {
        let Some(v) = data.get(name) else {
            return Ok(None);
        };
        let Value::Array(items) = v else {
            return Err(request_error(
                Some(name),
                format!("data.{name} must be a list of values, not {}", short(v)),
            ));
        };
        match len {
            None => len = Some((items.len(), name)),
            Some((n, first)) if n != items.len() => {
                return Err(request_error(
                    Some(name),
                    format!(
                        "columns have different lengths: data.{first} has {n} values, data.{name} has {}",
                        items.len()
                    ),
                ))
            }
            _ => {}
        }
        Ok(Some(Column::Values(items)))
    };
    let mut cols = Vec::with_capacity(ds.fields.len());
    for f in &ds.fields {
        let col = match preproc.and_then(|p| p.get(&f.name)) {
            Some(Preproc::Const(v)) => Column::Const(v),
            Some(Preproc::Ref(other)) => column(other)?.ok_or_else(|| {
                request_error(
                    Some(&f.name),
                    format!("field {} is filled from column {other} (preproc), which is missing from data", f.name),
                )
            })?,
            None => match column(&f.name)? {
                Some(c) => c,
                None => match &f.default {
                    Some(d) => Column::Const(d),
                    None if f.ty.is_optional() => Column::Const(&NULL),
                    None => {
                        let is_ts = crate::validate::timestamp_field(ds).is_some_and(|t| t.name == f.name);
                        let what = if is_ts {
                            "the timestamp field"
                        } else if f.key {
                            "key field"
                        } else {
                            "field"
                        };
                        return Err(request_error(
                            Some(&f.name),
                            format!("{what} {} of dataset {} is missing from data", f.name, ds.name),
                        ));
                    }
                },
            },
        };
        cols.push(col);
    }
    // Columns that only feed other datasets are fine; a request with no
    // columns at all for this dataset has no rows.
    Ok((cols, len.map_or(0, |(n, _)| n)))
}

/// Check every value of `cols` (as from [`resolve`]) against its field;
/// the first bad value is reported with its row, field and value.
pub fn check(ds: &Dataset, cols: &[Column<'_>], rows: usize) -> Result<(), RowError> {
    for (f, col) in ds.fields.iter().zip(cols) {
        let checker = Checker::new(&f.ty);
        let bad = |row: usize, v: &Value, e: String| RowError {
            row: Some(row),
            field: Some(f.name.clone()),
            value: Some(v.clone()),
            message: format!("row {row}, field {}: {e}", f.name),
        };
        match col {
            Column::Const(v) => {
                if rows > 0 {
                    checker.check(v).map_err(|e| bad(0, v, e))?;
                }
            }
            Column::Values(vs) => {
                for (i, v) in vs.iter().enumerate() {
                    checker.check(v).map_err(|e| bad(i, v, e))?;
                }
            }
        }
    }
    Ok(())
}

/// Like [`check`], for sources that skip bad rows instead of refusing the
/// request: the first bad value of every row that has one, by row.
pub fn check_rows(ds: &Dataset, cols: &[Column<'_>], rows: usize) -> BTreeMap<usize, RowError> {
    let mut bad: BTreeMap<usize, RowError> = BTreeMap::new();
    for (f, col) in ds.fields.iter().zip(cols) {
        let checker = Checker::new(&f.ty);
        let mut report = |row: usize, v: &Value, e: String| {
            bad.entry(row).or_insert_with(|| RowError {
                row: Some(row),
                field: Some(f.name.clone()),
                value: Some(v.clone()),
                message: format!("field {}: {e}", f.name),
            });
        };
        match col {
            Column::Const(v) => {
                if let Err(e) = checker.check(v) {
                    for r in 0..rows {
                        report(r, v, e.clone());
                    }
                }
            }
            Column::Values(vs) => {
                for (i, v) in vs.iter().enumerate() {
                    if let Err(e) = checker.check(v) {
                        report(i, v, e);
                    }
                }
            }
        }
    }
    bad
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ds() -> Dataset {
        serde_json::from_value(json!({"name": "Txn", "fields": [
            {"name": "uid", "type": "int"},
            {"name": "amount", "type": "float"},
            {"name": "country", "type": {"optional": "str"}},
            {"name": "ts", "type": "datetime", "timestamp": true}]}))
        .unwrap()
    }

    #[test]
    fn resolves_and_checks() {
        let d = ds();
        let data =
            json!({"uid": [1, 2], "amount": [1.5, 2], "ts": ["2024-01-01T00:00:00Z", 1700000000]});
        let (cols, n) = resolve(&d, None, data.as_object().unwrap()).unwrap();
        assert_eq!(n, 2);
        check(&d, &cols, n).unwrap();

        let bad = json!({"uid": [1, 2], "amount": [1.5, "x"], "ts": ["2024-01-01T00:00:00Z", 1]});
        let (cols, n) = resolve(&d, None, bad.as_object().unwrap()).unwrap();
        let e = check(&d, &cols, n).unwrap_err();
        assert_eq!((e.row, e.field.as_deref()), (Some(1), Some("amount")));
        assert!(e.message.contains("\"x\""), "{}", e.message);

        let missing = json!({"uid": [1], "amount": [1.0]});
        let e = resolve(&d, None, missing.as_object().unwrap()).unwrap_err();
        assert!(e.message.contains("timestamp field ts"), "{}", e.message);

        let ragged = json!({"uid": [1], "amount": [1.0, 2.0], "ts": [1]});
        assert!(resolve(&d, None, ragged.as_object().unwrap())
            .unwrap_err()
            .message
            .contains("different lengths"));

        let pre: BTreeMap<String, Preproc> =
            serde_json::from_value(json!({"country": {"const": "US"}, "uid": {"ref": "user"}}))
                .unwrap();
        let data = json!({"user": [7], "amount": [1.0], "ts": [1]});
        let (cols, n) = resolve(&d, Some(&pre), data.as_object().unwrap()).unwrap();
        assert_eq!(cols[0].get(0), &json!(7));
        assert_eq!(cols[2].get(0), &json!("US"));
        check(&d, &cols, n).unwrap();
    }
}
