//! Files in a local directory: CSV with a header line, JSON lines (one
//! object per line), or Parquet. Every poll lists the directory (the files whose name
//! starts with the source's `prefix`, in name order) and reads, one at a
//! time, those not read yet; a file's name goes into the source's position
//! in the same write as its rows, so each file is ingested exactly once.
//!
//! - A file modified in the last [`SETTLE`] is left for a later poll, so a
//!   file still being written is not read half-way; writers should still
//!   write elsewhere and rename into the directory.
//! - A line that does not parse (a CSV record with the wrong number of
//!   fields, a JSON line that is not an object) is skipped and recorded;
//!   a file that cannot be read at all is recorded once and not retried.
//! - CSV values are text; each is read as its field's type (a number for
//!   `int` / `float`, `true` / `false` for `bool`, JSON for lists, maps and
//!   structs, an empty value as null for optional fields).
//! - Parquet columns are read by name; a file whose columns do not fit the
//!   dataset (a required column missing) has all its rows skipped, with
//!   the reason. A file whose columns fit is stored as Arrow, without a
//!   detour through JSON.
//! - `s3://bucket` paths (`S3(...).bucket(...)`) are read the same way
//!   through `object_store` (AWS S3 or any S3-compatible store at the
//!   connector's `endpoint`); an object is identified by its key, and is
//!   complete once listed (no settle time).

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt};

use serde_json::{Map, Value};
use thyme_model::payload::{Connector, Dataset as DatasetSpec, Preproc, Source};
use thyme_model::types::Type;
use thyme_table::error::{Error, Result};

use crate::chunk::{ArrowRows, Chunk, Location, Rejection};

/// How long a file must have been left alone before it is read.
pub const SETTLE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    JsonLines,
    Parquet,
}

/// Where the files are.
enum Place {
    Local(PathBuf),
    Bucket {
        bucket: String,
        store: Arc<dyn ObjectStore>,
        runtime: tokio::runtime::Runtime,
    },
}

/// A `Files(...).directory(...)` or `S3(...).bucket(...)` source.
pub struct FilesSource {
    place: Place,
    format: Format,
    prefix: String,
    /// The type each CSV column is read as (by column name).
    types: HashMap<String, Type>,
}

/// The files already read, from a position.
fn read_set(position: &Value) -> BTreeSet<String> {
    position
        .get("files")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn position_of(read: &BTreeSet<String>) -> Value {
    serde_json::json!({ "files": read.iter().collect::<Vec<_>>() })
}

/// A CSV cell as a JSON value of `ty`; text that is not one is kept as
/// text, for the dataset check to report.
fn cell(text: &str, ty: Option<&Type>) -> Value {
    let Some(ty) = ty else {
        return Value::String(text.to_string());
    };
    if text.is_empty() && ty.is_optional() {
        return Value::Null;
    }
    let base = match ty.non_optional() {
        Type::Between(b) => &b.base,
        Type::OneOf(o) => &o.base,
        t => t,
    };
    let parsed = match base {
        Type::Int => text.trim().parse::<i64>().ok().map(Value::from),
        Type::Float => text
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number),
        Type::Bool => match text.trim().to_ascii_lowercase().as_str() {
            "true" | "t" | "1" => Some(Value::Bool(true)),
            "false" | "f" | "0" => Some(Value::Bool(false)),
            _ => None,
        },
        Type::List(_) | Type::Map(_) | Type::Struct(_) | Type::Embedding(_) => {
            serde_json::from_str(text).ok()
        }
        _ => None,
    };
    parsed.unwrap_or_else(|| Value::String(text.to_string()))
}

impl FilesSource {
    /// The source of `connector` (a `files` connector with a local path)
    /// feeding `spec` through `source`.
    pub fn new(connector: &Connector, spec: &DatasetSpec, source: &Source) -> Result<Self> {
        let Connector::Files {
            path,
            format,
            prefix,
            aws_access_key_id,
            aws_secret_access_key,
            endpoint,
            ..
        } = connector
        else {
            return Err(Error::Internal("not a files connector".into()));
        };
        let format = match format.as_str() {
            "csv" => Format::Csv,
            "json" => Format::JsonLines,
            "parquet" => Format::Parquet,
            other => {
                return Err(Error::Unsupported(format!(
                    "files in format {other} (csv, json lines and parquet are read)"
                )))
            }
        };
        let mut types = HashMap::new();
        for f in &spec.fields {
            let column = match source.preproc.get(&f.name) {
                Some(Preproc::Ref(other)) => other.clone(),
                Some(Preproc::Const(_)) => continue,
                None => f.name.clone(),
            };
            types.insert(column, f.ty.clone());
        }
        let place = match path.strip_prefix("s3://") {
            None => Place::Local(PathBuf::from(path)),
            Some(rest) => {
                let bucket = rest.trim_end_matches('/').to_string();
                let store = s3_store(
                    &bucket,
                    aws_access_key_id
                        .as_deref()
                        .zip(aws_secret_access_key.as_deref()),
                    endpoint.as_deref(),
                )
                .map_err(|e| Error::InvalidDefinition(format!("S3 bucket {bucket}: {e}")))?;
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| Error::Internal(format!("runtime: {e}")))?;
                Place::Bucket {
                    bucket,
                    store: Arc::new(store),
                    runtime,
                }
            }
        };
        Ok(FilesSource {
            place,
            format,
            prefix: prefix.clone().unwrap_or_default(),
            types,
        })
    }

    /// Where the files are read from (a directory or `s3://bucket`).
    pub fn describe(&self) -> String {
        match &self.place {
            Place::Local(d) => d.display().to_string(),
            Place::Bucket { bucket, .. } => format!("s3://{bucket}"),
        }
    }

    /// Files ready to read and not read yet, in name order.
    fn pending(&self, read: &BTreeSet<String>) -> Result<Vec<String>> {
        let dir = match &self.place {
            Place::Local(d) => d,
            Place::Bucket {
                bucket,
                store,
                runtime,
            } => {
                let metas: Vec<object_store::ObjectMeta> = runtime
                    .block_on(store.list(None).try_collect())
                    .map_err(|e| Error::Unavailable(format!("cannot list s3://{bucket}: {e}")))?;
                let mut out: Vec<String> = metas
                    .into_iter()
                    .map(|m| m.location.to_string())
                    .filter(|k| k.starts_with(&self.prefix) && !read.contains(k))
                    .collect();
                out.sort();
                return Ok(out);
            }
        };
        let entries = std::fs::read_dir(dir)
            .map_err(|e| Error::Unavailable(format!("cannot list {}: {e}", dir.display())))?;
        let now = SystemTime::now();
        let mut out = Vec::new();
        for e in entries.flatten() {
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            if !name.starts_with(&self.prefix) || name.starts_with('.') || read.contains(&name) {
                continue;
            }
            let Ok(meta) = e.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let settled = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .is_some_and(|age| age >= SETTLE);
            if settled {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }

    /// The next file not read yet, as a chunk whose position adds it to
    /// the files read (`None`: nothing new).
    pub fn next(&self, position: &Value) -> Result<Option<Chunk>> {
        let mut read = read_set(position);
        let Some(name) = self.pending(&read)?.into_iter().next() else {
            return Ok(None);
        };
        let mut chunk = Chunk::default();
        let bytes = match &self.place {
            Place::Local(d) => std::fs::read(d.join(&name)).map_err(|e| e.to_string()),
            Place::Bucket {
                bucket,
                store,
                runtime,
            } => {
                let path = object_store::path::Path::from(name.as_str());
                match runtime.block_on(async { store.get(&path).await?.bytes().await }) {
                    Ok(b) => Ok(b.to_vec()),
                    // Unreachable: try again later; gone since listed: record it.
                    Err(object_store::Error::NotFound { .. }) => {
                        Err("deleted before it was read".into())
                    }
                    Err(e) => {
                        return Err(Error::Unavailable(format!(
                            "cannot read s3://{bucket}/{name}: {e}"
                        )))
                    }
                }
            }
        };
        match bytes {
            Ok(bytes) => match self.format {
                Format::Csv => self.parse_csv(&name, &bytes, &mut chunk),
                Format::JsonLines => parse_json_lines(&name, &bytes, &mut chunk),
                Format::Parquet => parse_parquet(&name, bytes, &mut chunk),
            },
            Err(e) => chunk.unparsed.push(Rejection {
                location: name.clone(),
                field: None,
                value: None,
                error: format!("cannot read the file: {e}"),
            }),
        }
        read.insert(name);
        chunk.position = position_of(&read);
        Ok(Some(chunk))
    }

    fn parse_csv(&self, name: &str, bytes: &[u8], chunk: &mut Chunk) {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(false)
            .from_reader(bytes);
        let headers: Vec<String> = match reader.headers() {
            Ok(h) => h.iter().map(|s| s.trim().to_string()).collect(),
            Err(e) => {
                chunk.unparsed.push(Rejection {
                    location: format!("{name} line 1"),
                    field: None,
                    value: None,
                    error: format!("the header does not parse: {e}"),
                });
                return;
            }
        };
        let types: Vec<Option<&Type>> = headers.iter().map(|h| self.types.get(h)).collect();
        let file: Arc<str> = Arc::from(name);
        let mut record = csv::StringRecord::new();
        loop {
            let line = reader.position().line() + 1;
            match reader.read_record(&mut record) {
                Ok(false) => break,
                Ok(true) => {
                    let mut row = Map::with_capacity(headers.len());
                    for ((h, ty), v) in headers.iter().zip(&types).zip(record.iter()) {
                        row.insert(h.clone(), cell(v, *ty));
                    }
                    let line = record.position().map_or(line, |p| p.line());
                    chunk.push(
                        row,
                        Location::Line {
                            file: file.clone(),
                            line,
                        },
                        false,
                    );
                }
                Err(e) => {
                    let at = e.position().map_or(line, |p| p.line());
                    chunk.unparsed.push(Rejection {
                        location: format!("{name} line {at}"),
                        field: None,
                        value: None,
                        error: format!("malformed CSV record: {e}"),
                    });
                    // An I/O or UTF-8 problem ends the file; a record with
                    // the wrong number of fields does not.
                    if !matches!(
                        e.kind(),
                        csv::ErrorKind::UnequalLengths { .. } | csv::ErrorKind::Utf8 { .. }
                    ) {
                        break;
                    }
                }
            }
        }
    }
}

/// A client for S3 bucket `bucket`: keys from the definition or else the
/// server's `AWS_*` environment, region from the environment (default
/// `us-east-1`), and for an S3-compatible store its `endpoint` with
/// path-style requests.
pub(crate) fn s3_store(
    bucket: &str,
    keys: Option<(&str, &str)>,
    endpoint: Option<&str>,
) -> object_store::Result<object_store::aws::AmazonS3> {
    let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
    if std::env::var_os("AWS_REGION").is_none() && std::env::var_os("AWS_DEFAULT_REGION").is_none()
    {
        b = b.with_region("us-east-1");
    }
    if let Some((k, s)) = keys {
        b = b.with_access_key_id(k).with_secret_access_key(s);
    }
    if let Some(e) = endpoint {
        b = b
            .with_endpoint(e)
            .with_allow_http(e.starts_with("http://"))
            .with_virtual_hosted_style_request(false);
    }
    b.build()
}

/// A Parquet file's batches, as read, into `chunk` (stored as Arrow when
/// they fit the dataset: see [`crate::chunk`]).
pub(crate) fn parse_parquet(name: &str, bytes: Vec<u8>, chunk: &mut Chunk) {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let file_error = |chunk: &mut Chunk, e: String| {
        chunk.unparsed.push(Rejection {
            location: name.to_string(),
            field: None,
            value: None,
            error: format!("not a readable Parquet file: {e}"),
        })
    };
    let reader = match ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
        .and_then(|b| b.with_batch_size(65_536).build())
    {
        Ok(r) => r,
        Err(e) => return file_error(chunk, e.to_string()),
    };
    let batches: std::result::Result<Vec<_>, _> = reader.collect();
    match batches {
        Ok(batches) => {
            chunk.arrow = Some(ArrowRows {
                file: Arc::from(name),
                batches,
            })
        }
        Err(e) => file_error(chunk, e.to_string()),
    }
}

/// A Parquet file's rows as JSON objects (for comparing rows one by one).
pub(crate) fn parquet_rows(name: &str, bytes: Vec<u8>, chunk: &mut Chunk) {
    parse_parquet(name, bytes, chunk);
    if let Some(rows) = chunk.arrow.take() {
        if let Err(e) = crate::chunk::arrow_to_rows(&rows, chunk) {
            chunk.unparsed.push(Rejection {
                location: name.to_string(),
                field: None,
                value: None,
                error: format!("not a readable Parquet file: {e}"),
            });
        }
    }
}

fn parse_json_lines(name: &str, bytes: &[u8], chunk: &mut Chunk) {
    let file: Arc<str> = Arc::from(name);
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        let line_no = i + 1;
        let text = match std::str::from_utf8(line) {
            Ok(t) => t.trim(),
            Err(_) => {
                chunk.unparsed.push(Rejection {
                    location: format!("{name} line {line_no}"),
                    field: None,
                    value: None,
                    error: "not UTF-8".into(),
                });
                continue;
            }
        };
        if text.is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(m)) => chunk.push(
                m,
                Location::Line {
                    file: file.clone(),
                    line: line_no as u64,
                },
                false,
            ),
            Ok(other) => chunk.unparsed.push(Rejection {
                location: format!("{name} line {line_no}"),
                field: None,
                value: Some(thyme_model::values::short(&other)),
                error: "a JSON line must be an object".into(),
            }),
            Err(e) => chunk.unparsed.push(Rejection {
                location: format!("{name} line {line_no}"),
                field: None,
                value: Some(text.chars().take(80).collect()),
                error: format!("not JSON: {e}"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_take_their_field_types() {
        assert_eq!(cell("12", Some(&Type::Int)), Value::from(12));
        assert_eq!(cell("x", Some(&Type::Int)), Value::from("x"));
        assert_eq!(cell("1.5", Some(&Type::Float)), Value::from(1.5));
        assert_eq!(cell("true", Some(&Type::Bool)), Value::Bool(true));
        assert_eq!(
            cell("", Some(&Type::Optional(Box::new(Type::Int)))),
            Value::Null
        );
        assert_eq!(cell("", Some(&Type::Str)), Value::from(""));
        assert_eq!(
            cell("[1,2]", Some(&Type::List(Box::new(Type::Int)))),
            serde_json::json!([1, 2])
        );
        assert_eq!(
            cell("2024-01-01", Some(&Type::Datetime)),
            Value::from("2024-01-01")
        );
    }

    #[test]
    fn json_lines_skip_what_is_not_an_object() {
        let mut c = Chunk::default();
        parse_json_lines(
            "f.jsonl",
            b"{\"a\": 1}\n\n[1]\nnot json\n{\"a\": 2}\n",
            &mut c,
        );
        assert_eq!(c.rows.len(), 2);
        let at: Vec<String> = c.locations.iter().map(ToString::to_string).collect();
        assert_eq!(at, vec!["f.jsonl line 1", "f.jsonl line 5"]);
        assert_eq!(c.unparsed.len(), 2);
        assert_eq!(c.unparsed[0].location, "f.jsonl line 3");
    }
}
