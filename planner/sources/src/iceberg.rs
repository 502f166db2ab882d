//! An Iceberg table (`Iceberg(name, catalog_uri, warehouse).table("ns.t")`),
//! read snapshot by snapshot.
//!
//! **Catalogs**: a SQL catalog (`sqlite:` or `postgresql:` URIs, the
//! `iceberg_tables` layout pyiceberg's `SqlCatalog` and Iceberg's JDBC
//! catalog write) or a REST catalog (`http(s)://`: `GET /v1/config` for the
//! prefix, then `GET /v1/{prefix}/namespaces/{ns}/tables/{t}`). The catalog
//! gives the current metadata file; the metadata (JSON), the manifest lists
//! and manifests (Avro, read with `apache-avro`) and the Parquet data files
//! are read from `file://` paths or `s3://` (credentials from the usual AWS
//! environment variables). See ADR 0011 for why not the `iceberg` crate.
//!
//! **Commits**: the snapshots one catalog commit added are applied
//! together (pyiceberg's overwrite writes a "delete" and then an "append"
//! snapshot; no reader ever saw the table between them). A snapshot
//! belongs to the first commit time (`metadata-log` entries and
//! `last-updated-ms`) at or after its own `timestamp-ms`.
//!
//! **Position**: the id of the last snapshot applied, and within the
//! commit being applied, how many of its steps are stored (one chunk, one
//! atomic write, per step). Each poll walks the current snapshot's
//! ancestry back to the stored one and applies the commits after it in
//! order. A table whose history no longer reaches the stored snapshot
//! (expired, or the table replaced) is an error status: nothing is
//! guessed.
//!
//! **What a commit does**:
//! - one that only adds data files (`append`, or an `overwrite` that
//!   removes nothing): the rows of each added file are stored, one step per
//!   file (by the source's `cdc`);
//! - one that removes data files (copy-on-write `overwrite` / `delete` /
//!   `replace`), one step: the rows of the removed and the added files are
//!   compared as whole rows. Rows only in the added files are new
//!   (upserted on a keyed dataset, appended on a keyless one); rows copied
//!   unchanged into a rewritten file are not stored again. On a **keyed**
//!   dataset, the keys of removed rows that no added row carries are
//!   deleted at the commit's time (so a keyed dataset expects one row per
//!   key in the table: the entity table the Iceberg table is). On a
//!   **keyless** dataset the removed rows are kept (events are not taken
//!   back) and one rejected-row entry says how many;
//! - delete files (merge-on-read, `content` 1 or 2) are not applied: each
//!   is reported as a rejected row.
//!
//! Columns are read by name from the Parquet files (renamed columns are
//! not followed through field ids).

use std::collections::BTreeSet;

use serde_json::{Map, Value};
use thyme_model::payload::{Cdc, Connector, Dataset as DatasetSpec, Source};
use thyme_table::error::{Error, Result};

use crate::chunk::{Chunk, Location, Rejection};

/// Where the catalog is.
enum Catalog {
    Sqlite(std::path::PathBuf),
    Postgres(Box<tokio_postgres::Config>),
    Rest {
        uri: String,
        warehouse: Option<String>,
    },
}

/// An Iceberg table source.
pub struct IcebergSource {
    catalog: Catalog,
    /// The catalog's name (the connector's), for SQL catalogs that hold
    /// several.
    name: String,
    namespace: String,
    table: String,
    keyed: bool,
    key: Vec<String>,
    ts_field: String,
    runtime: tokio::runtime::Runtime,
    /// The commit being applied (its last snapshot id) and its files, so
    /// that neither the catalog nor the manifests are read again per step.
    plan: std::sync::Mutex<Option<(i64, Plan)>>,
    /// S3 clients by bucket.
    stores: std::sync::Mutex<
        std::collections::HashMap<String, std::sync::Arc<object_store::aws::AmazonS3>>,
    >,
}

/// What one commit (one or more snapshots, see [`commit_group`]) changes.
#[derive(Debug, Clone, Default, PartialEq)]
struct Plan {
    operation: String,
    timestamp_ms: i64,
    added: Vec<String>,
    removed: Vec<String>,
    /// Delete files (merge-on-read), not applied.
    delete_files: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Position {
    snapshot: Option<i64>,
    /// The last snapshot of the commit being applied and how many of its
    /// steps are stored.
    applying: Option<(i64, usize)>,
}

impl Position {
    fn from_json(v: &Value) -> Position {
        Position {
            snapshot: v.get("snapshot").and_then(Value::as_i64),
            applying: v
                .get("applying")
                .and_then(|a| Some((a.get(0)?.as_i64()?, a.get(1)?.as_u64()? as usize))),
        }
    }
    fn to_json(&self) -> Value {
        serde_json::json!({
            "snapshot": self.snapshot,
            "applying": self.applying.map(|(s, n)| serde_json::json!([s, n])),
        })
    }
}

fn unavailable(e: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("iceberg: {e}"))
}

impl IcebergSource {
    pub fn new(connector: &Connector, spec: &DatasetSpec, source: &Source) -> Result<Self> {
        check_cdc(source.cdc)?;
        let Connector::Iceberg {
            name,
            catalog_uri,
            table,
            warehouse,
        } = connector
        else {
            return Err(Error::Internal("not an Iceberg connector".into()));
        };
        let bad = |m: String| Error::InvalidDefinition(format!("Iceberg {name}: {m}"));
        let catalog = if let Some(path) = catalog_uri.strip_prefix("sqlite:") {
            // SQLAlchemy's form: sqlite:///rel/path, sqlite:////abs/path
            // (what follows the third slash is the path).
            let path = path
                .strip_prefix("///")
                .or_else(|| path.strip_prefix("//"))
                .unwrap_or(path);
            Catalog::Sqlite(std::path::PathBuf::from(path))
        } else if catalog_uri.starts_with("postgresql") || catalog_uri.starts_with("postgres:") {
            // SQLAlchemy's postgresql+psycopg2://... is libpq's URI once
            // the driver is dropped.
            let uri = match catalog_uri.split_once("://") {
                Some((_, rest)) => format!("postgresql://{rest}"),
                None => catalog_uri.clone(),
            };
            Catalog::Postgres(Box::new(
                uri.parse::<tokio_postgres::Config>()
                    .map_err(|e| bad(format!("catalog_uri: {e}")))?,
            ))
        } else if catalog_uri.starts_with("http://") || catalog_uri.starts_with("https://") {
            Catalog::Rest {
                uri: catalog_uri.trim_end_matches('/').to_string(),
                warehouse: warehouse.clone(),
            }
        } else {
            return Err(bad(format!(
                "catalog_uri {catalog_uri:?} (a REST catalog http(s)://..., or a SQL catalog sqlite:... / postgresql://...)"
            )));
        };
        let (namespace, tname) = table
            .rsplit_once('.')
            .ok_or_else(|| bad(format!("table {table:?} must be \"namespace.table\"")))?;
        let key = thyme_model::validate::key_names(spec);
        Ok(IcebergSource {
            catalog,
            name: name.clone(),
            namespace: namespace.to_string(),
            table: tname.to_string(),
            keyed: !key.is_empty(),
            key,
            ts_field: thyme_model::validate::timestamp_field(spec)
                .map(|f| f.name.clone())
                .unwrap_or_default(),
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::Internal(format!("runtime: {e}")))?,
            plan: std::sync::Mutex::new(None),
            stores: std::sync::Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// `namespace.table`, and the catalog (no credentials).
    pub fn describe(&self) -> String {
        let at = match &self.catalog {
            Catalog::Sqlite(p) => format!("sqlite:{}", p.display()),
            Catalog::Postgres(c) => format!(
                "postgresql://{}/{}",
                c.get_hosts()
                    .first()
                    .map(|h| match h {
                        tokio_postgres::config::Host::Tcp(s) => s.clone(),
                        #[allow(unreachable_patterns)]
                        _ => "local".into(),
                    })
                    .unwrap_or_default(),
                c.get_dbname().unwrap_or("")
            ),
            Catalog::Rest { uri, .. } => uri.clone(),
        };
        format!("{}.{} in {at}", self.namespace, self.table)
    }

    pub fn summary(&self, position: &Value) -> Value {
        serde_json::json!({
            "table": self.describe(),
            "snapshot": position.get("snapshot").cloned().unwrap_or(Value::Null),
        })
    }

    /// The current metadata file's location, from the catalog.
    fn metadata_location(&self) -> Result<String> {
        match &self.catalog {
            Catalog::Sqlite(path) => {
                let db = rusqlite::Connection::open_with_flags(
                    path,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
                )
                .map_err(|e| unavailable(format!("catalog {}: {e}", path.display())))?;
                let mut st = db
                    .prepare(
                        "SELECT catalog_name, metadata_location FROM iceberg_tables \
                         WHERE table_namespace = ?1 AND table_name = ?2",
                    )
                    .map_err(|e| unavailable(format!("catalog {}: {e}", path.display())))?;
                let rows: Vec<(String, Option<String>)> = st
                    .query_map([&self.namespace, &self.table], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .and_then(|it| it.collect())
                    .map_err(|e| unavailable(format!("catalog {}: {e}", path.display())))?;
                self.pick(rows)
            }
            Catalog::Postgres(config) => self.runtime.block_on(async {
                let (client, conn) = config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(|e| unavailable(crate::postgres::pg_error(&e)))?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                let rows = client
                    .query(
                        "SELECT catalog_name::text, metadata_location::text FROM iceberg_tables \
                         WHERE table_namespace = $1 AND table_name = $2",
                        &[&self.namespace, &self.table],
                    )
                    .await
                    .map_err(|e| unavailable(crate::postgres::pg_error(&e)))?;
                self.pick(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
            }),
            Catalog::Rest { uri, warehouse } => self.runtime.block_on(async {
                let http = reqwest::Client::builder()
                    .timeout(std::time::Duration::from_secs(30))
                    .build()
                    .map_err(unavailable)?;
                let mut cfg = http.get(format!("{uri}/v1/config"));
                if let Some(w) = warehouse {
                    cfg = cfg.query(&[("warehouse", w)]);
                }
                let cfg: Value = get_json(cfg).await?;
                let prefix = cfg
                    .pointer("/overrides/prefix")
                    .or_else(|| cfg.pointer("/defaults/prefix"))
                    .and_then(Value::as_str)
                    .map(|p| format!("/{}", p.trim_matches('/')))
                    .unwrap_or_default();
                let ns = self
                    .namespace
                    .split('.')
                    .map(url_escape)
                    .collect::<Vec<_>>()
                    .join("%1F");
                let t: Value = get_json(http.get(format!(
                    "{uri}/v1{prefix}/namespaces/{ns}/tables/{}",
                    url_escape(&self.table)
                )))
                .await?;
                t.get("metadata-location")
                    .and_then(Value::as_str)
                    .map(String::from)
                    .ok_or_else(|| unavailable("the catalog gave no metadata-location"))
            }),
        }
    }

    fn pick(&self, rows: Vec<(String, Option<String>)>) -> Result<String> {
        let found = rows
            .iter()
            .find(|(c, _)| *c == self.name)
            .or_else(|| (rows.len() == 1).then(|| &rows[0]));
        match found {
            Some((_, Some(loc))) => Ok(loc.clone()),
            Some((_, None)) => Err(unavailable(format!(
                "table {}.{} has no metadata yet",
                self.namespace, self.table
            ))),
            None if rows.is_empty() => Err(unavailable(format!(
                "no table {}.{} in the catalog",
                self.namespace, self.table
            ))),
            None => Err(unavailable(format!(
                "several catalogs hold {}.{} and none is named {} (name the Iceberg connector like the catalog)",
                self.namespace, self.table, self.name
            ))),
        }
    }

    /// A file of the table: `file://` (or a bare path) or
    /// `s3://bucket/key` (one client per bucket, kept).
    fn read(&self, location: &str) -> Result<Vec<u8>> {
        let Some(rest) = location
            .strip_prefix("s3://")
            .or_else(|| location.strip_prefix("s3a://"))
        else {
            let path = location.strip_prefix("file://").unwrap_or(location);
            return std::fs::read(path).map_err(|e| unavailable(format!("{location}: {e}")));
        };
        let (bucket, key) = rest
            .split_once('/')
            .ok_or_else(|| unavailable(format!("{location}: no key")))?;
        let store = {
            let mut stores = self.stores.lock().expect("lock");
            match stores.get(bucket) {
                Some(s) => s.clone(),
                None => {
                    let s = std::sync::Arc::new(
                        crate::files::s3_store(bucket, None, None)
                            .map_err(|e| unavailable(format!("{location}: {e}")))?,
                    );
                    stores.insert(bucket.to_string(), s.clone());
                    s
                }
            }
        };
        let path = object_store::path::Path::from(key);
        self.runtime
            .block_on(async {
                use object_store::ObjectStoreExt;
                store.get(&path).await?.bytes().await
            })
            .map(|b| b.to_vec())
            .map_err(|e| unavailable(format!("{location}: {e}")))
    }

    /// The data files snapshot `id` of `metadata` adds and removes.
    fn snapshot_files(&self, metadata: &Value, id: i64, plan: &mut Plan) -> Result<()> {
        let snap = snapshot(metadata, id)
            .ok_or_else(|| unavailable(format!("snapshot {id} is not in the metadata")))?;
        let operation = snap
            .pointer("/summary/operation")
            .and_then(Value::as_str)
            .unwrap_or("append");
        if !plan.operation.split('+').any(|o| o == operation) {
            if !plan.operation.is_empty() {
                plan.operation.push('+');
            }
            plan.operation.push_str(operation);
        }
        plan.timestamp_ms = snap
            .get("timestamp-ms")
            .and_then(Value::as_i64)
            .unwrap_or(plan.timestamp_ms);
        let list = snap
            .get("manifest-list")
            .and_then(Value::as_str)
            .ok_or_else(|| unavailable(format!("snapshot {id} has no manifest-list")))?;
        for m in avro_records(&self.read(list)?)? {
            // Only manifests this snapshot wrote hold its changes.
            if m.get("added_snapshot_id").and_then(Value::as_i64) != Some(id) {
                continue;
            }
            let path = m
                .get("manifest_path")
                .and_then(Value::as_str)
                .ok_or_else(|| unavailable("a manifest without manifest_path"))?;
            for e in avro_records(&self.read(path)?)? {
                let status = e.get("status").and_then(Value::as_i64).unwrap_or(0);
                let by = e.get("snapshot_id").and_then(Value::as_i64).unwrap_or(id);
                if by != id || status == 0 {
                    continue;
                }
                let df = e.get("data_file").cloned().unwrap_or(Value::Null);
                let file = df
                    .get("file_path")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let content = df.get("content").and_then(Value::as_i64).unwrap_or(0);
                let format = df
                    .get("file_format")
                    .and_then(Value::as_str)
                    .unwrap_or("PARQUET");
                if content != 0 || !format.eq_ignore_ascii_case("parquet") {
                    if status == 1 {
                        plan.delete_files
                            .push(format!("{file} ({format}, content {content})"));
                    }
                } else if status == 1 {
                    plan.added.push(file);
                } else if let Some(i) = plan.added.iter().position(|f| *f == file) {
                    // Added and removed within the commit: never visible.
                    plan.added.remove(i);
                } else {
                    plan.removed.push(file);
                }
            }
        }
        Ok(())
    }

    /// The next step after `position`: one data file of the next commit's
    /// appends, or the whole of a commit that rewrites files, as a chunk.
    pub fn next(&self, position: &Value) -> Result<Option<Chunk>> {
        let mut pos = Position::from_json(position);
        let Some((last, plan)) = self.next_commit(&pos)? else {
            return Ok(None);
        };
        let done = match pos.applying {
            Some((s, n)) if s == last => n,
            _ => 0,
        };
        let mut chunk = Chunk::default();
        let finished = if plan.removed.is_empty() {
            // Appends: one step per added file.
            if let Some(file) = plan.added.get(done) {
                crate::files::parse_parquet(file, self.read(file)?, &mut chunk);
            }
            let finished = done + 1 >= plan.added.len();
            if finished {
                self.delete_file_reports(&plan, last, &mut chunk);
            }
            finished
        } else {
            // A rewrite: the rows it adds and removes, compared.
            self.rewrite(&plan, last, &mut chunk)?;
            self.delete_file_reports(&plan, last, &mut chunk);
            true
        };
        if finished {
            pos.snapshot = Some(last);
            pos.applying = None;
            *self.plan.lock().expect("lock") = None;
        } else {
            pos.applying = Some((last, done + 1));
        }
        chunk.position = pos.to_json();
        Ok(Some(chunk))
    }

    /// The commit after `pos` (its last snapshot id) and what it changes.
    /// In the middle of a commit whose plan is kept, the catalog is not
    /// asked again: a committed snapshot's files never change.
    fn next_commit(&self, pos: &Position) -> Result<Option<(i64, Plan)>> {
        if let (Some((s, _)), Some((c, p))) =
            (pos.applying, self.plan.lock().expect("lock").as_ref())
        {
            if s == *c {
                return Ok(Some((s, p.clone())));
            }
        }
        let location = self.metadata_location()?;
        let metadata: Value = serde_json::from_slice(&self.read(&location)?)
            .map_err(|e| unavailable(format!("metadata {location}: {e}")))?;
        let Some(current) = metadata.get("current-snapshot-id").and_then(Value::as_i64) else {
            return Ok(None); // no snapshot yet
        };
        if current == -1 || pos.snapshot == Some(current) {
            return Ok(None);
        }
        // The snapshots after the stored one, oldest first.
        let mut chain = Vec::new();
        let mut at = Some(current);
        while let Some(id) = at {
            if Some(id) == pos.snapshot {
                break;
            }
            chain.push(id);
            at = snapshot(&metadata, id)
                .and_then(|s| s.get("parent-snapshot-id"))
                .and_then(Value::as_i64);
            if at.is_none() && pos.snapshot.is_some() {
                return Err(unavailable(format!(
                    "the table's history no longer reaches snapshot {} (expired or replaced); \
                     recommit the dataset to read it again",
                    pos.snapshot.unwrap_or_default()
                )));
            }
        }
        chain.reverse();
        let group = commit_group(&metadata, &chain);
        let Some(&last) = group.last() else {
            return Ok(None);
        };
        let mut plan = Plan::default();
        for &id in group {
            self.snapshot_files(&metadata, id, &mut plan)?;
        }
        *self.plan.lock().expect("lock") = Some((last, plan.clone()));
        Ok(Some((last, plan)))
    }

    /// Reports of the delete files (merge-on-read) a commit adds, which are
    /// not applied; made once, with the commit's last step.
    fn delete_file_reports(&self, plan: &Plan, id: i64, chunk: &mut Chunk) {
        for f in &plan.delete_files {
            chunk.unparsed.push(Rejection {
                location: format!("snapshot {id} {f}"),
                field: None,
                value: None,
                error: "a delete file (merge-on-read) is not applied".into(),
            });
        }
    }

    /// A commit that removes data files (a copy-on-write overwrite or
    /// delete): the rows of its added files that were not in its removed
    /// files are new (upserts, or appends on a keyless dataset); on a keyed
    /// dataset the keys of removed rows that no added row carries are
    /// deleted at the commit's time; on a keyless dataset the removed rows
    /// are kept and one report says how many.
    fn rewrite(&self, plan: &Plan, id: i64, chunk: &mut Chunk) -> Result<()> {
        let mut removed: std::collections::HashMap<String, (usize, Map<String, Value>, Location)> =
            std::collections::HashMap::new();
        for f in &plan.removed {
            let mut c = Chunk::default();
            crate::files::parquet_rows(f, self.read(f)?, &mut c);
            chunk.unparsed.append(&mut c.unparsed);
            for (row, loc) in c.rows.into_iter().zip(c.locations) {
                let text = serde_json::to_string(&row).unwrap_or_default();
                removed.entry(text).or_insert((0, row, loc)).0 += 1;
            }
        }
        let key_of = |row: &Map<String, Value>| -> String {
            self.key
                .iter()
                .map(|k| row.get(k).map(Value::to_string).unwrap_or_default())
                .collect::<Vec<_>>()
                .join("\u{1f}")
        };
        let mut kept_keys = BTreeSet::new();
        for f in &plan.added {
            let mut c = Chunk::default();
            crate::files::parquet_rows(f, self.read(f)?, &mut c);
            chunk.unparsed.append(&mut c.unparsed);
            for (row, loc) in c.rows.into_iter().zip(c.locations) {
                if self.keyed {
                    kept_keys.insert(key_of(&row));
                }
                let text = serde_json::to_string(&row).unwrap_or_default();
                match removed.get_mut(&text) {
                    // The same row, copied into the rewritten file.
                    Some(e) if e.0 > 0 => e.0 -= 1,
                    _ => chunk.push(row, loc, false),
                }
            }
        }
        let mut gone: Vec<(Map<String, Value>, Location)> = removed
            .into_values()
            .filter(|(n, _, _)| *n > 0)
            .map(|(_, row, loc)| (row, loc))
            .collect();
        gone.sort_by_cached_key(|g| g.1.to_string());
        if !self.keyed {
            if !gone.is_empty() {
                chunk.unparsed.push(Rejection {
                    location: format!("snapshot {id} ({})", plan.operation),
                    field: None,
                    value: Some(format!("{} rows removed", gone.len())),
                    error: "rows removed from the table are kept in a keyless dataset (events are not taken back)".into(),
                });
            }
            return Ok(());
        }
        let mut seen = BTreeSet::new();
        for (row, loc) in gone {
            let k = key_of(&row);
            if kept_keys.contains(&k) || !seen.insert(k) {
                continue;
            }
            let mut del: Map<String, Value> = row
                .into_iter()
                .filter(|(name, _)| self.key.contains(name))
                .collect();
            del.insert(self.ts_field.clone(), Value::from(plan.timestamp_ms));
            chunk.push(del, format!("{loc} (removed by snapshot {id})"), true);
        }
        Ok(())
    }
}

/// The first commit of `chain` (snapshot ids, oldest first): the
/// snapshots that became visible together. A writer may add several
/// snapshots in one commit (pyiceberg's overwrite is a "delete" then an
/// "append"); readers never saw the state between them, so they are
/// applied as one change. A snapshot belongs to the first commit (a
/// `metadata-log` entry's time, or the metadata's `last-updated-ms`) at or
/// after its own time.
fn commit_group<'a>(metadata: &Value, chain: &'a [i64]) -> &'a [i64] {
    let mut commits: Vec<i64> = metadata
        .get("metadata-log")
        .and_then(Value::as_array)
        .map(|log| {
            log.iter()
                .filter_map(|e| e.get("timestamp-ms").and_then(Value::as_i64))
                .collect()
        })
        .unwrap_or_default();
    commits.extend(metadata.get("last-updated-ms").and_then(Value::as_i64));
    commits.sort_unstable();
    let commit_of = |id: i64| {
        let ts = snapshot(metadata, id)
            .and_then(|s| s.get("timestamp-ms"))
            .and_then(Value::as_i64)
            .unwrap_or(i64::MAX);
        commits
            .iter()
            .copied()
            .find(|&c| c >= ts)
            .unwrap_or(i64::MAX)
    };
    let Some(&first) = chain.first() else {
        return chain;
    };
    let c = commit_of(first);
    let n = chain.iter().take_while(|&&id| commit_of(id) == c).count();
    &chain[..n]
}

/// Whether `cdc` is one an Iceberg source carries.
fn check_cdc(cdc: Cdc) -> Result<()> {
    match cdc {
        Cdc::Append | Cdc::Upsert => Ok(()),
        other => Err(Error::InvalidDefinition(format!(
            "an Iceberg source carries cdc append (keyless) or upsert (keyed), not {}",
            other.as_str()
        ))),
    }
}

fn snapshot(metadata: &Value, id: i64) -> Option<&Value> {
    metadata
        .get("snapshots")?
        .as_array()?
        .iter()
        .find(|s| s.get("snapshot-id").and_then(Value::as_i64) == Some(id))
}

async fn get_json(req: reqwest::RequestBuilder) -> Result<Value> {
    let resp = req.send().await.map_err(unavailable)?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(unavailable)?;
    if !status.is_success() {
        return Err(unavailable(format!(
            "REST catalog answered {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        )));
    }
    serde_json::from_slice(&body).map_err(|e| unavailable(format!("REST catalog: {e}")))
}

fn url_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The records of an Avro object container file, as JSON.
fn avro_records(bytes: &[u8]) -> Result<Vec<Value>> {
    let reader = apache_avro::Reader::new(bytes).map_err(|e| unavailable(format!("avro: {e}")))?;
    let mut out = Vec::new();
    for v in reader {
        let v = v.map_err(|e| unavailable(format!("avro: {e}")))?;
        out.push(avro_json(v));
    }
    Ok(out)
}

fn avro_json(v: apache_avro::types::Value) -> Value {
    use apache_avro::types::Value as A;
    match v {
        A::Null => Value::Null,
        A::Boolean(b) => Value::Bool(b),
        A::Int(i) | A::Date(i) | A::TimeMillis(i) => Value::from(i),
        A::Long(i)
        | A::TimeMicros(i)
        | A::TimestampMillis(i)
        | A::TimestampMicros(i)
        | A::LocalTimestampMillis(i)
        | A::LocalTimestampMicros(i) => Value::from(i),
        A::Float(f) => Value::from(f as f64),
        A::Double(f) => Value::from(f),
        A::String(s) | A::Enum(_, s) => Value::String(s),
        A::Bytes(b) | A::Fixed(_, b) => Value::String(String::from_utf8_lossy(&b).into_owned()),
        A::Union(_, b) => avro_json(*b),
        A::Array(a) => Value::Array(a.into_iter().map(avro_json).collect()),
        A::Map(m) => Value::Object(m.into_iter().map(|(k, v)| (k, avro_json(v))).collect()),
        A::Record(fields) => Value::Object(
            fields
                .into_iter()
                .map(|(k, v)| (k, avro_json(v)))
                .collect::<Map<String, Value>>(),
        ),
        other => Value::String(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip() {
        let p = Position {
            snapshot: Some(5),
            applying: Some((9, 2)),
        };
        assert_eq!(Position::from_json(&p.to_json()), p);
        assert_eq!(Position::from_json(&Value::Null), Position::default());
    }

    #[test]
    fn snapshots_of_one_commit_go_together() {
        let m = serde_json::json!({
            "last-updated-ms": 791,
            "metadata-log": [{"timestamp-ms": 720}, {"timestamp-ms": 750}, {"timestamp-ms": 761}],
            "snapshots": [
                {"snapshot-id": 1, "timestamp-ms": 750},
                {"snapshot-id": 2, "timestamp-ms": 761},
                {"snapshot-id": 3, "timestamp-ms": 785},
                {"snapshot-id": 4, "timestamp-ms": 791},
            ],
        });
        assert_eq!(commit_group(&m, &[1, 2, 3, 4]), &[1]);
        assert_eq!(commit_group(&m, &[2, 3, 4]), &[2]);
        assert_eq!(commit_group(&m, &[3, 4]), &[3, 4]);
        assert_eq!(commit_group(&m, &[]), &[] as &[i64]);
    }

    #[test]
    fn escapes_names() {
        assert_eq!(url_escape("a b/c"), "a%20b%2Fc");
    }
}
