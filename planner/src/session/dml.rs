//! Writes: `INSERT`, `DELETE` (a delete version per matching key) and
//! `COPY ... FROM STDIN`, each statement in one atomic batch.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::DataType;
use datafusion::common::{ParamValues, ScalarValue};
use sqlparser::ast::{
    CopyOption, Delete, Expr as SqlExpr, FromTable, Insert, SetExpr, Statement, TableFactor,
    TableObject, Value,
};
use thyme_storage::WriteBatch;

use crate::schema::{self};
use thyme_table::catalog::Dataset;
use thyme_table::copy::{self, CopyFormat};
use thyme_table::error::{Error, Result};
use thyme_table::ingest;
use thyme_table::types::UTC;

use super::*;

impl Session {
    pub(super) fn insert_target(&self, insert: &Insert) -> Result<(Arc<Dataset>, Vec<usize>)> {
        let TableObject::TableName(name) = &insert.table else {
            return Err(Error::Unsupported("INSERT into a table function".into()));
        };
        if insert.returning.is_some() {
            return Err(Error::Unsupported("INSERT ... RETURNING".into()));
        }
        if insert.on.is_some() {
            return Err(Error::Unsupported(
                "INSERT ... ON CONFLICT (every insert is already an upsert of a new version)"
                    .into(),
            ));
        }
        let ds = self.writable_dataset(name)?;
        let columns = if insert.columns.is_empty() {
            (0..ds.fields().len()).collect()
        } else {
            insert
                .columns
                .iter()
                .map(|c| {
                    let n =
                        c.0.last()
                            .and_then(|p| p.as_ident())
                            .map(ident_name)
                            .unwrap_or_default();
                    ds.fields().iter().position(|f| f.name == n).ok_or_else(|| {
                        Error::UnknownColumn {
                            table: ds.name().to_string(),
                            column: n,
                        }
                    })
                })
                .collect::<Result<Vec<_>>>()?
        };
        Ok((ds, columns))
    }

    /// Build the dataset-shaped batch from source columns (by position).
    pub(super) fn conform(
        &self,
        ds: &Dataset,
        columns: &[usize],
        source: &[ArrayRef],
        rows: usize,
        offset: usize,
    ) -> Result<RecordBatch> {
        if source.len() != columns.len() {
            return Err(Error::Syntax(format!(
                "INSERT has {} target columns but {} values",
                columns.len(),
                source.len()
            )));
        }
        let mut out: Vec<Option<ArrayRef>> = vec![None; ds.fields().len()];
        for (src, &j) in source.iter().zip(columns) {
            out[j] = Some(ingest::conform_column(ds, j, src, offset)?);
        }
        let cols: Vec<ArrayRef> = out
            .into_iter()
            .enumerate()
            .map(|(j, c)| {
                c.unwrap_or_else(|| {
                    arrow::array::new_null_array(&ds.fields()[j].dtype.arrow(), rows)
                })
            })
            .collect();
        ingest::check_not_null(ds, &cols)?;
        let opts = arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(rows));
        Ok(RecordBatch::try_new_with_options(ds.schema(), cols, &opts)?)
    }

    pub(super) async fn insert(
        &mut self,
        ds: &Arc<Dataset>,
        columns: &[usize],
        insert: &Insert,
        params: Option<ParamValues>,
    ) -> Result<usize> {
        let Some(source) = &insert.source else {
            return Err(Error::Unsupported("INSERT without VALUES or SELECT".into()));
        };
        let batches: Vec<RecordBatch> = match source.body.as_ref() {
            SetExpr::Values(values)
                if source.order_by.is_none() && source.limit_clause.is_none() =>
            {
                let rows = values.rows.len();
                let width = values.rows.first().map(|r| r.len()).unwrap_or(0);
                let mut cols: Vec<ArrayRef> = Vec::with_capacity(width);
                for c in 0..width {
                    let mut cells: Vec<ScalarValue> = Vec::with_capacity(rows);
                    for (r, row) in values.rows.iter().enumerate() {
                        let cell = row.get(c).ok_or_else(|| {
                            Error::Syntax(format!(
                                "VALUES row {} has {} values, expected {width}",
                                r + 1,
                                row.len()
                            ))
                        })?;
                        cells.push(self.eval_cell(cell, params.as_ref())?);
                    }
                    if values.rows.iter().any(|r| r.len() != width) {
                        return Err(Error::Syntax(
                            "VALUES lists must all be the same length".into(),
                        ));
                    }
                    cols.push(self.cells_to_array(ds, columns.get(c).copied(), cells)?);
                }
                vec![self.conform(ds, columns, &cols, rows, 0)?]
            }
            _ => {
                let q = Statement::Query(source.clone());
                let mut out = Vec::new();
                let mut offset = 0;
                for b in self.collect_query(&q, self.as_of, params).await? {
                    out.push(self.conform(ds, columns, b.columns(), b.num_rows(), offset)?);
                    offset += b.num_rows();
                }
                out
            }
        };
        let (wb, rows) = ingest::rows_batch(ds, &batches)?;
        self.write(ds, "INSERT", wb)?;
        Ok(rows)
    }

    pub(super) fn eval_cell(
        &self,
        cell: &SqlExpr,
        params: Option<&ParamValues>,
    ) -> Result<ScalarValue> {
        if let SqlExpr::Value(v) = cell {
            match &v.value {
                Value::Null => return Ok(ScalarValue::Null),
                Value::SingleQuotedString(s) => return Ok(ScalarValue::Utf8(Some(s.clone()))),
                Value::Boolean(b) => return Ok(ScalarValue::Boolean(Some(*b))),
                Value::Number(n, _) => {
                    if let Ok(i) = n.parse::<i64>() {
                        return Ok(ScalarValue::Int64(Some(i)));
                    }
                    if let Ok(f) = n.parse::<f64>() {
                        return Ok(ScalarValue::Float64(Some(f)));
                    }
                }
                Value::Placeholder(p) => {
                    let params = params
                        .ok_or_else(|| Error::Syntax(format!("parameter {p} was not bound")))?;
                    return Ok(params.get_placeholders_with_values(p)?.value);
                }
                _ => {}
            }
        }
        let expr = self
            .state
            .create_logical_expr_from_sql_expr(
                sqlparser::ast::ExprWithAlias {
                    expr: cell.clone(),
                    alias: None,
                },
                &datafusion::common::DFSchema::empty(),
            )
            .map_err(Error::unwrap_datafusion)?;
        let expr = match params {
            Some(p) => schema::bind_placeholders(expr, p)?,
            None => expr,
        };
        schema::eval_const(&expr)
    }

    pub(super) fn cells_to_array(
        &self,
        ds: &Dataset,
        target: Option<usize>,
        cells: Vec<ScalarValue>,
    ) -> Result<ArrayRef> {
        let first_type = cells.iter().find(|c| !c.is_null()).map(|c| c.data_type());
        let uniform = first_type
            .as_ref()
            .is_none_or(|t| cells.iter().all(|c| c.is_null() || &c.data_type() == t));
        if uniform {
            let t = first_type.unwrap_or(DataType::Null);
            let cells: Vec<ScalarValue> = cells
                .into_iter()
                .map(|c| {
                    if c.is_null() {
                        ScalarValue::try_from(&t).unwrap_or(ScalarValue::Null)
                    } else {
                        c
                    }
                })
                .collect();
            if cells.is_empty() {
                return Ok(arrow::array::new_null_array(&t, 0));
            }
            return Ok(ScalarValue::iter_to_array(cells)?);
        }
        // Mixed literal types: conform each cell on its own.
        let Some(j) = target else {
            return Err(Error::Syntax("more VALUES than target columns".into()));
        };
        let mut arrays = Vec::with_capacity(cells.len());
        for (r, c) in cells.iter().enumerate() {
            arrays.push(ingest::conform_column(ds, j, &c.to_array()?, r)?);
        }
        let refs: Vec<&dyn arrow::array::Array> = arrays.iter().map(|a| a.as_ref()).collect();
        Ok(arrow::compute::concat(&refs)?)
    }

    pub(super) fn delete_target(&self, delete: &Delete) -> Result<Arc<Dataset>> {
        if delete.using.is_some()
            || delete.returning.is_some()
            || delete.limit.is_some()
            || !delete.order_by.is_empty()
        {
            return Err(Error::Unsupported(
                "DELETE with USING, RETURNING, ORDER BY or LIMIT".into(),
            ));
        }
        let tables = match &delete.from {
            FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
        };
        let [t] = tables.as_slice() else {
            return Err(Error::Unsupported("DELETE from several tables".into()));
        };
        if !t.joins.is_empty() {
            return Err(Error::Unsupported("DELETE with joins".into()));
        }
        let TableFactor::Table { name, .. } = &t.relation else {
            return Err(Error::Unsupported("DELETE from a derived table".into()));
        };
        let ds = self.writable_dataset(name)?;
        if !ds.is_keyed() {
            return Err(Error::Unsupported(format!(
                "DELETE on the keyless dataset {} (events are immutable)",
                ds.name()
            )));
        }
        Ok(ds)
    }

    /// `SELECT * FROM <table> [WHERE <selection>]`: the rows a DELETE removes.
    pub(super) fn delete_query(&self, delete: &Delete) -> Result<Statement> {
        let tables = match &delete.from {
            FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
        };
        let mut query = match self
            .engine
            .parse("SELECT * FROM t")?
            .pop()
            .map(|p| p.statement)
        {
            Some(Statement::Query(q)) => q,
            _ => return Err(Error::Internal("delete template".into())),
        };
        if let SetExpr::Select(select) = query.body.as_mut() {
            select.from = tables.clone();
            select.selection = delete.selection.clone();
        }
        Ok(Statement::Query(query))
    }

    pub(super) async fn delete(
        &mut self,
        ds: &Arc<Dataset>,
        delete: &Delete,
        at: i64,
        params: Option<ParamValues>,
    ) -> Result<usize> {
        // The rows current at the delete time that match.
        let query = self.delete_query(delete)?;
        let batches = self.collect_query(&query, Some(at), params).await?;
        let mut wb = WriteBatch::new();
        let mut n = 0;
        for b in batches {
            let rows = b.num_rows();
            n += rows;
            // Each delete version is stamped with the delete time.
            let mut cols = b.columns().to_vec();
            cols[ds.ts_index()] = Arc::new(
                arrow::array::TimestampMicrosecondArray::from_value(at, rows).with_timezone(UTC),
            );
            let b = RecordBatch::try_new(b.schema(), cols)?;
            ingest::add_deletes(ds, &b, &mut wb)?;
        }
        self.write(ds, "DELETE", wb)?;
        Ok(n)
    }

    /// Load a `COPY ... FROM STDIN` payload atomically; returns the row count.
    pub fn copy_in(&mut self, copy: &CopyIn, data: &[u8]) -> Result<usize> {
        // The COPY statement itself passed the transaction checks.
        let r = self.copy_in_inner(copy, data);
        if r.is_err() {
            self.fail_transaction();
        }
        r
    }

    fn copy_in_inner(&mut self, copy: &CopyIn, data: &[u8]) -> Result<usize> {
        let rows = copy::parse(&copy.format, data, copy.columns.len())?;
        let n = rows.len();
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(copy.columns.len());
        for c in 0..copy.columns.len() {
            let col: StringArray = rows.iter().map(|r| r[c].as_deref()).collect();
            arrays.push(Arc::new(col));
        }
        let batch = self.conform(&copy.dataset, &copy.columns, &arrays, n, 0)?;
        let (wb, rows) = ingest::rows_batch(&copy.dataset, &[batch])?;
        self.write(&copy.dataset, "COPY", wb)?;
        Ok(rows)
    }
}

pub(super) fn copy_format(options: &[CopyOption], legacy: bool) -> Result<CopyFormat> {
    let mut csv = legacy;
    let mut delimiter = None;
    let mut null = None;
    let mut header = false;
    let mut quote = '"';
    let mut escape = None;
    for o in options {
        match o {
            CopyOption::Format(f) => match f.value.to_lowercase().as_str() {
                "csv" => csv = true,
                "text" => csv = false,
                other => return Err(Error::Unsupported(format!("COPY format {other}"))),
            },
            CopyOption::Delimiter(d) => delimiter = Some(*d),
            CopyOption::Null(n) => null = Some(n.clone()),
            CopyOption::Header(h) => header = *h,
            CopyOption::Quote(q) => quote = *q,
            CopyOption::Escape(e) => escape = Some(*e),
            CopyOption::Encoding(e)
                if e.eq_ignore_ascii_case("utf8") || e.eq_ignore_ascii_case("utf-8") => {}
            other => return Err(Error::Unsupported(format!("COPY option {other}"))),
        }
    }
    Ok(if csv {
        CopyFormat::Csv {
            delimiter: delimiter.unwrap_or(','),
            quote,
            escape: escape.unwrap_or(quote),
            header,
            null: null.unwrap_or_default(),
        }
    } else {
        CopyFormat::Text {
            delimiter: delimiter.unwrap_or('\t'),
            null: null.unwrap_or_else(|| "\\N".into()),
        }
    })
}
