//! [`Engine`] (shared) and [`Session`] (one per client connection): turning
//! parsed statements into DataFusion plans, writes and catalog changes.
//!
//! Statement kinds:
//! - queries (`SELECT`, `VALUES`, `EXPLAIN`, ...) are planned by DataFusion
//!   over the Thyme catalog, at the statement's query time;
//! - `CREATE TABLE` / `DROP TABLE` change the catalog;
//! - `INSERT`, `COPY ... FROM STDIN` and `DELETE` write versions, each
//!   statement in one atomic batch (a failing statement writes nothing);
//! - `SET` / `SHOW` / `BEGIN` / `COMMIT` / `ROLLBACK` keep session state.
//!   Every statement commits on its own; transaction blocks and savepoints
//!   are accepted for client compatibility but do not group or undo writes.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::dataframe::DataFrame;
use datafusion::execution::context::{SessionContext, SessionState};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionConfig;
use datafusion::sql::parser::Statement as DfStatement;
use sqlparser::ast::{
    ColumnOption, CopyOption, CopySource, CopyTarget, CreateTable, CreateTableOptions, Delete,
    Expr as SqlExpr, FromTable, Ident, Insert, ObjectName, ObjectType, SetExpr, SqlOption,
    Statement, TableConstraint, TableFactor, TableObject, Value,
};
use thyme_storage::{TemporalStore, WriteBatch};

use crate::asof::AsOfStrategy;
use crate::catalog::{Catalog, Dataset, DatasetDef, FieldDef};
use crate::copy::{self, CopyFormat};
use crate::error::{Error, Result};
use crate::ingest;
use crate::lookup::PointLookup;
use crate::provider::QueryAsOf;
use crate::schema::{self, AsOfRelationPlanner, StatementParamsOption, ThymeCatalog};
use crate::sql::{ParsedStatement, SqlParser};
use crate::types::{DType, UTC};

/// Name of the database (DataFusion catalog).
pub const DATABASE: &str = "thyme";
/// The session variable holding the default query time.
pub const AS_OF_VARIABLE: &str = "thyme.as_of";
/// How ASOF joins are run: `auto` (by size), `seek`, `hash`, `merge`.
pub const ASOF_STRATEGY_VARIABLE: &str = "thyme.asof_strategy";

/// State shared by all sessions: the catalog, the store, a configured
/// DataFusion context to clone sessions from.
pub struct Engine {
    catalog: Arc<Catalog>,
    features: Arc<crate::featureset::Features>,
    registry: Arc<crate::registry::Registry>,
    parser: SqlParser,
    base: SessionContext,
}

impl Engine {
    /// Build the engine over a store. `setup` may register more on the
    /// base context (the Postgres front end installs `pg_catalog` there).
    pub fn new(
        store: Arc<dyn TemporalStore>,
        setup: impl FnOnce(&SessionContext) -> Result<()>,
    ) -> Result<Arc<Self>> {
        let catalog = Arc::new(Catalog::load(store)?);
        let registry = Arc::new(crate::registry::Registry::load(catalog.clone())?);
        let features = Arc::new(crate::featureset::Features::new(registry.clone()));
        let mut config = SessionConfig::new()
            .with_default_catalog_and_schema(DATABASE, schema::PUBLIC)
            .with_create_default_catalog_and_schema(false)
            .with_information_schema(true);
        config
            .options_mut()
            .extensions
            .insert(StatementParamsOption::default());
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features()
            .with_relation_planners(vec![Arc::new(AsOfRelationPlanner)])
            .with_analyzer_rule(Arc::new(crate::asof::AsOfRule))
            .with_query_planner(Arc::new(crate::asof::ThymeQueryPlanner))
            .build();
        let base = SessionContext::new_with_state(state);
        for udf in crate::asof::marker_udfs() {
            base.register_udf(udf);
        }
        base.register_catalog(
            DATABASE,
            Arc::new(ThymeCatalog::new(catalog.clone(), features.clone())),
        );
        setup(&base)?;
        Ok(Arc::new(Engine {
            catalog,
            features,
            registry,
            parser: SqlParser::new(),
            base,
        }))
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// Featureset serving: the extractor graph, planning, evaluation.
    pub fn features(&self) -> &Arc<crate::featureset::Features> {
        &self.features
    }

    /// Committed definitions (datasets, featuresets, webhook routes).
    pub fn registry(&self) -> &Arc<crate::registry::Registry> {
        &self.registry
    }

    pub fn store(&self) -> &Arc<dyn TemporalStore> {
        self.catalog.store()
    }

    /// Parse SQL text into statements.
    pub fn parse(&self, sql: &str) -> Result<Vec<ParsedStatement>> {
        self.parser.parse(sql)
    }

    /// A new client session.
    pub fn session(self: &Arc<Self>) -> Session {
        Session {
            engine: self.clone(),
            state: self.base.state(),
            as_of: None,
            vars: BTreeMap::new(),
        }
    }
}

/// A `COPY ... FROM STDIN` waiting for its data.
#[derive(Debug, Clone)]
pub struct CopyIn {
    pub dataset: Arc<Dataset>,
    /// Dataset field positions, in the order of the payload's columns.
    pub columns: Vec<usize>,
    pub format: CopyFormat,
}

/// What executing a statement produced.
pub enum Output {
    Rows(SendableRecordBatchStream),
    /// A command tag (`CREATE TABLE`, `INSERT 0 3`, ...) and affected rows.
    Command {
        tag: &'static str,
        rows: Option<usize>,
    },
    CopyIn(CopyIn),
    TransactionStart(&'static str),
    TransactionEnd(&'static str),
}

impl Output {
    /// Rows already computed as one batch.
    fn rows(batch: RecordBatch) -> Output {
        Output::Rows(Box::pin(
            datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
                batch.schema(),
                futures::stream::iter(vec![Ok(batch)]),
            ),
        ))
    }
}

#[derive(Debug, Clone)]
enum Kind {
    Query {
        plan: Option<Arc<LogicalPlan>>,
        lookup: Option<PointLookup>,
    },
    Insert {
        ds: Arc<Dataset>,
        columns: Vec<usize>,
    },
    Delete {
        ds: Arc<Dataset>,
    },
    Show {
        name: String,
    },
    Other,
}

/// A statement ready to execute (possibly many times, with parameters).
#[derive(Debug, Clone)]
pub struct Prepared {
    pub parsed: ParsedStatement,
    /// Types of `$1..$n` (`None`: unknown, the client decides).
    pub param_types: Vec<Option<DataType>>,
    /// For parameters that fill a column (`INSERT ... VALUES ($1, ...)`):
    /// that column's name, for error messages.
    pub param_columns: Vec<Option<String>>,
    /// Result columns, for statements that return rows.
    pub schema: Option<SchemaRef>,
    kind: Kind,
}

impl Prepared {
    /// Whether execution takes the point-lookup fast path.
    pub fn is_point_lookup(&self) -> bool {
        matches!(
            &self.kind,
            Kind::Query {
                lookup: Some(_),
                ..
            }
        )
    }
}

/// One client's session.
pub struct Session {
    engine: Arc<Engine>,
    state: SessionState,
    as_of: Option<i64>,
    vars: BTreeMap<String, String>,
}

fn ident_name(id: &Ident) -> String {
    if id.quote_style.is_some() {
        id.value.clone()
    } else {
        id.value.to_lowercase()
    }
}

fn object_name(name: &ObjectName) -> Result<String> {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| {
            p.as_ident()
                .map(ident_name)
                .ok_or_else(|| Error::Syntax(format!("bad name {name}")))
        })
        .collect::<Result<_>>()?;
    match parts.as_slice() {
        [t] => Ok(t.clone()),
        [s, t] if s == schema::PUBLIC => Ok(t.clone()),
        [d, s, t] if d == DATABASE && s == schema::PUBLIC => Ok(t.clone()),
        _ => Err(Error::UnknownTable(name.to_string())),
    }
}

fn placeholder_index(e: &SqlExpr) -> Option<usize> {
    match e {
        SqlExpr::Value(v) => match &v.value {
            Value::Placeholder(p) => p.strip_prefix('$')?.parse().ok(),
            _ => None,
        },
        _ => None,
    }
}

/// Placeholders used as `FOR SYSTEM_TIME AS OF` times, and whether the
/// statement pins any table to a time.
#[derive(Default)]
struct TableVersions {
    pinned: bool,
    placeholders: Vec<usize>,
}

impl sqlparser::ast::Visitor for TableVersions {
    type Break = ();
    fn pre_visit_table_factor(&mut self, tf: &TableFactor) -> std::ops::ControlFlow<()> {
        if let TableFactor::Table {
            version: Some(sqlparser::ast::TableVersion::ForSystemTimeAsOf(e)),
            ..
        } = tf
        {
            self.pinned = true;
            self.placeholders.extend(placeholder_index(e));
        }
        std::ops::ControlFlow::Continue(())
    }
}

fn set_param_type(types: &mut Vec<Option<DataType>>, idx: usize, t: DataType) {
    if idx == 0 {
        return;
    }
    if types.len() < idx {
        types.resize(idx, None);
    }
    if types[idx - 1].is_none() {
        types[idx - 1] = Some(t);
    }
}

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from(UTC)))
}

impl Session {
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The session's default query time (`SET thyme.as_of`), if any.
    pub fn as_of(&self) -> Option<i64> {
        self.as_of
    }

    /// A dataset that SQL may write: not one a pipeline maintains (its
    /// output is recomputed from its inputs, and the store commits its steps
    /// on that assumption), nor the table of late events pipelines keep.
    fn writable_dataset(&self, name: &ObjectName) -> Result<Arc<Dataset>> {
        let ds = self.dataset(name)?;
        let derived = |by: String| Error::Derived {
            table: ds.name().to_string(),
            by,
        };
        if ds.name() == crate::pipeline::LATE_TABLE {
            return Err(derived(
                "the pipelines (it records their late events)".into(),
            ));
        }
        if let Some(d) = self.engine.registry.dataset(ds.name()) {
            if let Some(p) = d.definition.pipelines.first() {
                return Err(derived(format!("its pipeline {}", p.name)));
            }
        }
        Ok(ds)
    }

    fn dataset(&self, name: &ObjectName) -> Result<Arc<Dataset>> {
        let n = object_name(name)?;
        self.engine
            .catalog
            .get(&n)
            .or_else(|| self.engine.catalog.get(&schema::snake_case(&n)))
            .ok_or(Error::UnknownTable(n))
    }

    /// Plan a statement: its parameter types, result schema and (for queries)
    /// a reusable logical plan.
    pub async fn prepare(&self, parsed: ParsedStatement) -> Result<Prepared> {
        let mut param_types: Vec<Option<DataType>> = Vec::new();
        let mut param_columns: Vec<Option<String>> = Vec::new();
        if let Some(i) = parsed.as_of.as_ref().and_then(placeholder_index) {
            set_param_type(&mut param_types, i, ts_type());
        }
        let (kind, schema) = match &parsed.statement {
            Statement::Query(_) | Statement::Explain { .. } | Statement::ExplainTable { .. } => {
                let mut versions = TableVersions::default();
                let _ = sqlparser::ast::Visit::visit(&parsed.statement, &mut versions);
                for i in &versions.placeholders {
                    set_param_type(&mut param_types, *i, ts_type());
                }
                let plan = self
                    .state
                    .statement_to_plan(DfStatement::Statement(Box::new(parsed.statement.clone())))
                    .await
                    .map_err(Error::unwrap_datafusion)?;
                let inferred = plan.get_parameter_types()?;
                for (id, t) in inferred {
                    if let (Some(i), Some(t)) =
                        (id.strip_prefix('$').and_then(|s| s.parse().ok()), t)
                    {
                        set_param_type(&mut param_types, i, t);
                    } else if let Some(i) =
                        id.strip_prefix('$').and_then(|s| s.parse::<usize>().ok())
                    {
                        if param_types.len() < i {
                            param_types.resize(i, None);
                        }
                    }
                }
                let schema = Arc::new(plan.schema().as_arrow().clone());
                let lookup = if versions.pinned {
                    None
                } else {
                    PointLookup::recognise(&plan)
                };
                (
                    Kind::Query {
                        lookup,
                        plan: (!versions.pinned).then(|| Arc::new(plan)),
                    },
                    Some(schema),
                )
            }
            Statement::Insert(insert) => {
                let (ds, columns) = self.insert_target(insert)?;
                if let Some(src) = &insert.source {
                    if let SetExpr::Values(values) = src.body.as_ref() {
                        for row in &values.rows {
                            for (i, cell) in row.iter().enumerate() {
                                if let (Some(p), Some(&c)) =
                                    (placeholder_index(cell), columns.get(i))
                                {
                                    set_param_type(
                                        &mut param_types,
                                        p,
                                        ds.fields()[c].dtype.arrow(),
                                    );
                                    if param_columns.len() < p {
                                        param_columns.resize(p, None);
                                    }
                                    param_columns[p - 1] = Some(ds.fields()[c].name.clone());
                                }
                            }
                        }
                    }
                }
                (Kind::Insert { ds, columns }, None)
            }
            Statement::Delete(delete) => {
                let ds = self.delete_target(delete)?;
                // Parameter types come from the query that finds the rows.
                let query = self.delete_query(delete)?;
                let plan = self
                    .state
                    .statement_to_plan(DfStatement::Statement(Box::new(query)))
                    .await
                    .map_err(Error::unwrap_datafusion)?;
                for (id, t) in plan.get_parameter_types()? {
                    if let (Some(i), Some(t)) =
                        (id.strip_prefix('$').and_then(|s| s.parse().ok()), t)
                    {
                        set_param_type(&mut param_types, i, t);
                    }
                }
                (Kind::Delete { ds }, None)
            }
            Statement::ShowVariable { variable } => {
                let name = variable
                    .iter()
                    .map(|i| i.value.to_lowercase())
                    .collect::<Vec<_>>()
                    .join(".");
                let schema = Arc::new(Schema::new(vec![Field::new(&name, DataType::Utf8, true)]));
                (Kind::Show { name }, Some(schema))
            }
            _ => (Kind::Other, None),
        };
        Ok(Prepared {
            parsed,
            param_types,
            param_columns,
            schema,
            kind,
        })
    }

    /// Run a point lookup (see [`Prepared::is_point_lookup`]): its row, or
    /// none, as one batch. `None` when `p` is not a point lookup.
    pub fn execute_lookup(
        &self,
        p: &Prepared,
        params: Option<&ParamValues>,
    ) -> Result<Option<RecordBatch>> {
        let Kind::Query {
            lookup: Some(lookup),
            ..
        } = &p.kind
        else {
            return Ok(None);
        };
        let stmt_as_of = match &p.parsed.as_of {
            None => None,
            Some(e) => Some(self.eval_as_of(e, params)?),
        };
        let as_of = stmt_as_of
            .or(self.as_of)
            .unwrap_or_else(|| chrono::Utc::now().timestamp_micros());
        lookup
            .execute(self.engine.store().as_ref(), as_of, params)
            .map(Some)
    }

    /// Execute a prepared statement with bound parameters.
    pub async fn execute(&mut self, p: &Prepared, params: Option<ParamValues>) -> Result<Output> {
        if let Some(batch) = self.execute_lookup(p, params.as_ref())? {
            return Ok(Output::rows(batch));
        }
        let stmt_as_of = match &p.parsed.as_of {
            None => None,
            Some(e) => Some(self.eval_as_of(e, params.as_ref())?),
        };
        match (&p.kind, &p.parsed.statement) {
            (Kind::Query { plan, .. }, stmt) => {
                let as_of = stmt_as_of.or(self.as_of);
                let stream = self.run_query(stmt, plan.as_deref(), as_of, params).await?;
                Ok(Output::Rows(stream))
            }
            (Kind::Insert { ds, columns }, Statement::Insert(insert)) => {
                if stmt_as_of.is_some() {
                    return Err(Error::Unsupported(
                        "AS OF on INSERT (rows carry their own event time)".into(),
                    ));
                }
                let n = self.insert(ds, columns, insert, params).await?;
                Ok(Output::Command {
                    tag: "INSERT",
                    rows: Some(n),
                })
            }
            (Kind::Delete { ds }, Statement::Delete(delete)) => {
                let at = stmt_as_of.unwrap_or_else(|| chrono::Utc::now().timestamp_micros());
                let n = self.delete(ds, delete, at, params).await?;
                Ok(Output::Command {
                    tag: "DELETE",
                    rows: Some(n),
                })
            }
            (Kind::Show { name }, _) => {
                let value = self.show(name);
                let schema = p.schema.clone().expect("show has a schema");
                let batch = RecordBatch::try_new(
                    schema.clone(),
                    vec![Arc::new(StringArray::from(vec![value])) as ArrayRef],
                )?;
                Ok(Output::rows(batch))
            }
            (_, stmt) => self.execute_other(stmt).await,
        }
    }

    async fn run_query(
        &self,
        stmt: &Statement,
        cached: Option<&LogicalPlan>,
        as_of: Option<i64>,
        params: Option<ParamValues>,
    ) -> Result<SendableRecordBatchStream> {
        let mut state = self.state.clone();
        state.mark_start_execution();
        if let Some(t) = as_of {
            state.config_mut().set_extension(Arc::new(QueryAsOf(t)));
        }
        if let Some(s) = self
            .vars
            .get(ASOF_STRATEGY_VARIABLE)
            .and_then(|v| AsOfStrategy::parse(v))
        {
            state.config_mut().set_extension(Arc::new(s));
        }
        if params.is_some() {
            state
                .config_mut()
                .options_mut()
                .extensions
                .insert(StatementParamsOption(params.clone()));
        }
        let plan = match cached {
            Some(p) => p.clone(),
            None => state
                .statement_to_plan(DfStatement::Statement(Box::new(stmt.clone())))
                .await
                .map_err(Error::unwrap_datafusion)?,
        };
        let plan = match params {
            Some(p) => plan.with_param_values(p)?,
            None => plan,
        };
        let df = DataFrame::new(state, plan);
        df.execute_stream().await.map_err(Error::unwrap_datafusion)
    }

    /// Run SQL text to completion and return the rows of its queries (for
    /// callers that are not a wire protocol, e.g. the HTTP APIs).
    pub async fn query(&mut self, sql: &str) -> Result<Vec<RecordBatch>> {
        use futures::TryStreamExt;
        let mut out = Vec::new();
        for stmt in self.engine.parse(sql)? {
            let prepared = self.prepare(stmt).await?;
            if let Output::Rows(stream) = self.execute(&prepared, None).await? {
                out.extend(
                    stream
                        .try_collect::<Vec<_>>()
                        .await
                        .map_err(Error::unwrap_datafusion)?,
                );
            }
        }
        Ok(out)
    }

    async fn collect_query(
        &self,
        stmt: &Statement,
        as_of: Option<i64>,
        params: Option<ParamValues>,
    ) -> Result<Vec<RecordBatch>> {
        use futures::TryStreamExt;
        let stream = self.run_query(stmt, None, as_of, params).await?;
        stream.try_collect().await.map_err(Error::unwrap_datafusion)
    }

    fn eval_as_of(&self, e: &SqlExpr, params: Option<&ParamValues>) -> Result<i64> {
        let expr = self
            .state
            .create_logical_expr_from_sql_expr(
                sqlparser::ast::ExprWithAlias {
                    expr: e.clone(),
                    alias: None,
                },
                &datafusion::common::DFSchema::empty(),
            )
            .map_err(Error::unwrap_datafusion)?;
        schema::eval_timestamp(expr, params)?
            .ok_or_else(|| Error::InvalidDatetime("AS OF parameter was not bound".into()))
    }

    fn insert_target(&self, insert: &Insert) -> Result<(Arc<Dataset>, Vec<usize>)> {
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
    fn conform(
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

    async fn insert(
        &self,
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
        ingest::write_rows(self.engine.store().as_ref(), ds, &batches)
    }

    fn eval_cell(&self, cell: &SqlExpr, params: Option<&ParamValues>) -> Result<ScalarValue> {
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

    fn cells_to_array(
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

    fn delete_target(&self, delete: &Delete) -> Result<Arc<Dataset>> {
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
    fn delete_query(&self, delete: &Delete) -> Result<Statement> {
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

    async fn delete(
        &self,
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
        if !wb.is_empty() {
            self.engine.store().write(wb)?;
        }
        Ok(n)
    }

    fn show(&self, name: &str) -> Option<String> {
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

    async fn execute_other(&mut self, stmt: &Statement) -> Result<Output> {
        match stmt {
            Statement::CreateTable(ct) => {
                let created = self.create_table(ct)?;
                let _ = created;
                Ok(Output::Command {
                    tag: "CREATE TABLE",
                    rows: None,
                })
            }
            Statement::Drop {
                object_type,
                if_exists,
                names,
                ..
            } => {
                if *object_type != ObjectType::Table {
                    return Err(Error::Unsupported(format!("DROP {object_type}")));
                }
                for n in names {
                    let name = object_name(n)?;
                    self.engine.catalog.drop_dataset(&name, *if_exists)?;
                }
                Ok(Output::Command {
                    tag: "DROP TABLE",
                    rows: None,
                })
            }
            Statement::Copy {
                source,
                to,
                target,
                options,
                legacy_options,
                ..
            } => {
                if *to {
                    return Err(Error::Unsupported("COPY ... TO".into()));
                }
                if *target != CopyTarget::Stdin {
                    return Err(Error::Unsupported(
                        "COPY FROM a server file or program (use FROM STDIN)".into(),
                    ));
                }
                let CopySource::Table {
                    table_name,
                    columns,
                } = source
                else {
                    return Err(Error::Unsupported("COPY of a query".into()));
                };
                let ds = self.writable_dataset(table_name)?;
                let columns: Vec<usize> = if columns.is_empty() {
                    (0..ds.fields().len()).collect()
                } else {
                    columns
                        .iter()
                        .map(|c| {
                            let n = ident_name(c);
                            ds.fields().iter().position(|f| f.name == n).ok_or_else(|| {
                                Error::UnknownColumn {
                                    table: ds.name().to_string(),
                                    column: n,
                                }
                            })
                        })
                        .collect::<Result<_>>()?
                };
                let format = copy_format(options, !legacy_options.is_empty())?;
                Ok(Output::CopyIn(CopyIn {
                    dataset: ds,
                    columns,
                    format,
                }))
            }
            Statement::Set(set) => {
                self.set(set)?;
                Ok(Output::Command {
                    tag: "SET",
                    rows: None,
                })
            }
            Statement::Reset(r) => {
                match &r.reset {
                    sqlparser::ast::Reset::ALL => {
                        self.as_of = None;
                        self.vars.clear();
                    }
                    sqlparser::ast::Reset::ConfigurationParameter(name) => {
                        let name = name.to_string().to_lowercase();
                        if name == AS_OF_VARIABLE {
                            self.as_of = None;
                        } else {
                            self.vars.remove(&name);
                        }
                    }
                }
                Ok(Output::Command {
                    tag: "RESET",
                    rows: None,
                })
            }
            Statement::StartTransaction { .. } => Ok(Output::TransactionStart("BEGIN")),
            Statement::Commit { .. } => Ok(Output::TransactionEnd("COMMIT")),
            Statement::Rollback {
                savepoint: Some(_), ..
            } => Ok(Output::Command {
                tag: "ROLLBACK",
                rows: None,
            }),
            Statement::Rollback { .. } => Ok(Output::TransactionEnd("ROLLBACK")),
            Statement::Savepoint { .. } => Ok(Output::Command {
                tag: "SAVEPOINT",
                rows: None,
            }),
            Statement::ReleaseSavepoint { .. } => Ok(Output::Command {
                tag: "RELEASE",
                rows: None,
            }),
            Statement::Discard { .. } => {
                self.as_of = None;
                self.vars.clear();
                Ok(Output::Command {
                    tag: "DISCARD ALL",
                    rows: None,
                })
            }
            Statement::Deallocate { .. } => Ok(Output::Command {
                tag: "DEALLOCATE",
                rows: None,
            }),
            Statement::Update(_) => Err(Error::Unsupported(
                "UPDATE (insert a new version of the row instead)".into(),
            )),
            other => {
                let kind = other.to_string();
                let word: String = kind
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ");
                Err(Error::Unsupported(format!("the statement {word}")))
            }
        }
    }

    fn set(&mut self, set: &sqlparser::ast::Set) -> Result<()> {
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

    fn create_table(&self, ct: &CreateTable) -> Result<bool> {
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

    /// Load a `COPY ... FROM STDIN` payload atomically; returns the row count.
    pub fn copy_in(&self, copy: &CopyIn, data: &[u8]) -> Result<usize> {
        let rows = copy::parse(&copy.format, data, copy.columns.len())?;
        let n = rows.len();
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(copy.columns.len());
        for c in 0..copy.columns.len() {
            let col: StringArray = rows.iter().map(|r| r[c].as_deref()).collect();
            arrays.push(Arc::new(col));
        }
        let batch = self.conform(&copy.dataset, &copy.columns, &arrays, n, 0)?;
        ingest::write_rows(self.engine.store().as_ref(), &copy.dataset, &[batch])
    }
}

fn copy_format(options: &[CopyOption], legacy: bool) -> Result<CopyFormat> {
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
