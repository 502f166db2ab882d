//! A Postgres table polled by cursor (`Postgres(...).table("t",
//! cursor="updated_at")`), with `tokio-postgres`.
//!
//! Each poll reads the rows whose cursor column is at or past the highest
//! value read so far, less a look-back, in cursor order, [`PAGE`] rows per
//! chunk (one atomic write each); while pages come back full (a first read,
//! a backlog) the next page starts at the highest value read and holds
//! [`BACKLOG_PAGE`] rows, and the look-back is read once the source has
//! caught up. Columns of the common types (integers, floats, booleans,
//! text, timestamps, dates) are read in Postgres' binary form, every other
//! column through `to_json`, so every type Postgres can show as JSON is
//! read (numeric, `json`, arrays, ...).
//!
//! What the cursor mode guarantees:
//! - **Nothing is stored twice**: with the highest cursor value read, the
//!   position keeps the identity (the dataset's key fields, or the whole
//!   row for a keyless dataset) and cursor value of every row read whose
//!   cursor lies within the look-back of it; a row read again there is
//!   dropped.
//! - **Late commits are not lost**: a transaction that commits after rows
//!   with a later cursor value were read is still found, as long as its
//!   cursor value is within the look-back of the highest value read when
//!   the source next catches up (at once when it is caught up; at the end
//!   of a backlog while it reads one). For a time cursor (`timestamp`, `timestamptz`, `date`) the
//!   look-back is the source's `disorder`; for other cursors it is 0 (rows
//!   whose cursor equals the highest read are still found). Give `disorder`
//!   at least your longest write transaction.
//! - **Updates** are read when they move the cursor (an `updated_at` set by
//!   every update) and stored by the source's `cdc` (`upsert` for tables of
//!   entities); deletes are not seen by cursor polling.

use std::collections::BTreeSet;

use serde_json::{Map, Value};
use thyme_model::payload::{Connector, Dataset as DatasetSpec, Source};
use thyme_table::error::{Error, Result};

use crate::chunk::{Chunk, Rejection};

/// Rows per chunk.
pub const PAGE: i64 = 10_000;
/// Rows per chunk while reading a backlog (after a full page): fewer,
/// larger writes, each carrying the position with the rows read within the
/// look-back.
pub const BACKLOG_PAGE: i64 = 100_000;

/// The connection settings of a Postgres connector.
pub(crate) fn config_of(connector: &Connector) -> Result<tokio_postgres::Config> {
    let Connector::Postgres {
        host,
        port,
        db_name,
        username,
        password,
        ..
    } = connector
    else {
        return Err(Error::Internal("not a postgres connector".into()));
    };
    let mut config = tokio_postgres::Config::new();
    config
        .host(host)
        .port(*port)
        .dbname(db_name)
        .user(username)
        .application_name("thyme source")
        .connect_timeout(std::time::Duration::from_secs(10));
    if let Some(p) = password {
        config.password(p);
    }
    Ok(config)
}

/// `host:port/db.table` of a connection, for the status (no secrets).
pub(crate) fn describe_config(config: &tokio_postgres::Config, table: &str) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(s) => s.clone(),
            #[allow(unreachable_patterns)]
            _ => "local".into(),
        })
        .unwrap_or_default();
    format!(
        "{host}:{}/{}.{table}",
        config.get_ports().first().copied().unwrap_or(5432),
        config.get_dbname().unwrap_or(""),
    )
}

/// A Postgres error as text: the server's message (tokio-postgres shows
/// only "db error" for those).
pub(crate) fn pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {} ({})", db.severity(), db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// A quoted SQL identifier (`schema.table` quotes both parts).
pub(crate) fn quote(name: &str) -> String {
    name.split('.')
        .map(|p| format!("\"{}\"", p.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(".")
}

/// The stored position.
#[derive(Debug, Default, Clone, PartialEq)]
struct Position {
    /// Highest cursor value read, as Postgres prints it.
    high: Option<String>,
    /// The same, in microseconds, for a time cursor.
    high_us: Option<i64>,
    /// (identity, cursor text) of the rows read within the look-back of
    /// `high`. The identity is the key values, or for a keyless dataset a
    /// 128-bit digest of the whole row ([`row_identity`]).
    recent: BTreeSet<(String, String)>,
    /// The last page was full: more rows follow `high`, and the next page
    /// starts there (the look-back is read again once the source has caught
    /// up, at the start of the next poll).
    more: bool,
}

/// The identity of a keyless row: a digest of its JSON text (32 hex
/// digits), so that the position stays small.
fn row_identity(json: &str) -> String {
    let h = blake3::hash(json.as_bytes());
    h.to_hex()[..32].to_string()
}

impl Position {
    fn from_json(v: &Value) -> Position {
        let high = v.get("high").and_then(Value::as_str).map(String::from);
        let high_us = v.get("high_us").and_then(Value::as_i64);
        let recent = v
            .get("recent")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|p| {
                        let p = p.as_array()?;
                        Some((
                            p.first()?.as_str()?.to_string(),
                            p.get(1)?.as_str()?.to_string(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let more = v.get("more").and_then(Value::as_bool).unwrap_or(false);
        Position {
            high,
            high_us,
            recent,
            more,
        }
    }

    fn to_json(&self) -> Value {
        serde_json::json!({
            "high": self.high,
            "high_us": self.high_us,
            "recent": self.recent.iter().map(|(i, c)| [i, c]).collect::<Vec<_>>(),
            "more": self.more,
        })
    }
}

/// How cursor values compare (Postgres prints them as text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CursorKind {
    Time,
    Number,
    Text,
}

/// How a column is read: in Postgres' binary form for the common types,
/// through `to_json` for every other (numeric, json, arrays, ...), which
/// gives what `row_to_json` would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ColKind {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Text,
    TimestampTz,
    Timestamp,
    Date,
    Json,
}

impl ColKind {
    fn of(oid: u32) -> ColKind {
        match oid {
            16 => ColKind::Bool,
            21 => ColKind::Int2,
            23 => ColKind::Int4,
            20 => ColKind::Int8,
            700 => ColKind::Float4,
            701 => ColKind::Float8,
            25 | 1043 | 1042 | 19 => ColKind::Text,
            1184 => ColKind::TimestampTz,
            1114 => ColKind::Timestamp,
            1082 => ColKind::Date,
            _ => ColKind::Json,
        }
    }
}

/// A connection and what it looked up about the table.
struct Conn {
    client: tokio_postgres::Client,
    cursor_type: String,
    kind: CursorKind,
    columns: Vec<(String, ColKind)>,
}

/// A float as `row_to_json` shows it (non-finite values as text).
fn float_value(f: f64) -> Value {
    match serde_json::Number::from_f64(f) {
        Some(n) => Value::Number(n),
        None if f.is_nan() => Value::from("NaN"),
        None if f > 0.0 => Value::from("Infinity"),
        None => Value::from("-Infinity"),
    }
}

/// Column `i` of `r` as a JSON value; a value the binary form cannot
/// carry (an infinite timestamp) as text, for the dataset check to report.
fn column_value(r: &tokio_postgres::Row, i: usize, kind: ColKind) -> Value {
    fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
        r: &'a tokio_postgres::Row,
        i: usize,
        f: impl FnOnce(T) -> Value,
    ) -> Value {
        match r.try_get::<_, Option<T>>(i) {
            Ok(Some(v)) => f(v),
            Ok(None) => Value::Null,
            Err(e) => Value::from(format!("unreadable value: {e}")),
        }
    }
    match kind {
        ColKind::Bool => get(r, i, Value::Bool),
        ColKind::Int2 => get(r, i, |v: i16| Value::from(v)),
        ColKind::Int4 => get(r, i, |v: i32| Value::from(v)),
        ColKind::Int8 => get(r, i, |v: i64| Value::from(v)),
        ColKind::Float4 => get(r, i, |v: f32| float_value(v as f64)),
        ColKind::Float8 => get(r, i, float_value),
        ColKind::Text => get(r, i, Value::String),
        ColKind::TimestampTz => get(r, i, |v: chrono::DateTime<chrono::Utc>| {
            Value::from(v.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        }),
        ColKind::Timestamp => get(r, i, |v: chrono::NaiveDateTime| {
            Value::from(v.format("%Y-%m-%dT%H:%M:%S%.f").to_string())
        }),
        ColKind::Date => get(r, i, |v: chrono::NaiveDate| {
            Value::from(v.format("%Y-%m-%d").to_string())
        }),
        ColKind::Json => get(r, i, |v: String| {
            serde_json::from_str(&v).unwrap_or(Value::String(v))
        }),
    }
}

/// A `Postgres(...).table(...)` source in cursor mode.
pub struct PostgresSource {
    config: tokio_postgres::Config,
    table: String,
    cursor: String,
    key: Vec<String>,
    lookback_us: i64,
    runtime: tokio::runtime::Runtime,
    /// Connection, with the table's columns once looked up.
    conn: std::sync::Mutex<Option<Conn>>,
    /// Rows per query (grows when a page holds only rows already read).
    page: std::sync::atomic::AtomicI64,
}

impl PostgresSource {
    pub fn new(connector: &Connector, spec: &DatasetSpec, source: &Source) -> Result<Self> {
        let Connector::Postgres { table, .. } = connector else {
            return Err(Error::Internal("not a postgres connector".into()));
        };
        let cursor = source.cursor.clone().ok_or_else(|| {
            Error::InvalidDefinition(format!(
                "the Postgres source of {} needs a cursor column (table(..., cursor=\"updated_at\")) or cdc=\"native\"",
                spec.name
            ))
        })?;
        let config = config_of(connector)?;
        let lookback_us = source
            .disorder
            .as_deref()
            .and_then(|d| thyme_model::duration::parse(d).ok())
            .and_then(|d| d.micros())
            .unwrap_or(0);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Internal(format!("runtime: {e}")))?;
        Ok(PostgresSource {
            config,
            table: table.clone(),
            cursor,
            key: thyme_model::validate::key_names(spec),
            lookback_us,
            runtime,
            conn: std::sync::Mutex::new(None),
            page: std::sync::atomic::AtomicI64::new(PAGE),
        })
    }

    /// Where the source reads, for the status (no secrets).
    pub fn describe(&self) -> String {
        describe_config(&self.config, &self.table)
    }

    fn unavailable(&self, e: impl std::fmt::Display) -> Error {
        Error::Unavailable(format!("postgres {}: {e}", self.describe()))
    }

    fn pg(&self, e: tokio_postgres::Error) -> Error {
        self.unavailable(crate::postgres::pg_error(&e))
    }

    /// The rows after `position`, as a chunk (`None`: nothing new).
    pub fn next(&self, position: &Value) -> Result<Option<Chunk>> {
        let mut guard = self.conn.lock().expect("lock");
        if guard.as_ref().is_some_and(|c| c.client.is_closed()) {
            *guard = None;
        }
        if guard.is_none() {
            *guard = Some(self.runtime.block_on(self.connect())?);
        }
        let conn = guard.as_ref().expect("connected");
        let r = self.runtime.block_on(self.read(conn, position));
        if r.is_err() {
            *guard = None; // reconnect next time
        }
        r
    }

    async fn connect(&self) -> Result<Conn> {
        let (client, conn) = self
            .config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| self.pg(e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let row = client
            .query_opt(
                "SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a \
                 WHERE a.attrelid = $1::text::regclass AND a.attname = $2 AND NOT a.attisdropped",
                &[&self.table, &self.cursor],
            )
            .await
            .map_err(|e| self.pg(e))?
            .ok_or_else(|| {
                self.unavailable(format!(
                    "table {} has no column {}",
                    self.table, self.cursor
                ))
            })?;
        let ty: String = row.get(0);
        let kind = if ty.starts_with("timestamp") || ty == "date" {
            CursorKind::Time
        } else if ["smallint", "integer", "bigint", "real", "double precision"]
            .contains(&ty.as_str())
            || ty.starts_with("numeric")
        {
            CursorKind::Number
        } else {
            CursorKind::Text
        };
        let columns = client
            .query(
                "SELECT a.attname::text, a.atttypid::oid FROM pg_attribute a \
                 WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped \
                 ORDER BY a.attnum",
                &[&self.table],
            )
            .await
            .map_err(|e| self.pg(e))?
            .iter()
            .map(|r| (r.get::<_, String>(0), ColKind::of(r.get::<_, u32>(1))))
            .collect();
        Ok(Conn {
            client,
            cursor_type: ty,
            kind,
            columns,
        })
    }

    async fn read(&self, conn: &Conn, position: &Value) -> Result<Option<Chunk>> {
        let (client, cursor_type, kind) = (&conn.client, conn.cursor_type.as_str(), conn.kind);
        let mut pos = Position::from_json(position);
        // Positions written before rows were read column by column keep
        // keyless rows by their `row_to_json` text: read that way until
        // those rows leave the look-back.
        let legacy = self.key.is_empty() && pos.recent.iter().any(|(i, _)| i.starts_with('{'));
        let page = self.page.load(std::sync::atomic::Ordering::Relaxed);
        let page = if pos.more {
            page.max(BACKLOG_PAGE)
        } else {
            page
        };
        let (t, c) = (quote(&self.table), format!("x.{}", quote(&self.cursor)));
        let from = match (&pos.high, kind) {
            (None, _) => String::new(),
            (Some(_), CursorKind::Time) if self.lookback_us > 0 && !pos.more => format!(
                "WHERE {c} >= ($1::text::{cursor_type} - make_interval(secs => {}))",
                self.lookback_us as f64 / 1e6
            ),
            (Some(_), _) => format!("WHERE {c} >= $1::text::{cursor_type}"),
        };
        // For a time cursor, its microseconds too (compared exactly here).
        let micros = if kind == CursorKind::Time {
            format!("(extract(epoch FROM {c}) * 1000000)::bigint")
        } else {
            "NULL::bigint".into()
        };
        let select = if legacy {
            "row_to_json(x)::text".to_string()
        } else {
            conn.columns
                .iter()
                .map(|(name, k)| {
                    let q = quote(name);
                    match k {
                        ColKind::Json => format!("to_json(x.{q})::text"),
                        _ => format!("x.{q}"),
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let n = if legacy { 1 } else { conn.columns.len() };
        let sql = format!(
            "SELECT {select}, ({c})::text, {micros} FROM {t} AS x {from} ORDER BY {c} LIMIT {page}"
        );
        let rows = match &pos.high {
            None => client.query(&sql, &[]).await,
            Some(h) => client.query(&sql, &[h]).await,
        }
        .map_err(|e| self.pg(e))?;
        let full = rows.len() as i64 == page;
        let mut chunk = Chunk::default();
        let mut high = pos.high.clone();
        let mut high_us = pos.high_us;
        for r in &rows {
            let cur: Option<String> = r.get(n);
            let us: Option<i64> = r.get(n + 1);
            let Some(cur) = cur else {
                chunk.unparsed.push(Rejection {
                    location: format!("{} row with null {}", self.table, self.cursor),
                    field: Some(self.cursor.clone()),
                    value: None,
                    error: "the cursor column is null".into(),
                });
                continue;
            };
            let (row, text) = if legacy {
                let json: String = r.get(0);
                match serde_json::from_str(&json) {
                    Ok(Value::Object(m)) => (m, json),
                    _ => continue,
                }
            } else {
                let row: Map<String, Value> = conn
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(i, (name, k))| (name.clone(), column_value(r, i, *k)))
                    .collect();
                let text = if self.key.is_empty() {
                    serde_json::to_string(&row).unwrap_or_default()
                } else {
                    String::new()
                };
                (row, text)
            };
            let identity = if legacy {
                text
            } else if self.key.is_empty() {
                row_identity(&text)
            } else {
                self.key
                    .iter()
                    .map(|k| row.get(k).map(Value::to_string).unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join("\u{1f}")
            };
            // A time cursor is kept by its microseconds (exact to compare).
            let key_cur = us.map_or_else(|| cur.clone(), |u| u.to_string());
            if !pos.recent.insert((identity, key_cur)) {
                continue; // read before
            }
            let later = match (kind, us, high_us, &high) {
                (_, _, _, None) => true,
                (CursorKind::Time, Some(u), Some(h), _) => u > h,
                (_, _, _, Some(h)) => compare(kind, &cur, h) == std::cmp::Ordering::Greater,
            };
            if later {
                high = Some(cur.clone());
                high_us = us;
            }
            chunk.push(row, format!("{} {}={cur}", self.table, self.cursor), false);
        }
        if chunk.rows.is_empty() && chunk.unparsed.is_empty() {
            if full {
                // A page of rows all read already (many equal cursor
                // values): look further next time.
                self.page
                    .store(page * 2, std::sync::atomic::Ordering::Relaxed);
                return Ok(Some(Chunk {
                    position: pos.to_json(),
                    ..Chunk::default()
                }));
            }
            return Ok(None);
        }
        self.page.store(PAGE, std::sync::atomic::Ordering::Relaxed);
        // Keep only what the next look-back can see again.
        match (kind, high_us, &high) {
            (CursorKind::Time, Some(h), _) => {
                let floor = h.saturating_sub(self.lookback_us);
                pos.recent
                    .retain(|(_, c)| c.parse::<i64>().is_ok_and(|c| c >= floor));
            }
            (_, _, Some(h)) => pos
                .recent
                .retain(|(_, c)| compare(kind, c, h) != std::cmp::Ordering::Less),
            _ => {}
        }
        pos.high = high;
        pos.high_us = high_us;
        pos.more = full;
        chunk.position = pos.to_json();
        Ok(Some(chunk))
    }
}

fn compare(kind: CursorKind, a: &str, b: &str) -> std::cmp::Ordering {
    match kind {
        CursorKind::Number | CursorKind::Time => a
            .parse::<f64>()
            .unwrap_or(f64::NAN)
            .partial_cmp(&b.parse::<f64>().unwrap_or(f64::NAN))
            .unwrap_or(std::cmp::Ordering::Equal),
        CursorKind::Text => a.cmp(b),
    }
}
