//! A Postgres table read by logical replication (`cdc="native"`): the
//! table's rows first (the initial snapshot), then its change stream,
//! decoded from the built-in `pgoutput` plugin.
//!
//! The source creates (or finds again, after a restart) a publication for
//! the table and a logical replication slot, both named
//! `thyme_<dataset>_<n>_<table id>` (see [`names`]). The change stream is
//! read over an ordinary connection with
//! `pg_logical_slot_peek_binary_changes`, whole transactions at a time, and
//! the slot is moved on with `pg_replication_slot_advance` **only after**
//! the rows of those transactions and the source's position (the commit LSN
//! of the last transaction stored) were written in one atomic write. After
//! a crash the slot may still hold transactions already stored; they are
//! recognised by their commit LSN (at or below the stored one) and dropped.
//!
//! What becomes of a change:
//! - `INSERT`, `UPDATE`: an upsert of the new row (an update that changes
//!   the key also deletes the old key);
//! - `DELETE`: a delete of the key, at the transaction's commit time (the
//!   table's replica identity, its primary key by default, carries the key);
//! - `TRUNCATE`: not applied; recorded as a rejected row.
//!
//! The initial snapshot is read after the slot exists, in key order, in
//! pages of [`PAGE`](crate::postgres::PAGE) rows (the position keeps the
//! last key read). Changes committed between the slot's creation and the
//! snapshot are read by both and applied twice; for a keyed dataset that is
//! harmless (the same version of the same row is written again).
//!
//! Needs: `wal_level = logical`, a role with `REPLICATION` (or superuser)
//! that owns the table (to create the publication), a primary key or
//! `REPLICA IDENTITY FULL` on the table for updates and deletes. A slot
//! keeps WAL until it is advanced: a source whose dataset is recommitted
//! drops the older version's slot; a source removed from the commit leaves
//! its slot, which `SELECT pg_drop_replication_slot('thyme_...')` drops.

use std::sync::Mutex;

use serde_json::{Map, Value};
use thyme_model::payload::{Connector, Dataset as DatasetSpec, Source};
use thyme_table::error::{Error, Result};

use crate::chunk::{Chunk, Rejection};
use crate::postgres::{config_of, describe_config, quote, PAGE};

/// Changes asked for per peek (whole transactions are always returned).
pub const CHANGES_PER_PEEK: i32 = 20_000;

/// Microseconds from 1970-01-01 to 2000-01-01 (Postgres' epoch).
const PG_EPOCH_US: i64 = 946_684_800_000_000;

/// The publication and slot names of source `n` of `dataset` whose table
/// has id `table_id` (lower case, at most 63 bytes), and the prefix every
/// version of that source shares.
pub fn names(dataset: &str, n: usize, table_id: u64) -> (String, String) {
    let ds: String = thyme_model::snake_case(dataset)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(30)
        .collect();
    let prefix = format!("thyme_{ds}_{n}_");
    (format!("{prefix}{table_id}"), prefix)
}

/// A stored LSN (`X/Y`) as a number.
fn lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

fn lsn_text(v: u64) -> String {
    format!("{:X}/{:X}", v >> 32, v & 0xFFFF_FFFF)
}

/// A `cdc="native"` Postgres source.
pub struct PostgresCdcSource {
    config: tokio_postgres::Config,
    table: String,
    key: Vec<String>,
    ts_field: String,
    slot: String,
    prefix: String,
    runtime: tokio::runtime::Runtime,
    conn: Mutex<Option<Conn>>,
}

/// A connection, with the relations the stream described.
struct Conn {
    client: tokio_postgres::Client,
    relations: std::collections::HashMap<u32, Relation>,
    /// How far the slot was advanced through this connection.
    advanced: u64,
}

#[derive(Debug, Clone)]
struct Relation {
    name: String,
    columns: Vec<(String, u32)>,
}

impl PostgresCdcSource {
    pub fn new(
        connector: &Connector,
        spec: &DatasetSpec,
        n: usize,
        table_id: u64,
        _source: &Source,
    ) -> Result<Self> {
        let Connector::Postgres { table, .. } = connector else {
            return Err(Error::Internal("not a postgres connector".into()));
        };
        let key = thyme_model::validate::key_names(spec);
        if key.is_empty() {
            return Err(Error::InvalidDefinition(format!(
                "dataset {}: cdc=\"native\" needs key fields",
                spec.name
            )));
        }
        let (slot, prefix) = names(&spec.name, n, table_id);
        Ok(PostgresCdcSource {
            config: config_of(connector)?,
            table: table.clone(),
            key,
            ts_field: thyme_model::validate::timestamp_field(spec)
                .map(|f| f.name.clone())
                .unwrap_or_default(),
            slot,
            prefix,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::Internal(format!("runtime: {e}")))?,
            conn: Mutex::new(None),
        })
    }

    pub fn describe(&self) -> String {
        describe_config(&self.config, &self.table)
    }

    /// The position for the status.
    pub fn summary(&self, position: &Value) -> Value {
        serde_json::json!({
            "table": self.describe(),
            "slot": self.slot,
            "phase": position.get("phase").cloned().unwrap_or(Value::from("snapshot")),
            "lsn": position.get("lsn").cloned().unwrap_or(Value::Null),
        })
    }

    fn unavailable(&self, e: impl std::fmt::Display) -> Error {
        Error::Unavailable(format!("postgres {}: {e}", self.describe()))
    }

    fn pg(&self, e: tokio_postgres::Error) -> Error {
        self.unavailable(crate::postgres::pg_error(&e))
    }

    /// The next rows or changes after `position` (`None`: nothing new).
    pub fn next(&self, position: &Value) -> Result<Option<Chunk>> {
        let mut guard = self.conn.lock().expect("lock");
        if guard.as_ref().is_some_and(|c| c.client.is_closed()) {
            *guard = None;
        }
        if guard.is_none() {
            *guard = Some(self.runtime.block_on(self.connect())?);
        }
        let conn = guard.as_mut().expect("connected");
        let r = self.runtime.block_on(self.read(conn, position));
        if r.is_err() {
            *guard = None;
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
        client
            .batch_execute("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'")
            .await
            .map_err(|e| self.pg(e))?;
        Ok(Conn {
            client,
            relations: Default::default(),
            advanced: 0,
        })
    }

    /// Create the publication and the slot unless they exist; drop the
    /// slots of this source's older versions. Returns the slot's start LSN.
    async fn ensure_slot(&self, c: &tokio_postgres::Client) -> Result<()> {
        let err = |e: tokio_postgres::Error| self.pg(e);
        let has_pub = c
            .query_opt(
                "SELECT 1 FROM pg_publication WHERE pubname = $1",
                &[&self.slot],
            )
            .await
            .map_err(err)?
            .is_some();
        if !has_pub {
            c.batch_execute(&format!(
                "CREATE PUBLICATION {} FOR TABLE {}",
                quote(&self.slot),
                quote(&self.table)
            ))
            .await
            .map_err(err)?;
        }
        let has_slot = c
            .query_opt(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
                &[&self.slot],
            )
            .await
            .map_err(err)?
            .is_some();
        if !has_slot {
            c.query_one(
                "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')",
                &[&self.slot],
            )
            .await
            .map_err(err)?;
        }
        // Older versions of this source (a recommitted dataset).
        let pattern = format!("{}%", self.prefix.replace('_', "\\_"));
        let old = c
            .query(
                "SELECT slot_name::text FROM pg_replication_slots \
                 WHERE slot_name LIKE $1 AND slot_name <> $2 AND NOT active",
                &[&pattern, &self.slot],
            )
            .await
            .map_err(err)?;
        for r in old {
            let name: String = r.get(0);
            let _ = c
                .execute("SELECT pg_drop_replication_slot($1)", &[&name])
                .await;
            let _ = c
                .batch_execute(&format!("DROP PUBLICATION IF EXISTS {}", quote(&name)))
                .await;
            tracing::info!(slot = %name, "dropped the replication slot of an older version of the source");
        }
        Ok(())
    }

    async fn read(&self, conn: &mut Conn, position: &Value) -> Result<Option<Chunk>> {
        let phase = position.get("phase").and_then(Value::as_str);
        match phase {
            None => {
                self.ensure_slot(&conn.client).await?;
                // The slot exists before a row is read: the stream holds
                // every change the snapshot may miss.
                Ok(Some(Chunk {
                    position: serde_json::json!({"phase": "snapshot", "after": null}),
                    ..Chunk::default()
                }))
            }
            Some("snapshot") => self.snapshot(conn, position).await,
            _ => self.stream(conn, position).await,
        }
    }

    /// The next page of the table in key order.
    async fn snapshot(&self, conn: &mut Conn, position: &Value) -> Result<Option<Chunk>> {
        let t = quote(&self.table);
        let keys: Vec<String> = self.key.iter().map(|k| quote(k)).collect();
        let order = keys
            .iter()
            .map(|k| format!("x.{k}"))
            .collect::<Vec<_>>()
            .join(", ");
        let after = position.get("after").filter(|a| !a.is_null());
        let sql = match after {
            None => format!("SELECT row_to_json(x)::text FROM {t} AS x ORDER BY {order} LIMIT {PAGE}"),
            Some(_) => format!(
                "SELECT row_to_json(x)::text FROM {t} AS x \
                 WHERE ROW({order}) > (SELECT {} FROM json_populate_record(NULL::{t}, $1::text::json) AS r) \
                 ORDER BY {order} LIMIT {PAGE}",
                keys.iter().map(|k| format!("r.{k}")).collect::<Vec<_>>().join(", ")
            ),
        };
        let rows = match after {
            None => conn.client.query(&sql, &[]).await,
            Some(a) => conn.client.query(&sql, &[&a.to_string()]).await,
        }
        .map_err(|e| self.pg(e))?;
        let mut chunk = Chunk::default();
        let mut last: Option<Map<String, Value>> = None;
        for r in &rows {
            let json: String = r.get(0);
            let Ok(Value::Object(row)) = serde_json::from_str(&json) else {
                continue;
            };
            last = Some(
                self.key
                    .iter()
                    .map(|k| (k.clone(), row.get(k).cloned().unwrap_or(Value::Null)))
                    .collect(),
            );
            chunk.push(row, format!("{} (initial read)", self.table), false);
        }
        chunk.position = if (rows.len() as i64) < PAGE {
            serde_json::json!({"phase": "stream", "lsn": null})
        } else {
            serde_json::json!({"phase": "snapshot", "after": last.map(Value::Object)})
        };
        Ok(Some(chunk))
    }

    /// The transactions after the stored LSN.
    async fn stream(&self, conn: &mut Conn, position: &Value) -> Result<Option<Chunk>> {
        let err = |e: tokio_postgres::Error| self.pg(e);
        let stored = position
            .get("lsn")
            .and_then(Value::as_str)
            .and_then(lsn)
            .unwrap_or(0);
        // What was stored is confirmed to the slot (the write happened).
        if stored > conn.advanced {
            conn.client
                .query_one(
                    "SELECT pg_replication_slot_advance($1, $2::text::pg_lsn)::text",
                    &[&self.slot, &lsn_text(stored)],
                )
                .await
                .map_err(err)?;
            conn.advanced = stored;
        }
        let rows = conn
            .client
            .query(
                "SELECT lsn::text, data FROM pg_logical_slot_peek_binary_changes($1, NULL, $2, \
                 'proto_version', '1', 'publication_names', $3)",
                &[&self.slot, &CHANGES_PER_PEEK, &self.slot],
            )
            .await
            .map_err(err)?;
        let mut chunk = Chunk::default();
        let mut txn: Vec<Change> = Vec::new();
        let mut commit_ts = 0i64;
        let mut last_commit = stored;
        for r in &rows {
            let at: String = r.get(0);
            let data: Vec<u8> = r.get(1);
            let at = lsn(&at).unwrap_or(0);
            let msg = match decode(&data) {
                Ok(m) => m,
                Err(e) => {
                    return Err(Error::Internal(format!(
                        "pgoutput message at {}: {e}",
                        lsn_text(at)
                    )))
                }
            };
            match msg {
                Message::Begin { commit_ts: ts } => {
                    txn.clear();
                    commit_ts = ts;
                }
                Message::Relation(id, rel) => {
                    conn.relations.insert(id, rel);
                }
                Message::Change(c) => txn.push(c),
                Message::Commit => {
                    if at > stored {
                        for c in txn.drain(..) {
                            self.apply_change(&conn.relations, c, commit_ts, at, &mut chunk);
                        }
                        last_commit = at;
                    }
                    txn.clear();
                }
                Message::Other => {}
            }
        }
        if last_commit == stored {
            // Only transactions stored before (a crash before the slot was
            // advanced): move the slot on and report nothing new.
            return Ok(None);
        }
        chunk.position = serde_json::json!({"phase": "stream", "lsn": lsn_text(last_commit)});
        Ok(Some(chunk))
    }

    fn apply_change(
        &self,
        relations: &std::collections::HashMap<u32, Relation>,
        c: Change,
        commit_ts: i64,
        at: u64,
        chunk: &mut Chunk,
    ) {
        let location = |rel: &str| format!("{rel} change at {}", lsn_text(at));
        let rel_of = |id: u32| relations.get(&id);
        match c {
            Change::Truncate => chunk.unparsed.push(Rejection {
                location: location(&self.table),
                field: None,
                value: None,
                error: "TRUNCATE is not applied (delete the rows through SQL)".into(),
            }),
            Change::Insert { rel, new }
            | Change::Update {
                rel,
                old: None,
                new,
            } => {
                let Some(r) = rel_of(rel) else { return };
                chunk.push(row_of(r, &new), location(&r.name), false);
            }
            Change::Update {
                rel,
                old: Some(old),
                new,
            } => {
                let Some(r) = rel_of(rel) else { return };
                let (old_row, new_row) = (row_of(r, &old), row_of(r, &new));
                let moved = self.key.iter().any(|k| old_row.get(k) != new_row.get(k));
                if moved {
                    chunk.push(self.delete_row(old_row, commit_ts), location(&r.name), true);
                }
                chunk.push(new_row, location(&r.name), false);
            }
            Change::Delete { rel, old } => {
                let Some(r) = rel_of(rel) else { return };
                chunk.push(
                    self.delete_row(row_of(r, &old), commit_ts),
                    location(&r.name),
                    true,
                );
            }
        }
    }

    /// A delete's row: the key, at the commit time.
    fn delete_row(&self, mut row: Map<String, Value>, commit_ts: i64) -> Map<String, Value> {
        row.retain(|k, _| self.key.contains(k));
        row.insert(
            self.ts_field.clone(),
            Value::from(commit_ts.saturating_add(PG_EPOCH_US)),
        );
        row
    }
}

/// A decoded `pgoutput` message (protocol version 1), as far as it matters
/// here.
#[derive(Debug, PartialEq)]
enum Message {
    Begin { commit_ts: i64 },
    Commit,
    Relation(u32, Relation),
    Change(Change),
    Other,
}

impl PartialEq for Relation {
    fn eq(&self, o: &Relation) -> bool {
        self.name == o.name && self.columns == o.columns
    }
}

/// A column value of a tuple: `None` for SQL null, `Some(text)`; an
/// unchanged TOASTed value (not sent) is left out of the row.
type Tuple = Vec<Option<Option<String>>>;

#[derive(Debug, PartialEq)]
enum Change {
    Insert {
        rel: u32,
        new: Tuple,
    },
    Update {
        rel: u32,
        old: Option<Tuple>,
        new: Tuple,
    },
    Delete {
        rel: u32,
        old: Tuple,
    },
    Truncate,
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len());
        let end = end.ok_or_else(|| format!("truncated at byte {}", self.at))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> std::result::Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn i16(&mut self) -> std::result::Result<i16, String> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into().expect("2")))
    }
    fn i32(&mut self) -> std::result::Result<i32, String> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn i64(&mut self) -> std::result::Result<i64, String> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn cstr(&mut self) -> std::result::Result<String, String> {
        let rest = &self.b[self.at..];
        let n = rest
            .iter()
            .position(|&c| c == 0)
            .ok_or("unterminated string")?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.at += n + 1;
        Ok(s)
    }
    fn tuple(&mut self) -> std::result::Result<Tuple, String> {
        let n = self.i16()?.max(0) as usize;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(match self.u8()? {
                b'n' => Some(None),
                b'u' => None,
                b't' | b'b' => {
                    let len = self.i32()?.max(0) as usize;
                    Some(Some(String::from_utf8_lossy(self.take(len)?).into_owned()))
                }
                k => return Err(format!("tuple column kind {k}")),
            });
        }
        Ok(out)
    }
}

fn decode(b: &[u8]) -> std::result::Result<Message, String> {
    let mut r = Reader { b, at: 0 };
    Ok(match r.u8()? {
        b'B' => {
            let _final_lsn = r.i64()?;
            let commit_ts = r.i64()?;
            Message::Begin { commit_ts }
        }
        b'C' => Message::Commit,
        b'R' => {
            let id = r.i32()? as u32;
            let ns = r.cstr()?;
            let name = r.cstr()?;
            let _identity = r.u8()?;
            let n = r.i16()?.max(0) as usize;
            let mut columns = Vec::with_capacity(n);
            for _ in 0..n {
                let _flags = r.u8()?;
                let col = r.cstr()?;
                let ty = r.i32()? as u32;
                let _typmod = r.i32()?;
                columns.push((col, ty));
            }
            Message::Relation(
                id,
                Relation {
                    name: format!("{ns}.{name}"),
                    columns,
                },
            )
        }
        b'I' => {
            let rel = r.i32()? as u32;
            if r.u8()? != b'N' {
                return Err("insert without a new tuple".into());
            }
            Message::Change(Change::Insert {
                rel,
                new: r.tuple()?,
            })
        }
        b'U' => {
            let rel = r.i32()? as u32;
            let mut old = None;
            let mut kind = r.u8()?;
            if kind == b'K' || kind == b'O' {
                old = Some(r.tuple()?);
                kind = r.u8()?;
            }
            if kind != b'N' {
                return Err("update without a new tuple".into());
            }
            let mut new = r.tuple()?;
            // Columns an update left unchanged and did not send (TOAST)
            // come from the old tuple when it has them.
            if let Some(o) = &old {
                for (n, v) in new.iter_mut().enumerate() {
                    if v.is_none() {
                        *v = o.get(n).cloned().flatten();
                    }
                }
            }
            Message::Change(Change::Update { rel, old, new })
        }
        b'D' => {
            let rel = r.i32()? as u32;
            let _kind = r.u8()?;
            Message::Change(Change::Delete {
                rel,
                old: r.tuple()?,
            })
        }
        b'T' => Message::Change(Change::Truncate),
        _ => Message::Other, // Origin, Type, Message, ...
    })
}

/// A tuple as a JSON row, each value converted from Postgres' text form by
/// its column type.
fn row_of(rel: &Relation, t: &Tuple) -> Map<String, Value> {
    let mut row = Map::with_capacity(t.len());
    for ((name, ty), v) in rel.columns.iter().zip(t) {
        let Some(v) = v else { continue }; // not sent
        row.insert(
            name.clone(),
            v.as_deref().map_or(Value::Null, |s| value_of(*ty, s)),
        );
    }
    row
}

/// One value from its text form: numbers, booleans, JSON and timestamps
/// become JSON values of the same meaning; anything else stays text.
fn value_of(ty: u32, s: &str) -> Value {
    let text = || Value::String(s.to_string());
    match ty {
        // int2, int4, int8, oid
        21 | 23 | 20 | 26 => s.parse::<i64>().map(Value::from).unwrap_or_else(|_| text()),
        // float4, float8, numeric
        700 | 701 | 1700 => s
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .unwrap_or_else(text),
        16 => match s {
            "t" => Value::Bool(true),
            "f" => Value::Bool(false),
            _ => text(),
        },
        114 | 3802 => serde_json::from_str(s).unwrap_or_else(|_| text()),
        // timestamp (no zone: read as UTC)
        1114 => chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
            .map(|t| Value::String(t.and_utc().to_rfc3339()))
            .unwrap_or_else(|_| text()),
        // timestamptz (the session is in UTC)
        1184 => chrono::DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%#z")
            .map(|t| Value::String(t.to_utc().to_rfc3339()))
            .unwrap_or_else(|_| text()),
        _ => text(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(vals: &[Option<&str>]) -> Vec<u8> {
        let mut b = (vals.len() as i16).to_be_bytes().to_vec();
        for v in vals {
            match v {
                None => b.push(b'n'),
                Some(s) => {
                    b.push(b't');
                    b.extend_from_slice(&(s.len() as i32).to_be_bytes());
                    b.extend_from_slice(s.as_bytes());
                }
            }
        }
        b
    }

    #[test]
    fn decodes_pgoutput() {
        let mut rel = vec![b'R'];
        rel.extend_from_slice(&16384i32.to_be_bytes());
        rel.extend_from_slice(b"public\0users\0");
        rel.push(b'd');
        rel.extend_from_slice(&2i16.to_be_bytes());
        for (name, ty) in [("uid", 20i32), ("at", 1184)] {
            rel.push(1);
            rel.extend_from_slice(name.as_bytes());
            rel.push(0);
            rel.extend_from_slice(&ty.to_be_bytes());
            rel.extend_from_slice(&(-1i32).to_be_bytes());
        }
        let Message::Relation(id, r) = decode(&rel).unwrap() else {
            panic!("relation")
        };
        assert_eq!(id, 16384);
        assert_eq!(r.name, "public.users");
        let mut ins = vec![b'I'];
        ins.extend_from_slice(&16384i32.to_be_bytes());
        ins.push(b'N');
        ins.extend(tuple(&[Some("7"), Some("2024-01-02 03:04:05.5+00")]));
        let Message::Change(Change::Insert { new, .. }) = decode(&ins).unwrap() else {
            panic!("insert")
        };
        let row = row_of(&r, &new);
        assert_eq!(row["uid"], 7);
        assert_eq!(row["at"], "2024-01-02T03:04:05.500+00:00");
        let mut del = vec![b'D'];
        del.extend_from_slice(&16384i32.to_be_bytes());
        del.push(b'K');
        del.extend(tuple(&[Some("7"), None]));
        assert!(matches!(
            decode(&del).unwrap(),
            Message::Change(Change::Delete { .. })
        ));
        assert!(
            decode(&ins[..ins.len() - 3]).is_err(),
            "a cut message is an error, not a panic"
        );
        assert_eq!(decode(b"Zxyz").unwrap(), Message::Other);
    }

    #[test]
    fn lsns() {
        assert_eq!(lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(lsn_text(0x16_B374_D848), "16/B374D848");
        assert_eq!(lsn("nope"), None);
    }

    #[test]
    fn slot_names_fit() {
        let (slot, prefix) = names(
            "AVeryLongDatasetNameThatGoesOnAndOnAndOnForeverAndEver",
            0,
            u64::MAX,
        );
        assert!(slot.len() <= 63, "{slot}");
        assert!(slot.starts_with(&prefix));
        assert_eq!(names("User", 1, 5).0, "thyme_user_1_5");
    }
}
