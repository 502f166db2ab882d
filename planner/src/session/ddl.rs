//! `CREATE TABLE`: a dataset from a table definition (`PRIMARY KEY`, `WITH
//! (timestamp = ...)`).

use sqlparser::ast::{
    ColumnOption, CreateTable, CreateTableOptions, Expr as SqlExpr, SqlOption, TableConstraint,
    Value,
};

use thyme_table::catalog::{DatasetDef, FieldDef};
use thyme_table::error::{Error, Result};
use thyme_table::types::DType;

use super::*;

impl Session {
    pub(super) fn create_table(&self, ct: &CreateTable) -> Result<bool> {
        if ct.query.is_some() || ct.like.is_some() {
            return Err(Error::Unsupported("CREATE TABLE AS / LIKE".into()));
        }
        let name = object_name(&ct.name)?;
        let mut fields = Vec::new();
        let mut keys: Vec<String> = Vec::new();
        for c in &ct.columns {
            let fname = ident_name(&c.name);
            let dtype = DType::from_sql(&c.data_type).ok_or_else(|| {
                Error::Unsupported(format!("column type {} (column {fname})", c.data_type))
            })?;
            let mut nullable = true;
            for opt in &c.options {
                match &opt.option {
                    ColumnOption::NotNull => nullable = false,
                    ColumnOption::Null => nullable = true,
                    ColumnOption::PrimaryKey(_) => {
                        nullable = false;
                        keys.push(fname.clone());
                    }
                    other => {
                        return Err(Error::Unsupported(format!(
                            "column option {other} (column {fname})"
                        )));
                    }
                }
            }
            fields.push(FieldDef {
                name: fname,
                dtype,
                nullable,
            });
        }
        for tc in &ct.constraints {
            match tc {
                TableConstraint::PrimaryKey(pk) => {
                    for col in &pk.columns {
                        let SqlExpr::Identifier(id) = &col.column.expr else {
                            return Err(Error::Syntax(format!(
                                "PRIMARY KEY column {}",
                                col.column.expr
                            )));
                        };
                        keys.push(ident_name(id));
                    }
                }
                other => return Err(Error::Unsupported(format!("table constraint {other}"))),
            }
        }
        let mut timestamp: Option<String> = None;
        let options: &[SqlOption] = match &ct.table_options {
            CreateTableOptions::None => &[],
            CreateTableOptions::With(o) => o,
            other => return Err(Error::Unsupported(format!("table options {other}"))),
        };
        for o in options {
            let SqlOption::KeyValue { key, value } = o else {
                return Err(Error::Unsupported(format!("table option {o}")));
            };
            let v = match value {
                SqlExpr::Value(v) => match &v.value {
                    Value::SingleQuotedString(s) => s.clone(),
                    other => other.to_string(),
                },
                SqlExpr::Identifier(i) => ident_name(i),
                other => other.to_string(),
            };
            match key.value.to_lowercase().as_str() {
                "timestamp" => timestamp = Some(v),
                other => {
                    return Err(Error::InvalidDefinition(format!(
                        "unknown table option {other} (known: timestamp)"
                    )))
                }
            }
        }
        for k in &keys {
            match fields.iter_mut().find(|f| &f.name == k) {
                Some(f) => f.nullable = false,
                None => {
                    return Err(Error::UnknownColumn {
                        table: name.clone(),
                        column: k.clone(),
                    })
                }
            }
        }
        let timestamp = match timestamp {
            Some(t) => t,
            None => {
                let ts: Vec<&FieldDef> = fields
                    .iter()
                    .filter(|f| f.dtype == DType::Datetime)
                    .collect();
                match ts.as_slice() {
                    [one] => one.name.clone(),
                    [] => {
                        return Err(Error::InvalidDefinition(format!(
                            "dataset {name} needs a timestamp column (event time)"
                        )))
                    }
                    _ => {
                        return Err(Error::InvalidDefinition(format!(
                            "dataset {name} has several timestamp columns; name the event time with WITH (timestamp = '...')"
                        )))
                    }
                }
            }
        };
        match fields.iter_mut().find(|f| f.name == timestamp) {
            Some(f) => f.nullable = false,
            None => {
                return Err(Error::UnknownColumn {
                    table: name.clone(),
                    column: timestamp.clone(),
                })
            }
        }
        let def = DatasetDef {
            name,
            fields,
            keys,
            timestamp,
            version: 1,
            index: true,
            decay: vec![],
        };
        self.engine.catalog.create(def, ct.if_not_exists)
    }
}
