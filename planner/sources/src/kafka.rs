//! A Kafka topic of JSON messages (`Kafka(...).topic("t")`), with `rdkafka`
//! (librdkafka, built in).
//!
//! Every partition of the topic is read, from the start for a new source.
//! **The offsets live in Thyme's store**, in the source's position
//! (`{"offsets": {"<partition>": <next offset>}}`), written in the same
//! atomic write as the rows they carry; Kafka's consumer-group commits are
//! never used (the consumer is assigned its partitions, it does not join a
//! group). A restart therefore resumes exactly after the last stored
//! message: nothing is lost and nothing is stored twice. Partitions added to
//! the topic later are found (the metadata is read again every
//! [`METADATA_EVERY`]) and read from their start.
//!
//! Messages are read with `isolation.level=read_committed`: records of
//! aborted transactions are not ingested.
//!
//! What a message becomes, by the source's `cdc`:
//! - `append` / `upsert` / `delete`: the message's value is one JSON object,
//!   one row (stored as the cdc says);
//! - `debezium`: a Debezium JSON change event (with or without the
//!   `{"schema", "payload"}` wrapper): `op` `c` / `r` / `u` upserts `after`,
//!   `d` deletes `before` (only its key fields are needed); a row without
//!   the dataset's timestamp field takes the event's `ts_ms`. Tombstones
//!   (messages with no value, which follow deletes for log compaction) are
//!   ignored.
//!
//! A message that is not a JSON object (or not a change event) is skipped,
//! counted and kept with its partition and offset; the rows go on.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Map, Value};
use thyme_model::payload::{Cdc, Connector, Dataset as DatasetSpec, Source};
use thyme_table::error::{Error, Result};

use crate::chunk::{Chunk, Location, Rejection};

/// Most messages in one chunk (one atomic write).
pub const MAX_CHUNK: usize = 50_000;
/// How long a chunk keeps collecting once it has messages.
pub const CHUNK_WINDOW: Duration = Duration::from_millis(100);
/// How long a poll waits for the first message before reporting that the
/// source is caught up.
pub const IDLE_WAIT: Duration = Duration::from_millis(250);
/// How often the topic's partitions are looked up again.
pub const METADATA_EVERY: Duration = Duration::from_secs(10);
/// How often the lag is asked for.
pub const HIGHS_EVERY: Duration = Duration::from_secs(5);
/// How long a metadata request may take before the broker counts as
/// unreachable.
pub const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

/// A Kafka topic source.
pub struct KafkaSource {
    topic: String,
    servers: String,
    cdc: Cdc,
    /// The dataset's timestamp field (filled from a change event's `ts_ms`).
    ts_field: String,
    consumer: BaseConsumer,
    state: Mutex<Assigned>,
}

/// What the consumer is assigned: the next offset of every partition, as
/// the consumer will read it.
#[derive(Default)]
struct Assigned {
    offsets: BTreeMap<i32, i64>,
    partitions: Vec<i32>,
    looked_up: Option<Instant>,
    valid: bool,
    /// The high watermark of every partition, as last asked, and when.
    highs: BTreeMap<i32, i64>,
    highs_at: Option<Instant>,
}

fn offsets_of(position: &Value) -> BTreeMap<i32, i64> {
    position
        .get("offsets")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(p, o)| Some((p.parse().ok()?, o.as_i64()?)))
                .collect()
        })
        .unwrap_or_default()
}

fn position_of(offsets: &BTreeMap<i32, i64>) -> Value {
    let m: Map<String, Value> = offsets
        .iter()
        .map(|(p, o)| (p.to_string(), Value::from(*o)))
        .collect();
    serde_json::json!({ "offsets": m })
}

fn kafka_err(what: &str, e: KafkaError) -> Error {
    Error::Unavailable(format!("kafka {what}: {e}"))
}

impl KafkaSource {
    pub fn new(connector: &Connector, spec: &DatasetSpec, source: &Source) -> Result<Self> {
        let Connector::Kafka {
            bootstrap_servers,
            topic,
            format,
            security_protocol,
            sasl_mechanism,
            sasl_plain_username,
            sasl_plain_password,
            ..
        } = connector
        else {
            return Err(Error::Internal("not a Kafka connector".into()));
        };
        if format != "json" {
            return Err(Error::InvalidDefinition(format!(
                "Kafka topic {topic}: format {format:?} (only \"json\" is read)"
            )));
        }
        if !matches!(
            source.cdc,
            Cdc::Append | Cdc::Upsert | Cdc::Delete | Cdc::Debezium
        ) {
            return Err(Error::InvalidDefinition(format!(
                "Kafka topic {topic}: cdc {} (Kafka carries append, upsert, delete or debezium)",
                source.cdc.as_str()
            )));
        }
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", bootstrap_servers)
            // Required by librdkafka; nothing is committed under it.
            .set("group.id", format!("thyme-{}", spec.name))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "100")
            .set("queued.min.messages", "200000")
            // Some Kafka-compatible brokers answer a fetch with everything
            // up to the end of the partition, ignoring the size asked for;
            // librdkafka drops a response larger than this, so allow the
            // largest.
            .set("receive.message.max.bytes", "2147483647")
            .set("client.id", format!("thyme-source-{}", spec.name));
        if let Some(p) = security_protocol {
            cfg.set("security.protocol", p.to_ascii_lowercase());
        }
        if let Some(m) = sasl_mechanism {
            cfg.set("sasl.mechanism", m);
        }
        if let Some(u) = sasl_plain_username {
            cfg.set("sasl.username", u);
        }
        if let Some(p) = sasl_plain_password {
            cfg.set("sasl.password", p);
        }
        let consumer: BaseConsumer = cfg
            .create()
            .map_err(|e| Error::InvalidDefinition(format!("Kafka topic {topic}: {e}")))?;
        Ok(KafkaSource {
            topic: topic.clone(),
            servers: bootstrap_servers.clone(),
            cdc: source.cdc,
            ts_field: thyme_model::validate::timestamp_field(spec)
                .map(|f| f.name.clone())
                .unwrap_or_default(),
            consumer,
            state: Mutex::new(Assigned::default()),
        })
    }

    /// `topic@servers`, for the status (no credentials).
    pub fn describe(&self) -> String {
        format!("{}@{}", self.topic, self.servers)
    }

    /// The position for the status, with the lag per partition where the
    /// broker reported its high watermark.
    pub fn summary(&self, position: &Value) -> Value {
        let offsets = offsets_of(position);
        let st = self.state.lock().expect("lock");
        let mut lag: Option<i64> = None;
        for (p, &high) in &st.highs {
            let o = offsets.get(p).copied().unwrap_or(0);
            *lag.get_or_insert(0) += (high - o).max(0);
        }
        serde_json::json!({
            "topic": self.describe(),
            "offsets": position.get("offsets").cloned().unwrap_or(Value::Null),
            "lag": lag,
        })
    }

    /// Look the topic's partitions up (this also shows whether the broker
    /// answers).
    fn partitions(&self) -> Result<Vec<i32>> {
        let md = self
            .consumer
            .fetch_metadata(Some(&self.topic), METADATA_TIMEOUT)
            .map_err(|e| kafka_err("metadata", e))?;
        let t = md
            .topics()
            .iter()
            .find(|t| t.name() == self.topic)
            .ok_or_else(|| Error::Unavailable(format!("kafka topic {} not found", self.topic)))?;
        if let Some(e) = t.error() {
            return Err(Error::Unavailable(format!(
                "kafka topic {}: {:?}",
                self.topic, e
            )));
        }
        let mut ps: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
        ps.sort_unstable();
        Ok(ps)
    }

    /// Make the consumer read from `want` (the stored position) when it is
    /// not already there, and pick up new partitions.
    fn assign(&self, st: &mut Assigned, want: &BTreeMap<i32, i64>) -> Result<()> {
        let stale = st.looked_up.is_none_or(|t| t.elapsed() >= METADATA_EVERY);
        let mut changed = !st.valid || st.offsets != *want;
        if stale {
            let ps = self.partitions()?;
            st.looked_up = Some(Instant::now());
            if ps != st.partitions {
                st.partitions = ps;
                changed = true;
            }
        }
        if !changed {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        let mut offsets = BTreeMap::new();
        for &p in &st.partitions {
            let at = want.get(&p).copied();
            tpl.add_partition_offset(&self.topic, p, at.map_or(Offset::Beginning, Offset::Offset))
                .map_err(|e| kafka_err("assign", e))?;
            offsets.insert(p, at.unwrap_or(0));
        }
        self.consumer
            .assign(&tpl)
            .map_err(|e| kafka_err("assign", e))?;
        // Partitions this position names that the topic no longer has keep
        // their offsets (they are harmless and keep the position stable).
        for (&p, &o) in want {
            offsets.entry(p).or_insert(o);
        }
        st.offsets = offsets;
        st.valid = true;
        Ok(())
    }

    /// Ask the broker for the partitions' high watermarks (for the lag the
    /// status shows) every few seconds; a failure only leaves them stale.
    fn ask_highs(&self, st: &mut Assigned) {
        if st.highs_at.is_some_and(|t| t.elapsed() < HIGHS_EVERY) {
            return;
        }
        st.highs_at = Some(Instant::now());
        for &p in &st.partitions {
            if let Ok((_, high)) =
                self.consumer
                    .fetch_watermarks(&self.topic, p, Duration::from_millis(500))
            {
                if high >= 0 {
                    st.highs.insert(p, high);
                }
            }
        }
    }

    /// The messages after `position`, or `None` when there are none for
    /// [`IDLE_WAIT`].
    pub fn next(&self, position: &Value) -> Result<Option<Chunk>> {
        let mut st = self.state.lock().expect("lock");
        let want = offsets_of(position);
        if let Err(e) = self.assign(&mut st, &want) {
            st.valid = false;
            return Err(e);
        }
        self.ask_highs(&mut st);
        let mut chunk = Chunk::default();
        let mut offsets = st.offsets.clone();
        let mut first: Option<Instant> = None;
        let started = Instant::now();
        let mut messages = 0usize;
        while messages < MAX_CHUNK {
            let wait = match first {
                None => IDLE_WAIT.saturating_sub(started.elapsed()),
                Some(t) => CHUNK_WINDOW.saturating_sub(t.elapsed()),
            };
            if wait.is_zero() {
                break;
            }
            let Some(m) = self.consumer.poll(wait) else {
                if first.is_none() {
                    break;
                }
                continue;
            };
            let m = match m {
                Ok(m) => m,
                Err(KafkaError::PartitionEOF(_)) => continue,
                Err(e) => {
                    // A broker that went away: report it; the position is
                    // what was stored, so nothing read here is lost.
                    st.valid = false;
                    return Err(kafka_err("consume", e));
                }
            };
            first.get_or_insert_with(Instant::now);
            messages += 1;
            offsets.insert(m.partition(), m.offset() + 1);
            let location = Location::Message {
                partition: m.partition(),
                offset: m.offset(),
            };
            self.decode(m.payload(), location, &mut chunk);
        }
        if messages == 0 {
            // Nothing arrived: make sure the broker is still there (an
            // unreachable broker only shows as silence).
            if st
                .looked_up
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(2))
            {
                match self.partitions() {
                    Ok(ps) => {
                        st.looked_up = Some(Instant::now());
                        if ps != st.partitions {
                            st.valid = false;
                        }
                    }
                    Err(e) => {
                        st.valid = false;
                        return Err(e);
                    }
                }
            }
            return Ok(None);
        }
        st.offsets = offsets.clone();
        chunk.position = position_of(&offsets);
        Ok(Some(chunk))
    }

    /// Turn one message into a row (or a delete, or a rejection).
    fn decode(&self, payload: Option<&[u8]>, location: Location, chunk: &mut Chunk) {
        let reject = |chunk: &mut Chunk, error: String, value: Option<String>| {
            chunk.unparsed.push(Rejection {
                location: location.to_string(),
                field: None,
                value,
                error,
            })
        };
        let Some(bytes) = payload else {
            if self.cdc != Cdc::Debezium {
                reject(chunk, "a message with no value".into(), None);
            }
            return; // a Debezium tombstone
        };
        let v: Value = match serde_json::from_slice(bytes) {
            Ok(v) => v,
            Err(e) => {
                let text = String::from_utf8_lossy(&bytes[..bytes.len().min(80)]).into_owned();
                reject(chunk, format!("not JSON: {e}"), Some(text));
                return;
            }
        };
        if self.cdc != Cdc::Debezium {
            match v {
                Value::Object(row) => chunk.push(row, location, false),
                other => reject(
                    chunk,
                    "not a JSON object".into(),
                    Some(thyme_model::values::short(&other)),
                ),
            }
            return;
        }
        match debezium(v, &self.ts_field) {
            Ok(Some((row, delete))) => chunk.push(row, location, delete),
            Ok(None) => {}
            Err(e) => reject(chunk, e, None),
        }
    }
}

/// A row of a change event and whether it is a delete.
type Change = (Map<String, Value>, bool);

/// A Debezium change event as its row; `None` for a wrapped event with a
/// null payload. An event without `op` is an error; a message with no
/// value (a tombstone) is the caller's.
fn debezium(v: Value, ts_field: &str) -> std::result::Result<Option<Change>, String> {
    let Value::Object(mut ev) = v else {
        return Err("not a Debezium change event (not a JSON object)".into());
    };
    // The JSON converter with schemas wraps the event.
    if ev.contains_key("schema") && ev.contains_key("payload") {
        match ev.remove("payload") {
            Some(Value::Object(p)) => ev = p,
            Some(Value::Null) => return Ok(None),
            _ => return Err("Debezium payload is not an object".into()),
        }
    }
    let op = ev
        .get("op")
        .and_then(Value::as_str)
        .ok_or_else(|| "not a Debezium change event (no \"op\")".to_string())?
        .to_string();
    let (side, delete) = match op.as_str() {
        "c" | "r" | "u" => ("after", false),
        "d" => ("before", true),
        "t" => {
            return Err(
                "a Debezium truncate event (not applied; truncate the dataset through SQL)".into(),
            )
        }
        other => return Err(format!("Debezium op {other:?} (expected c, r, u or d)")),
    };
    let mut row = match ev.remove(side) {
        Some(Value::Object(r)) => r,
        _ => return Err(format!("Debezium op {op:?} without \"{side}\"")),
    };
    if !row.contains_key(ts_field) || row.get(ts_field) == Some(&Value::Null) {
        if let Some(ts) = ev.get("ts_ms").filter(|t| t.is_number()) {
            row.insert(ts_field.to_string(), ts.clone());
        }
    }
    Ok(Some((row, delete)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debezium_events() {
        let ev =
            serde_json::json!({"op": "c", "after": {"id": 1, "v": "a"}, "ts_ms": 1700000000000i64});
        let (row, del) = debezium(ev, "ts").unwrap().unwrap();
        assert!(!del);
        assert_eq!(row["id"], 1);
        assert_eq!(row["ts"], 1700000000000i64);
        let wrapped =
            serde_json::json!({"schema": {}, "payload": {"op": "d", "before": {"id": 2, "ts": 5}}});
        let (row, del) = debezium(wrapped, "ts").unwrap().unwrap();
        assert!(del);
        assert_eq!(row["ts"], 5, "a row's own timestamp is kept");
        assert!(debezium(serde_json::json!({"op": "u"}), "ts").is_err());
        assert!(debezium(serde_json::json!({"after": {}}), "ts").is_err());
        assert!(debezium(serde_json::json!({"op": "t"}), "ts").is_err());
        assert!(debezium(serde_json::json!([1]), "ts").is_err());
    }

    #[test]
    fn positions_round_trip() {
        let mut m = BTreeMap::new();
        m.insert(0, 10);
        m.insert(3, 7);
        assert_eq!(offsets_of(&position_of(&m)), m);
        assert!(offsets_of(&Value::Null).is_empty());
    }
}
