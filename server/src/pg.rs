//! The Postgres wire-protocol front end (pgwire): simple and extended query
//! protocols and `COPY ... FROM STDIN`, over a per-connection
//! [`thyme_planner::Session`].
//!
//! Arrow results are encoded with `arrow-pg`; `pg_catalog` comes from
//! `datafusion-pg-catalog` (installed on the engine by [`install_catalog`]).

use std::fmt::Debug;
use std::sync::Arc;
use thyme_error::ErrorKind;

use arrow::datatypes::{DataType, SchemaRef};
use arrow_pg::datatypes::df::deserialize_parameters;
use arrow_pg::datatypes::{arrow_schema_to_pg_fields, into_pg_type};
use async_trait::async_trait;
use datafusion::logical_expr::{ColumnarValue, Volatility};
use datafusion::prelude::SessionContext;
use futures::{Sink, SinkExt, StreamExt};
use pgwire::api::auth::StartupHandler;
use pgwire::api::copy::CopyHandler;
use pgwire::api::portal::PortalExecutionState;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{CopyResponse, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::{Entry, PortalStore};
use pgwire::api::PgWireConnectionState;
use pgwire::api::{ClientInfo, ClientPortalStore, PgWireServerHandlers, Type, DEFAULT_NAME};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::copy::{CopyData, CopyDone};
use pgwire::messages::data::{NoData, ParameterDescription, RowDescription};
use pgwire::messages::extendedquery::{
    Bind, BindComplete, Describe, Execute, TARGET_TYPE_BYTE_PORTAL, TARGET_TYPE_BYTE_STATEMENT,
};
use pgwire::messages::response::TransactionStatus;
use pgwire::messages::PgWireBackendMessage;
use thyme_planner::{CopyIn, Engine, Output, Prepared, Session};
use tokio::net::TcpListener;
use tokio::sync::Mutex;

use crate::errors::{classify, ClientError};
use crate::exec::{QueryPool, Stop};
use crate::pg_conn::{ConnLimits, Probe, Slots};
use crate::pg_rows::encode_batch;
use datafusion::common::ParamValues;
use pgwire::messages::data::DataRow;

/// Largest `COPY ... FROM STDIN` payload accepted in one statement.
const MAX_COPY_BYTES: usize = 1 << 30;

/// The string `version()` returns.
pub fn version_string() -> String {
    format!(
        "PostgreSQL 15.0 (Thyme {}) on {}-unknown-linux-gnu, compiled by rustc, 64-bit",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH
    )
}

/// Install the Postgres compatibility layer on the engine's base context:
/// `pg_catalog`, its functions, and `version()`.
pub fn install_catalog(ctx: &SessionContext) -> thyme_planner::Result<()> {
    datafusion_pg_catalog::pg_catalog::setup_pg_catalog(
        ctx,
        thyme_planner::session::DATABASE,
        datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider,
    )
    .map_err(|e| thyme_planner::Error::Internal(format!("pg_catalog setup: {e}")))?;
    let version = version_string();
    let udf = thyme_planner::text_constant_udf("version", version);
    ctx.register_udf(udf);
    ctx.register_udf(datafusion::logical_expr::create_udf(
        "to_regtype",
        vec![DataType::Utf8],
        DataType::Int32,
        Volatility::Stable,
        Arc::new(to_regtype),
    ));
    Ok(())
}

/// The OID of a built-in type by name (`NULL` for types Thyme does not have,
/// such as extension types; drivers probe for those with `to_regtype`).
fn builtin_type_oid(name: &str) -> Option<i32> {
    let n = name.trim().trim_matches('"').to_ascii_lowercase();
    let n = n.strip_prefix("pg_catalog.").unwrap_or(&n);
    Some(match n {
        "bool" | "boolean" => 16,
        "bytea" => 17,
        "char" => 18,
        "name" => 19,
        "int8" | "bigint" => 20,
        "int2" | "smallint" => 21,
        "int4" | "integer" | "int" => 23,
        "text" => 25,
        "oid" => 26,
        "json" => 114,
        "float4" | "real" => 700,
        "float8" | "double precision" => 701,
        "varchar" | "character varying" => 1043,
        "date" => 1082,
        "time" => 1083,
        "timestamp" | "timestamp without time zone" => 1114,
        "timestamptz" | "timestamp with time zone" => 1184,
        "interval" => 1186,
        "numeric" | "decimal" => 1700,
        "uuid" => 2950,
        "jsonb" => 3802,
        _ => return None,
    })
}

fn to_regtype(args: &[ColumnarValue]) -> datafusion::error::Result<ColumnarValue> {
    use arrow::array::{Array, Int32Array};
    use datafusion::common::ScalarValue;
    let Some(arg) = args.first() else {
        return Ok(ColumnarValue::Scalar(ScalarValue::Int32(None)));
    };
    match arg {
        ColumnarValue::Scalar(v) => {
            let name = match v {
                ScalarValue::Utf8(s) | ScalarValue::Utf8View(s) | ScalarValue::LargeUtf8(s) => {
                    s.clone()
                }
                _ => None,
            };
            Ok(ColumnarValue::Scalar(ScalarValue::Int32(
                name.as_deref().and_then(builtin_type_oid),
            )))
        }
        ColumnarValue::Array(a) => {
            let a = arrow::compute::cast(a, &DataType::Utf8)?;
            let s = a
                .as_any()
                .downcast_ref::<arrow::array::StringArray>()
                .expect("cast to Utf8");
            let out: Int32Array = (0..s.len())
                .map(|i| {
                    (!s.is_null(i))
                        .then(|| builtin_type_oid(s.value(i)))
                        .flatten()
                })
                .collect();
            Ok(ColumnarValue::Array(Arc::new(out)))
        }
    }
}

/// Per-connection state kept in pgwire's session extensions.
struct Conn {
    session: Mutex<Session>,
    copy: Mutex<Option<(CopyIn, Vec<u8>)>>,
    /// Counts the connection's cancel requests; a running statement stops
    /// when it moves (see [`Stop`]).
    cancel: tokio::sync::watch::Sender<u64>,
    /// Where the connection is registered for cancel requests.
    registered: Option<(Arc<Cancels>, CancelKey)>,
    /// A statement failed outside the session's sight (a parse error, an
    /// error while streaming rows, a cancel): the session's open
    /// transaction block, if any, is aborted before its next statement.
    failed: std::sync::atomic::AtomicBool,
}

impl Conn {
    fn new(
        engine: &Arc<Engine>,
        registered: Option<(Arc<Cancels>, CancelKey)>,
        principal: thyme_table::roles::Principal,
    ) -> Conn {
        let mut session = engine.session();
        session.login(principal);
        Conn {
            session: Mutex::new(session),
            copy: Mutex::new(None),
            cancel: tokio::sync::watch::Sender::new(0),
            registered,
            failed: Default::default(),
        }
    }

    /// The session, with any failure noted since its last statement applied.
    async fn lock_session(&self) -> tokio::sync::MutexGuard<'_, Session> {
        let mut session = self.session.lock().await;
        if self.failed.swap(false, std::sync::atomic::Ordering::AcqRel) {
            session.fail_transaction();
        }
        session
    }
}

/// Note that a message of this connection failed (see [`Conn::failed`]).
pub fn note_failure<C: ClientInfo + ?Sized>(client: &C) {
    if let Some(c) = client.session_extensions().get::<Conn>() {
        c.failed.store(true, std::sync::atomic::Ordering::Release);
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some((cancels, key)) = &self.registered {
            let mut map = cancels.0.lock().unwrap_or_else(|e| e.into_inner());
            if map.get(key).is_some_and(|w| w.strong_count() == 0) {
                map.remove(key);
            }
        }
    }
}

type CancelKey = (i32, bytes::Bytes);

/// The connections that can be canceled, by process id and secret key.
#[derive(Default)]
pub struct Cancels(std::sync::Mutex<std::collections::HashMap<CancelKey, std::sync::Weak<Conn>>>);

/// Answers a CancelRequest: the named connection's running statement stops
/// (57014); a request naming no connection, or a connection with nothing
/// running, does nothing (as in Postgres).
pub struct Canceler(Arc<Cancels>);

#[async_trait]
impl pgwire::api::cancel::CancelHandler for Canceler {
    async fn on_cancel_request(&self, request: pgwire::messages::cancel::CancelRequest) {
        let key = (request.pid, request.secret_key.to_bytes());
        let conn = {
            let map = self.0 .0.lock().unwrap_or_else(|e| e.into_inner());
            map.get(&key).and_then(|w| w.upgrade())
        };
        if let Some(c) = conn {
            c.cancel.send_modify(|n| *n += 1);
        }
    }
}

/// The stop conditions of a statement starting now on `client`'s
/// connection (see [`crate::exec::Stop`]).
async fn stop_for<C: ClientInfo + ?Sized>(client: &C, c: &Conn) -> Stop {
    let timeout = c.session.lock().await.statement_timeout();
    Stop::new(
        c.cancel.subscribe(),
        client.session_extensions().get::<Probe>(),
        timeout,
    )
}

/// What a statement's first answer is: result rows (described, then
/// streamed from the query pool) or anything else.
enum Head {
    Rows(Arc<Vec<FieldInfo>>, RowStream),
    Done(Output),
}

type RowStream = futures::stream::BoxStream<'static, PgWireResult<DataRow>>;

/// What the pool side sends first.
enum First {
    Rows(Arc<Vec<FieldInfo>>),
    Done(Output),
}

/// Run a statement on the query pool: `work` plans and executes it; result
/// batches are encoded there too and reach this side through a small
/// channel (backpressure: the pool runs at most two batches ahead of the
/// socket). Dropping the row stream stops the statement.
async fn run_statement<W>(
    pool: &QueryPool,
    stop: Stop,
    format: Format,
    work: W,
) -> PgWireResult<Head>
where
    W: std::future::Future<Output = thyme_planner::Result<Output>> + Send + 'static,
{
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<thyme_planner::Result<First>>();
    let (row_tx, row_rx) = tokio::sync::mpsc::channel::<thyme_planner::Result<Vec<DataRow>>>(2);
    let task = pool.spawn(async move {
        let mut first_tx = Some(first_tx);
        let result = stop
            .guard(async {
                let out = work.await?;
                let Output::Rows(mut stream) = out else {
                    if let Some(f) = first_tx.take() {
                        let _ = f.send(Ok(First::Done(out)));
                    }
                    return Ok(());
                };
                let fields =
                    Arc::new(result_fields(&stream.schema(), &format).map_err(|e| {
                        thyme_planner::Error::Internal(format!("result columns: {e}"))
                    })?);
                if let Some(f) = first_tx.take() {
                    if f.send(Ok(First::Rows(fields.clone()))).is_err() {
                        return Ok(());
                    }
                }
                while let Some(batch) = stream.next().await {
                    let batch = batch.map_err(thyme_planner::Error::unwrap_datafusion)?;
                    let rows = encode_batch(fields.clone(), batch)
                        .collect::<PgWireResult<Vec<DataRow>>>()
                        .map_err(|e| {
                            thyme_planner::Error::Internal(format!("encoding rows: {e}"))
                        })?;
                    if row_tx.send(Ok(rows)).await.is_err() {
                        return Ok(()); // the client's side is gone
                    }
                }
                Ok(())
            })
            .await;
        if let Err(e) = result {
            match first_tx.take() {
                Some(f) => {
                    let _ = f.send(Err(e));
                }
                None => {
                    let _ = row_tx.send(Err(e)).await;
                }
            }
        }
        Ok(())
    });
    let first = match first_rx.await {
        Ok(r) => r.map_err(pg_err)?,
        // The task ended without a word: it panicked.
        Err(_) => {
            return Err(pg_err(task.join().await.err().unwrap_or_else(|| {
                thyme_planner::Error::Internal("a statement ended without a result".into())
            })))
        }
    };
    Ok(match first {
        First::Done(out) => Head::Done(out),
        First::Rows(fields) => {
            let state = (row_rx, task, Vec::new().into_iter());
            let rows = futures::stream::unfold(Some(state), |state| async move {
                let (mut rx, task, mut buf) = state?;
                loop {
                    if let Some(row) = buf.next() {
                        return Some((Ok(row), Some((rx, task, buf))));
                    }
                    match rx.recv().await {
                        Some(Ok(rows)) => buf = rows.into_iter(),
                        Some(Err(e)) => return Some((Err(pg_err(e)), None)),
                        None => {
                            return match task.join().await {
                                Err(e) => Some((Err(pg_err(e)), None)),
                                Ok(()) => None,
                            }
                        }
                    }
                }
            });
            Head::Rows(fields, Box::pin(rows))
        }
    })
}

fn conn<C: ClientInfo + ?Sized>(client: &C, engine: &Arc<Engine>) -> Arc<Conn> {
    client.session_extensions().get_or_insert_with(|| {
        // Every session is opened at startup; should one not be, it
        // gets no privileges while authentication is on.
        let who = if engine.roles().auth_required() {
            thyme_table::roles::Principal::role("")
        } else {
            thyme_table::roles::Principal::trusted("thyme")
        };
        Conn::new(engine, None, who)
    })
}

/// Send the session's warnings from the last statement as notices.
async fn send_notices<C>(client: &mut C, c: &Conn) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let notices = c.session.lock().await.take_notices();
    for n in notices {
        client
            .feed(PgWireBackendMessage::NoticeResponse(
                crate::errors::warning(n),
            ))
            .await?;
    }
    Ok(())
}

fn pg_err(e: thyme_planner::Error) -> PgWireError {
    classify(e).into_pgwire()
}

/// All pgwire handlers; one instance serves every connection.
pub struct PgHandlers {
    engine: Arc<Engine>,
    parser: Arc<ThymeQueryParser>,
    pool: Arc<QueryPool>,
    cancels: Arc<Cancels>,
    /// Process ids and secret keys for every connection (one counter).
    keys: Arc<dyn pgwire::api::PidSecretKeyGenerator>,
    auth: crate::pg_auth::AuthConfig,
    /// TLS for connections that ask for it (`SSLRequest`).
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
}

impl PgHandlers {
    pub fn new(
        engine: Arc<Engine>,
        pool: Arc<QueryPool>,
        auth: crate::pg_auth::AuthConfig,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Arc<Self> {
        Arc::new(PgHandlers {
            keys: Arc::new(pgwire::api::RandomPidSecretKeyGenerator::default()),
            auth,
            tls,
            parser: Arc::new(ThymeQueryParser {
                engine: engine.clone(),
                pool: pool.clone(),
            }),
            engine,
            pool,
            cancels: Arc::new(Cancels::default()),
        })
    }

    fn query_handler(&self) -> Arc<QueryHandler> {
        Arc::new(QueryHandler {
            engine: self.engine.clone(),
            parser: self.parser.clone(),
            pool: self.pool.clone(),
        })
    }
}

/// Open the session of a connection that authenticated as `principal`,
/// and register it for cancel requests by the process id and secret key
/// the client is about to be given.
pub(crate) fn open_session<C: ClientInfo + ?Sized>(
    client: &C,
    engine: &Arc<Engine>,
    cancels: &Arc<Cancels>,
    principal: thyme_table::roles::Principal,
) {
    let (pid, secret) = client.pid_and_secret_key();
    let key = (pid, secret.to_bytes());
    let registered = Some((cancels.clone(), key.clone()));
    let conn = client
        .session_extensions()
        .get_or_insert_with(|| Conn::new(engine, registered, principal));
    cancels
        .0
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, Arc::downgrade(&conn));
}

impl PgWireServerHandlers for PgHandlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.query_handler()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.query_handler()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::new(crate::pg_auth::Startup::new(
            self.engine.clone(),
            self.cancels.clone(),
            self.keys.clone(),
            self.auth,
        ))
    }

    fn copy_handler(&self) -> Arc<impl CopyHandler> {
        self.query_handler()
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        Arc::new(Canceler(self.cancels.clone()))
    }
}

pub struct QueryHandler {
    engine: Arc<Engine>,
    parser: Arc<ThymeQueryParser>,
    pool: Arc<QueryPool>,
}

pub struct ThymeQueryParser {
    engine: Arc<Engine>,
    pool: Arc<QueryPool>,
}

fn result_fields(schema: &SchemaRef, format: &Format) -> PgWireResult<Vec<FieldInfo>> {
    arrow_schema_to_pg_fields(schema, format, None)
}

/// A prepared statement as the connection keeps it: the planner's
/// statement, plus its result columns in text format worked out once at
/// `Parse` (each `Describe` and execution in text format reuses them).
pub struct PgStatement {
    prepared: Prepared,
    text_fields: Option<Arc<Vec<FieldInfo>>>,
}

impl PgStatement {
    fn new(prepared: Prepared) -> PgWireResult<Self> {
        let text_fields = match &prepared.schema {
            Some(s) => Some(Arc::new(result_fields(s, &Format::UnifiedText)?)),
            None => None,
        };
        Ok(PgStatement {
            prepared,
            text_fields,
        })
    }

    /// The result columns in `format`; `None` for commands.
    fn fields(&self, format: &Format) -> PgWireResult<Option<Arc<Vec<FieldInfo>>>> {
        match &self.prepared.schema {
            Some(_) if matches!(format, Format::UnifiedText) => Ok(self.text_fields.clone()),
            Some(s) => Ok(Some(Arc::new(result_fields(s, format)?))),
            None => Ok(None),
        }
    }
}

#[async_trait]
impl QueryParser for ThymeQueryParser {
    type Statement = Arc<PgStatement>;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let c = conn(client, &self.engine);
        let stop = stop_for(client, &c).await;
        let engine = self.engine.clone();
        let sql = sql.to_owned();
        let prepared = self
            .pool
            .run(stop, async move {
                let mut statements = engine.parse(&sql)?;
                if statements.is_empty() {
                    return Ok(None);
                }
                if statements.len() > 1 {
                    return Err(thyme_planner::Error::Syntax(
                        "cannot insert multiple commands into a prepared statement".into(),
                    ));
                }
                let parsed = statements.remove(0);
                let mut session = c.lock_session().await;
                session.prepare(parsed).await.map(Some)
            })
            .await
            .map_err(pg_err)?;
        match prepared {
            Some(p) => Ok(Some(Arc::new(PgStatement::new(p)?))),
            None => Ok(None),
        }
    }

    fn get_parameter_types(&self, stmt: &Self::Statement) -> PgWireResult<Vec<Type>> {
        stmt.prepared
            .param_types
            .iter()
            .map(|t| match t {
                Some(t) => into_pg_type(t),
                None => Ok(Type::UNKNOWN),
            })
            .collect()
    }

    fn get_result_schema(
        &self,
        stmt: &Self::Statement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        let fields = stmt.fields(column_format.unwrap_or(&Format::UnifiedText))?;
        Ok(fields.map(|f| f.as_ref().clone()).unwrap_or_default())
    }
}

/// Turn a statement's [`Head`] into a pgwire response.
async fn respond(conn: &Conn, head: Head) -> PgWireResult<Response> {
    let out = match head {
        Head::Rows(fields, rows) => return Ok(Response::Query(QueryResponse::new(fields, rows))),
        Head::Done(out) => out,
    };
    Ok(match out {
        Output::Rows(_) => unreachable!("rows are streamed from the query pool"),
        Output::Command { tag, rows } => {
            let mut t = Tag::new(tag);
            if tag == "INSERT" {
                t = t.with_oid(0);
            }
            if let Some(n) = rows {
                t = t.with_rows(n);
            }
            Response::Execution(t)
        }
        Output::CopyIn(copy) => {
            let columns = copy.columns.len();
            *conn.copy.lock().await = Some((copy, Vec::new()));
            Response::CopyIn(CopyResponse::new(0, columns, futures::stream::empty()))
        }
        Output::TransactionStart(tag) => Response::TransactionStart(Tag::new(tag)),
        Output::TransactionEnd(tag) => Response::TransactionEnd(Tag::new(tag)),
    })
}

#[async_trait]
impl SimpleQueryHandler for QueryHandler {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let c = conn(client, &self.engine);
        let engine = self.engine.clone();
        let text = query.to_owned();
        let statements = self
            .pool
            .run(
                stop_for(client, &c).await,
                async move { engine.parse(&text) },
            )
            .await
            .map_err(pg_err)?;
        if statements.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let mut responses = Vec::with_capacity(statements.len());
        for parsed in statements {
            let stop = stop_for(client, &c).await;
            let session = c.clone();
            let head = run_statement(&self.pool, stop, Format::UnifiedText, async move {
                let mut session = session.lock_session().await;
                let prepared = session.prepare(parsed).await?;
                session.execute(&prepared, None).await
            })
            .await;
            send_notices(client, &c).await?;
            match head {
                Ok(head) => {
                    let copy = matches!(head, Head::Done(Output::CopyIn(_)));
                    responses.push(respond(&c, head).await?);
                    if copy {
                        break;
                    }
                }
                Err(PgWireError::UserError(info)) => {
                    c.failed.store(true, std::sync::atomic::Ordering::Release);
                    responses.push(Response::Error(info));
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(responses)
    }
}

#[async_trait]
impl ExtendedQueryHandler for QueryHandler {
    type Statement = Arc<PgStatement>;
    type QueryParser = ThymeQueryParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let stmt = portal.statement.statement.clone();
        let params = decode_params(portal, &stmt.prepared)?;
        let c = conn(client, &self.engine);
        let stop = stop_for(client, &c).await;
        let session = c.clone();
        let head = run_statement(
            &self.pool,
            stop,
            portal.result_column_format.clone(),
            async move {
                let mut session = session.lock_session().await;
                session.execute(&stmt.prepared, params).await
            },
        )
        .await;
        send_notices(client, &c).await?;
        respond(&c, head?).await
    }

    /// Point lookups (one seek, at most one row) run here directly: the
    /// row is encoded with the statement's cached columns and queued with
    /// `CommandComplete`, to leave with `ReadyForQuery` at `Sync` (one socket
    /// write per round trip). Every other statement (and row limits,
    /// re-executed portals) takes pgwire's general path.
    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        let portal = match client.portal_store().get_portal(name) {
            Some(Entry::Value(p))
                if message.max_rows == 0
                    && p.statement.statement.prepared.is_point_lookup()
                    && matches!(client.state(), PgWireConnectionState::ReadyForQuery)
                    // Inside a block the session checks each statement.
                    && client.transaction_status() == TransactionStatus::Idle =>
            {
                p
            }
            _ => return self._on_execute(client, message).await,
        };
        {
            // A portal runs once; executing it again takes the general path
            // (which answers with no rows, as Postgres does).
            let state = portal.state();
            let mut state = state.lock().await;
            if !matches!(*state, PortalExecutionState::Initial) {
                drop(state);
                return self._on_execute(client, message).await;
            }
            *state = PortalExecutionState::Finished;
        }
        let stmt = &portal.statement.statement;
        let params = decode_params(&portal, &stmt.prepared)?;
        let batch = {
            let c = conn(client, &self.engine);
            let session = c.session.lock().await;
            session
                .execute_lookup(&stmt.prepared, params.as_ref())
                .map_err(pg_err)?
                .ok_or_else(|| {
                    ClientError::new(ErrorKind::Internal, "a point lookup did not return rows")
                        .into_pgwire()
                })?
        };
        let fields = stmt
            .fields(&portal.result_column_format)?
            .unwrap_or_default();
        let mut rows = 0;
        for row in encode_batch(fields, batch) {
            client.feed(PgWireBackendMessage::DataRow(row?)).await?;
            rows += 1;
        }
        client
            .feed(PgWireBackendMessage::CommandComplete(
                Tag::new("SELECT").with_rows(rows).into(),
            ))
            .await?;
        Ok(())
    }

    /// Describe a statement or portal and queue the answer without
    /// flushing, as Postgres does: it leaves with the rest of the response
    /// at the client's `Flush` or `Sync`. (pgwire's default flushes each
    /// describe message on its own, an extra socket write and client wake-up
    /// per prepared round trip.)
    async fn on_describe<C>(&self, client: &mut C, message: Describe) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        // A statement that returns rows gets a `RowDescription` (even with no
        // columns); a command gets `NoData`.
        let (parameters, fields) = match message.target_type {
            TARGET_TYPE_BYTE_STATEMENT => match client.portal_store().get_statement(name) {
                Some(Entry::Value(stmt)) => {
                    let types = self.parser.get_parameter_types(&stmt.statement)?;
                    (Some(types), stmt.statement.fields(&Format::UnifiedText)?)
                }
                Some(Entry::Empty) => (Some(vec![]), None),
                None => return Err(PgWireError::StatementNotFound(name.to_owned())),
            },
            TARGET_TYPE_BYTE_PORTAL => match client.portal_store().get_portal(name) {
                Some(Entry::Value(portal)) => (
                    None,
                    portal
                        .statement
                        .statement
                        .fields(&portal.result_column_format)?,
                ),
                Some(Entry::Empty) => (None, None),
                None => return Err(PgWireError::PortalNotFound(name.to_owned())),
            },
            other => return Err(PgWireError::InvalidTargetType(other)),
        };
        if let Some(types) = parameters {
            client
                .feed(PgWireBackendMessage::ParameterDescription(
                    ParameterDescription::new(types.iter().map(|t| t.oid()).collect()),
                ))
                .await?;
        }
        let message = match fields {
            Some(fields) => PgWireBackendMessage::RowDescription(RowDescription::new(
                fields.iter().map(Into::into).collect(),
            )),
            None => PgWireBackendMessage::NoData(NoData::new()),
        };
        client.feed(message).await?;
        Ok(())
    }

    /// Bind a portal and queue `BindComplete` without flushing: it leaves
    /// with the rest of the response (at the next flush, `Execute`'s end or
    /// `Sync`), saving one socket write per prepared-statement round trip.
    async fn on_bind<C>(&self, client: &mut C, message: Bind) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let statement = message.statement_name.as_deref().unwrap_or(DEFAULT_NAME);
        match client.portal_store().get_statement(statement) {
            Some(Entry::Value(stored)) => {
                let portal = Portal::try_new(&message, stored)?;
                client.portal_store().put_portal(Arc::new(portal));
            }
            Some(Entry::Empty) if message.parameters.is_empty() => {
                let name = message.portal_name.as_deref().unwrap_or(DEFAULT_NAME);
                client.portal_store().put_empty_portal(name);
            }
            Some(Entry::Empty) => {
                return Err(ClientError::new(
                    ErrorKind::ProtocolViolation,
                    format!(
                        "bind message supplies {} parameters, but the empty statement {statement:?} takes none",
                        message.parameters.len()
                    ),
                )
                .into_pgwire())
            }
            None => return Err(PgWireError::StatementNotFound(statement.to_owned())),
        }
        client
            .feed(PgWireBackendMessage::BindComplete(BindComplete::new()))
            .await?;
        Ok(())
    }
}

/// Decode bound parameters with the statement's types (`None` when there
/// are none). When one does not parse, find which and name it (and its
/// column, for `INSERT ... VALUES`).
fn decode_params(
    portal: &Portal<Arc<PgStatement>>,
    prepared: &Prepared,
) -> PgWireResult<Option<ParamValues>> {
    if portal.parameter_len() == 0 {
        return Ok(None);
    }
    let types: Vec<Option<&DataType>> = prepared.param_types.iter().map(|t| t.as_ref()).collect();
    match deserialize_parameters(portal, &types) {
        Ok(p) => Ok(Some(p)),
        Err(e) => {
            for i in 0..portal.parameter_len() {
                let only: Vec<Option<&DataType>> = (0..types.len())
                    .map(|j| if j == i { types[j] } else { None })
                    .collect();
                if deserialize_parameters(portal, &only).is_ok() {
                    continue;
                }
                let datetime = matches!(
                    types.get(i).copied().flatten(),
                    Some(DataType::Timestamp(..) | DataType::Date32 | DataType::Date64)
                );
                let what = match prepared.param_columns.get(i).cloned().flatten() {
                    Some(col) => format!("column \"{col}\" (parameter ${})", i + 1),
                    None => format!("parameter ${}", i + 1),
                };
                let detail = match &e {
                    PgWireError::UserError(info) => info.message.clone(),
                    other => other.to_string(),
                };
                return Err(pg_err(thyme_table::Error::InvalidParameterValue {
                    what,
                    datetime,
                    detail,
                }));
            }
            Err(e)
        }
    }
}

#[async_trait]
impl CopyHandler for QueryHandler {
    async fn on_copy_data<C>(&self, client: &mut C, copy_data: CopyData) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let c = conn(client, &self.engine);
        let mut pending = c.copy.lock().await;
        let Some((_, buf)) = pending.as_mut() else {
            return Err(crate::errors::ClientError::new(
                ErrorKind::ProtocolViolation,
                "COPY data without COPY",
            )
            .into_pgwire());
        };
        if buf.len() + copy_data.data.len() > MAX_COPY_BYTES {
            *pending = None;
            return Err(crate::errors::ClientError::new(
                ErrorKind::LimitExceeded,
                format!("COPY payload larger than {MAX_COPY_BYTES} bytes; split it into several COPY statements"),
            )
            .into_pgwire());
        }
        buf.extend_from_slice(&copy_data.data);
        Ok(())
    }

    async fn on_copy_done<C>(&self, client: &mut C, _done: CopyDone) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let c = conn(client, &self.engine);
        let Some((copy, data)) = c.copy.lock().await.take() else {
            return Err(crate::errors::ClientError::new(
                ErrorKind::ProtocolViolation,
                "COPY done without COPY",
            )
            .into_pgwire());
        };
        let stop = stop_for(client, &c).await;
        let session = c.clone();
        let n = self
            .pool
            .run(stop, async move {
                let mut session = session.lock_session().await;
                session.copy_in(&copy, &data)
            })
            .await
            .map_err(pg_err)?;
        let tag = Tag::new("COPY").with_rows(n);
        client
            .send(PgWireBackendMessage::CommandComplete(tag.into()))
            .await?;
        Ok(())
    }

    async fn on_copy_fail<C>(
        &self,
        client: &mut C,
        fail: pgwire::messages::copy::CopyFail,
    ) -> PgWireError
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let c = conn(client, &self.engine);
        *c.copy.lock().await = None;
        crate::errors::ClientError::new(
            ErrorKind::Canceled,
            format!("COPY from stdin failed: {}", fail.message),
        )
        .into_pgwire()
    }
}

/// Accept connections until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    handlers: Arc<PgHandlers>,
    limits: ConnLimits,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let slots = Arc::new(Slots::default());
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, addr)) => {
                    tokio::spawn(crate::pg_conn::run(
                        socket,
                        addr,
                        handlers.clone(),
                        slots.clone(),
                        limits,
                    ));
                }
                Err(e) => {
                    // Out of file descriptors, typically: wait a little
                    // rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
}
