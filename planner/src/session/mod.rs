//! [`Engine`] (shared) and [`Session`] (one per client connection): turning
//! parsed statements into DataFusion plans, writes and catalog changes.
//!
//! Statement kinds:
//! - queries (`SELECT`, `VALUES`, `EXPLAIN`, ...) are planned by DataFusion
//!   over the Thyme catalog, at the statement's query time;
//! - `CREATE TABLE` / `DROP TABLE` change the catalog;
//! - `INSERT`, `COPY ... FROM STDIN` and `DELETE` write versions, each
//!   statement in one atomic batch (a failing statement writes nothing);
//! - `SET` / `SHOW` keep session state;
//! - `BEGIN` / `COMMIT` / `ROLLBACK` / savepoints group writes into one
//!   atomic batch ([`txn`] has the semantics). Outside a block every
//!   statement commits on its own.

mod access;
mod ddl;
mod dml;
use dml::copy_format;
mod query;
mod txn;
mod vars;

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::ParamValues;
use datafusion::execution::context::{SessionContext, SessionState};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionConfig;
use datafusion::sql::parser::Statement as DfStatement;
use sqlparser::ast::{
    CopySource, CopyTarget, Expr as SqlExpr, Ident, ObjectName, ObjectType, SetExpr, Statement,
    TableFactor, Value,
};
use thyme_storage::TemporalStore;

use crate::lookup::PointLookup;
use crate::schema::{self, AsOfRelationPlanner, StatementParamsOption, ThymeCatalog};
use crate::sql::{ParsedStatement, SqlParser};
use thyme_table::catalog::{Catalog, Dataset};
use thyme_table::copy::CopyFormat;
use thyme_table::error::{Error, Result};
use thyme_table::types::UTC;

/// Name of the database (DataFusion catalog).
pub const DATABASE: &str = "thyme";
/// The session variable holding the default query time.
pub const AS_OF_VARIABLE: &str = "thyme.as_of";
/// How ASOF joins are run: `auto` (by size), `seek`, `hash`, `merge`.
pub const ASOF_STRATEGY_VARIABLE: &str = "thyme.asof_strategy";

/// The server's limits on statements (see `docs/limits.md`).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Deepest nesting of a statement's expressions, subqueries and set
    /// operations (an estimate from its tokens); deeper is SQLSTATE 54001.
    pub max_expression_depth: usize,
    /// Default `statement_timeout`, milliseconds (0: none).
    pub statement_timeout_ms: u64,
    /// Memory one session's statement may reserve, bytes.
    pub work_mem: usize,
    /// Memory all statements together may reserve, bytes.
    pub max_memory: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_expression_depth: crate::sql::DEFAULT_MAX_DEPTH,
            statement_timeout_ms: 0,
            work_mem: DEFAULT_WORK_MEM,
            max_memory: DEFAULT_MAX_MEMORY,
        }
    }
}

/// Default `work_mem`: 1 GiB.
pub const DEFAULT_WORK_MEM: usize = 1 << 30;
/// Default `max_memory`: 4 GiB.
pub const DEFAULT_MAX_MEMORY: usize = 4 << 30;

/// The session variable limiting each statement's run time.
pub const STATEMENT_TIMEOUT_VARIABLE: &str = "statement_timeout";

/// State shared by all sessions: the catalog, the store, a configured
/// DataFusion context to clone sessions from.
pub struct Engine {
    limits: Limits,
    /// The server-wide memory pool sessions draw on ([`crate::memory`]).
    memory: Arc<dyn datafusion::execution::memory_pool::MemoryPool>,
    catalog: Arc<Catalog>,
    roles: Arc<thyme_table::roles::Roles>,
    features: Arc<thyme_features::Features>,
    registry: Arc<thyme_table::registry::Registry>,
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
        Self::with_limits(store, Limits::default(), setup)
    }

    /// [`Engine::new`] with the server's limits.
    pub fn with_limits(
        store: Arc<dyn TemporalStore>,
        limits: Limits,
        setup: impl FnOnce(&SessionContext) -> Result<()>,
    ) -> Result<Arc<Self>> {
        let roles = Arc::new(thyme_table::roles::Roles::load(store.clone())?);
        let catalog = Arc::new(Catalog::load(store)?);
        let registry = Arc::new(thyme_table::registry::Registry::load(catalog.clone())?);
        let features = Arc::new(thyme_features::Features::new(registry.clone()));
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
            .with_analyzer_rule(Arc::new(crate::checked::CheckedArithmetic::default()))
            .with_query_planner(Arc::new(crate::asof::ThymeQueryPlanner))
            .build();
        let base = SessionContext::new_with_state(state);
        for udf in crate::sql::asof::marker_udfs() {
            base.register_udf(udf);
        }
        base.register_catalog(
            DATABASE,
            Arc::new(ThymeCatalog::new(catalog.clone(), features.clone())),
        );
        crate::bounded::install(&base);
        crate::coalesce::install(&base);
        setup(&base)?;
        Ok(Arc::new(Engine {
            memory: crate::memory::server_pool(limits.max_memory),
            catalog,
            roles,
            features,
            registry,
            parser: SqlParser::with_max_depth(limits.max_expression_depth),
            limits,
            base,
        }))
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// Roles, privileges and API tokens.
    pub fn roles(&self) -> &Arc<thyme_table::roles::Roles> {
        &self.roles
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Featureset serving: the extractor graph, planning, evaluation.
    pub fn features(&self) -> &Arc<thyme_features::Features> {
        &self.features
    }

    /// Committed definitions (datasets, featuresets, webhook routes).
    pub fn registry(&self) -> &Arc<thyme_table::registry::Registry> {
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
        let base = self.base.state();
        let runtime = crate::memory::SessionPool::new(self.limits.work_mem, self.memory.clone())
            .runtime(base.runtime_env());
        let state = SessionStateBuilder::new_from_existing(base)
            .with_runtime_env(runtime)
            .build();
        Session {
            engine: self.clone(),
            state,
            as_of: None,
            vars: BTreeMap::new(),
            txn: None,
            notices: Vec::new(),
            principal: thyme_table::roles::Principal::trusted("thyme"),
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
    /// The privileges it needs.
    access: access::Access,
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
    /// The open transaction block, if any.
    txn: Option<txn::Txn>,
    /// Warnings for the client ([`Session::take_notices`]).
    notices: Vec<String>,
    /// Who the session is ([`Session::login`]); trusted until then.
    principal: thyme_table::roles::Principal,
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

/// Plan a statement with DataFusion, after checking that every table it
/// reads exists (an unknown one is [`Error::UnknownTable`], named as
/// written; DataFusion would report it as a plan error like any other).
/// CTE names are not table references; table functions
/// (`generate_series(...)`) are left to DataFusion.
pub(crate) async fn plan_statement(state: &SessionState, stmt: Statement) -> Result<LogicalPlan> {
    let stmt = DfStatement::Statement(Box::new(stmt));
    for r in state.resolve_table_references(&stmt)? {
        let exists = match state.schema_for_ref(r.clone()) {
            Ok(schema) => schema.table_exist(r.table()),
            Err(_) => false,
        };
        if !exists && !state.table_functions().contains_key(r.table()) {
            return Err(Error::UnknownTable(r.to_string()));
        }
    }
    state
        .statement_to_plan(stmt)
        .await
        .map_err(Error::unwrap_datafusion)
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
        if ds.name() == thyme_table::catalog::LATE_TABLE {
            return Err(derived(
                "the pipelines (it records their late events)".into(),
            ));
        }
        if ds.name() == thyme_table::catalog::REJECTED_TABLE {
            return Err(derived(
                "the sources (it records the rows they skipped)".into(),
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
    pub async fn prepare(&mut self, parsed: ParsedStatement) -> Result<Prepared> {
        self.check_aborted(&parsed.statement)?;
        let r = self.prepare_inner(parsed).await;
        if r.is_err() {
            self.fail_transaction();
        }
        r
    }

    async fn prepare_inner(&self, parsed: ParsedStatement) -> Result<Prepared> {
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
                let plan = plan_statement(&self.state, parsed.statement.clone()).await?;
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
                let plan = plan_statement(&self.state, query).await?;
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
        let access = if self.principal.trusted {
            access::Access::default()
        } else {
            self.access_of(&parsed.statement)?
        };
        Ok(Prepared {
            parsed,
            param_types,
            param_columns,
            schema,
            kind,
            access,
        })
    }

    /// Execute a prepared statement with bound parameters.
    pub async fn execute(&mut self, p: &Prepared, params: Option<ParamValues>) -> Result<Output> {
        self.check_aborted(&p.parsed.statement)?;
        let r = self.execute_inner(p, params).await;
        if r.is_err() {
            self.fail_transaction();
        }
        r
    }

    async fn execute_inner(&mut self, p: &Prepared, params: Option<ParamValues>) -> Result<Output> {
        self.authorize(p)?;
        if self.in_transaction() {
            match &p.parsed.statement {
                Statement::Insert(insert) => {
                    if let Some(source) = &insert.source {
                        self.check_reads(&Statement::Query(source.clone()))?;
                    }
                }
                Statement::CreateTable(_) => self.check_definition("CREATE TABLE")?,
                Statement::Drop { .. } => self.check_definition("DROP")?,
                Statement::CreateRole(_) => self.check_definition("CREATE ROLE")?,
                Statement::AlterRole { .. } => self.check_definition("ALTER ROLE")?,
                Statement::Grant(_) => self.check_definition("GRANT")?,
                Statement::Revoke(_) => self.check_definition("REVOKE")?,
                Statement::Copy { .. } | Statement::Set(_) | Statement::ShowVariable { .. } => {}
                // Queries, and DELETE (which reads its table to find rows).
                stmt => self.check_reads(stmt)?,
            }
        }
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
                object_type: ObjectType::Role | ObjectType::User,
                if_exists,
                names,
                ..
            } => self.drop_roles(names, *if_exists),
            Statement::CreateRole(cr) => self.create_role(cr),
            Statement::AlterRole { name, operation } => self.alter_role(name, operation),
            Statement::Grant(g) => self.grant(&g.privileges, &g.objects, &g.grantees, false),
            Statement::Revoke(r) => self.grant(&r.privileges, &r.objects, &r.grantees, true),
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
            Statement::StartTransaction { modes, .. } => self.begin(modes),
            Statement::Commit { .. } => self.commit(),
            Statement::Rollback {
                savepoint: Some(name),
                ..
            } => self.rollback_to(name),
            Statement::Rollback { .. } => Ok(self.rollback()),
            Statement::Savepoint { name } => self.savepoint(name),
            Statement::ReleaseSavepoint { name } => self.release(name),
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
}
