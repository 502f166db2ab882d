//! The catalog model: dataset definitions, validated and persisted in the
//! store's catalog under `dataset/<name>`.
//!
//! Definitions are JSON (the same shape the Python SDK commits). The catalog
//! keeps an in-memory copy, swapped atomically on every change, so lookups on
//! the query path never touch the store.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, RwLock};

use arrow::datatypes::{Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};
use thyme_storage::{DatasetId, TemporalStore, WriteBatch};

use crate::error::{Error, Result};
use crate::types::DType;

/// The table late events are recorded in (by the stream engine; read
/// only to SQL).
pub const LATE_TABLE: &str = "thyme_late_events";
/// The table of rows sources skipped (written by the sources only).
pub const REJECTED_TABLE: &str = "thyme_rejected_rows";

const DATASET_PREFIX: &str = "dataset/";

/// One field of a dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldDef {
    pub name: String,
    pub dtype: DType,
    #[serde(default)]
    pub nullable: bool,
}

/// A dataset definition as committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetDef {
    /// SQL name (snake_case).
    pub name: String,
    pub fields: Vec<FieldDef>,
    /// Key fields, in key order (empty: an append-only event stream).
    pub keys: Vec<String>,
    /// The event-time field.
    pub timestamp: String,
    #[serde(default = "default_version")]
    pub version: u32,
    #[serde(default = "default_true")]
    pub index: bool,
    /// Float fields that decay with read time (`ExpDecaySum` outputs): each
    /// stored value holds the sum as of its row's event time, and a read as
    /// of `t` multiplies it by `2^(-(t - ts) / half_life)` (half-life in
    /// microseconds).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decay: Vec<(String, i64)>,
}

fn default_version() -> u32 {
    1
}
fn default_true() -> bool {
    true
}

/// A definition plus what the store assigned to it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Dataset {
    pub id: DatasetId,
    #[serde(flatten)]
    pub def: DatasetDef,
    #[serde(skip)]
    schema: Option<SchemaRef>,
    #[serde(skip)]
    key_idx: Vec<usize>,
    #[serde(skip)]
    ts_idx: usize,
    /// The decayed fields, resolved once.
    #[serde(skip)]
    decay: Decay,
}

impl Dataset {
    pub fn new(id: DatasetId, def: DatasetDef) -> Result<Self> {
        def.validate()?;
        let fields: Vec<Field> = def
            .fields
            .iter()
            .map(|f| Field::new(&f.name, f.dtype.arrow(), f.nullable))
            .collect();
        let idx = |n: &str| {
            def.fields
                .iter()
                .position(|f| f.name == n)
                .expect("validated")
        };
        let key_idx = def.keys.iter().map(|k| idx(k)).collect();
        let ts_idx = idx(&def.timestamp);
        Ok(Dataset {
            id,
            schema: Some(Arc::new(Schema::new(fields))),
            key_idx,
            ts_idx,
            decay: Decay::resolve(&def),
            def,
        })
    }

    pub fn name(&self) -> &str {
        &self.def.name
    }

    /// The Arrow schema of the dataset's rows (all fields, in order).
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone().expect("built in Dataset::new")
    }

    pub fn is_keyed(&self) -> bool {
        !self.def.keys.is_empty()
    }

    /// Positions of the key fields, in key order.
    pub fn key_indices(&self) -> &[usize] {
        &self.key_idx
    }

    /// Position of the event-time field.
    /// Fields that decay with read time (`ExpDecaySum` outputs).
    pub fn decay(&self) -> &Decay {
        &self.decay
    }

    pub fn ts_index(&self) -> usize {
        self.ts_idx
    }

    pub fn fields(&self) -> &[FieldDef] {
        &self.def.fields
    }
}

impl DatasetDef {
    /// Check the definition is well formed.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| {
            Err(Error::InvalidDefinition(format!(
                "dataset {}: {msg}",
                self.name
            )))
        };
        if !is_identifier(&self.name) {
            return bad("names must start with a letter or underscore and contain only letters, digits and underscores".into());
        }
        if self.fields.is_empty() {
            return bad("a dataset needs at least one field".into());
        }
        let mut seen = HashSet::new();
        for f in &self.fields {
            if !is_identifier(&f.name) {
                return bad(format!("field name {:?} is not a valid identifier", f.name));
            }
            if !seen.insert(f.name.as_str()) {
                return bad(format!("field {} is declared twice", f.name));
            }
        }
        let field = |n: &str| self.fields.iter().find(|f| f.name == n);
        match field(&self.timestamp) {
            None => return bad(format!("timestamp field {} is not a field", self.timestamp)),
            Some(f) if f.dtype != DType::Datetime => {
                return bad(format!(
                    "timestamp field {} must be a datetime, not {}",
                    f.name, f.dtype
                ))
            }
            Some(f) if f.nullable => {
                return bad(format!("timestamp field {} cannot be optional", f.name))
            }
            _ => {}
        }
        let mut keys = HashSet::new();
        for k in &self.keys {
            match field(k) {
                None => return bad(format!("key field {k} is not a field")),
                Some(f) if f.nullable => return bad(format!("key field {k} cannot be optional")),
                Some(f) if f.dtype == DType::Float => {
                    return bad(format!("key field {k} cannot be a float"))
                }
                _ => {}
            }
            if k == &self.timestamp {
                return bad(format!("field {k} cannot be both a key and the timestamp"));
            }
            if !keys.insert(k) {
                return bad(format!("key field {k} is listed twice"));
            }
        }
        Ok(())
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The set of committed datasets.
pub struct Catalog {
    store: Arc<dyn TemporalStore>,
    datasets: RwLock<Arc<BTreeMap<String, Arc<Dataset>>>>,
    /// Serializes catalog changes (reads never wait on it).
    change: std::sync::Mutex<()>,
}

impl Catalog {
    /// Load every definition from the store.
    pub fn load(store: Arc<dyn TemporalStore>) -> Result<Self> {
        let mut map = BTreeMap::new();
        for (name, bytes) in store.catalog_list()? {
            let Some(ds_name) = name.strip_prefix(DATASET_PREFIX) else {
                continue;
            };
            let stored: Dataset = serde_json::from_slice(&bytes).map_err(|e| {
                Error::Internal(format!("catalog entry {name} does not decode: {e}"))
            })?;
            let ds = Dataset::new(stored.id, stored.def)?;
            map.insert(ds_name.to_string(), Arc::new(ds));
        }
        Ok(Catalog {
            store,
            datasets: RwLock::new(Arc::new(map)),
            change: std::sync::Mutex::new(()),
        })
    }

    pub fn store(&self) -> &Arc<dyn TemporalStore> {
        &self.store
    }

    /// A dataset by name (exact, case-sensitive).
    pub fn get(&self, name: &str) -> Option<Arc<Dataset>> {
        self.datasets
            .read()
            .expect("catalog lock")
            .get(name)
            .cloned()
    }

    /// All datasets, ordered by name.
    pub fn list(&self) -> Arc<BTreeMap<String, Arc<Dataset>>> {
        self.datasets.read().expect("catalog lock").clone()
    }

    /// Create a dataset. `if_not_exists` turns an existing name into a no-op
    /// (returning `false`).
    pub fn create(&self, def: DatasetDef, if_not_exists: bool) -> Result<bool> {
        if if_not_exists && self.get(&def.name).is_some() {
            return Ok(false);
        }
        match self.apply(vec![def], vec![], vec![]) {
            Ok(_) => Ok(true),
            // Created concurrently since the check above.
            Err(Error::DuplicateTable(_)) if if_not_exists => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The dataset `def` names, created from `def` if it does not exist
    /// (the tables Thyme keeps for itself: late events, rejected rows).
    pub fn get_or_create(&self, def: DatasetDef) -> Result<Arc<Dataset>> {
        if let Some(d) = self.get(&def.name) {
            return Ok(d);
        }
        let name = def.name.clone();
        self.create(def, true)?;
        self.get(&name)
            .ok_or_else(|| Error::Internal(format!("table {name} missing after its creation")))
    }

    /// Apply a set of dataset changes and extra catalog entries in one
    /// atomic write: each of `create` is a new dataset (its SQL name must
    /// be free), each of `replace` takes the place of the existing dataset
    /// of its name (whose data is dropped). Returns the new datasets, in
    /// `create` then `replace` order.
    pub fn apply(
        &self,
        create: Vec<DatasetDef>,
        replace: Vec<DatasetDef>,
        extra: Vec<(String, Vec<u8>)>,
    ) -> Result<Vec<Arc<Dataset>>> {
        for d in create.iter().chain(&replace) {
            d.validate()?;
        }
        let _guard = self.change.lock().expect("catalog change lock");
        let mut map = (*self.list()).clone();
        let mut wb = WriteBatch::new();
        let mut out = Vec::with_capacity(create.len() + replace.len());
        for (def, is_replace) in create
            .into_iter()
            .map(|d| (d, false))
            .chain(replace.into_iter().map(|d| (d, true)))
        {
            match (map.get(&def.name), is_replace) {
                (Some(_), false) => return Err(Error::DuplicateTable(def.name)),
                (Some(old), true) => wb.drop_data(old.id),
                (None, _) => {}
            }
            let id = self.store.allocate_dataset_id()?;
            let ds = Arc::new(Dataset::new(id, def)?);
            let bytes = serde_json::to_vec(&*ds).map_err(|e| Error::Internal(e.to_string()))?;
            wb.put_catalog(&format!("{DATASET_PREFIX}{}", ds.name()), &bytes);
            map.insert(ds.name().to_string(), ds.clone());
            out.push(ds);
        }
        for (k, v) in &extra {
            wb.put_catalog(k, v);
        }
        self.store.write(wb)?;
        *self.datasets.write().expect("catalog lock") = Arc::new(map);
        Ok(out)
    }

    /// Drop a dataset and all of its data. Returns `false` when it did not
    /// exist and `if_exists` was given.
    pub fn drop_dataset(&self, name: &str, if_exists: bool) -> Result<bool> {
        let _guard = self.change.lock().expect("catalog change lock");
        let Some(ds) = self.get(name) else {
            if if_exists {
                return Ok(false);
            }
            return Err(Error::UnknownTable(name.to_string()));
        };
        let mut wb = WriteBatch::new();
        wb.delete_catalog(&format!("{DATASET_PREFIX}{name}"));
        wb.drop_data(ds.id);
        self.store.write(wb)?;
        let mut map = (*self.list()).clone();
        map.remove(name);
        *self.datasets.write().expect("catalog lock") = Arc::new(map);
        Ok(true)
    }
}

/// Decayed fields of a dataset, resolved to field positions.
#[derive(Debug, Clone, Default)]
pub struct Decay {
    pub fields: Vec<(usize, f64)>,
}

impl Decay {
    pub fn resolve(def: &DatasetDef) -> Decay {
        Decay {
            fields: def
                .decay
                .iter()
                .filter_map(|(name, h)| {
                    def.fields
                        .iter()
                        .position(|f| &f.name == name && f.dtype == DType::Float)
                        .map(|i| (i, *h as f64))
                })
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").finish_non_exhaustive()
    }
}
