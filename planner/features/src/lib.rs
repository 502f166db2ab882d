//! Featuresets: the extractor graph, query planning and evaluation.
//!
//! A committed featureset is a list of typed features and the extractors
//! that compute some of them (lookup, alias, expression, Python). A query
//! names the features it supplies (*inputs*, qualified `Featureset.feature`)
//! and the ones it wants (*outputs*; a featureset name stands for all its
//! features), plus one read time per row.
//!
//! **Planning** ([`Features::plan`]) walks back from every output: a
//! supplied feature is read from the inputs, any other feature from the one
//! extractor that computes it, after that extractor's own inputs. The walk
//! gives the extractors to run in dependency order, and only those run. A
//! feature that is neither supplied nor computed is an error that names
//! it and the extractor that needed it. Cycles cannot occur: commits with
//! one are refused (`thyme-model`).
//!
//! **Evaluation** ([`Features::evaluate`]) runs the plan a batch at a time
//! (never a call per row):
//! - lookup: one seek per row in the temporal store, as of the row's time,
//!   rows sharing a time in one multi-key seek ([`thyme_table::read::lookup_rows`]);
//!   the default where the key is absent;
//! - alias: the input column;
//! - expression: compiled once to a DataFusion physical expression;
//! - Python: one call of the committed function with the whole batch, in
//!   the server's embedded interpreter ([`PythonRuntime::call_extractor`]);
//!   `Dataset.lookup` inside it reads the store through [`StoreReader`].
//!
//! Every output is checked against its feature's type (and length), with
//! errors that name the extractor. The SQL planner makes each featureset a
//! view (`thyme_planner::view`).

pub use thyme_table::read::{DatasetReader, KeyFields, StoreReader};
pub use thyme_table::udf::{ExtractorCall, PythonRuntime};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::prelude::SessionContext;
use serde_json::Value;
use thyme_model::payload::{Extractor, ExtractorKind, Featureset};
use thyme_model::{snake_case, Type};

use thyme_table::error::{Error, Result};
use thyme_table::expr::Compiled;
use thyme_table::registry::{stored_type, Registry};
use thyme_table::types::{DType, UTC};

/// A feature of the graph.
#[derive(Debug, Clone)]
pub struct FeatureInfo {
    pub featureset: String,
    pub name: String,
    pub ty: Type,
    pub dtype: DType,
    /// Whether some extractor computes it (otherwise it is an input).
    pub computed: bool,
}

impl FeatureInfo {
    pub fn arrow(&self) -> DataType {
        self.dtype.arrow()
    }
}

/// An extractor of the graph, with what it reads and writes qualified.
#[derive(Debug)]
struct Ext {
    featureset: String,
    def: Extractor,
    inputs: Vec<String>,
    outputs: Vec<String>,
    compiled: OnceLock<std::result::Result<Arc<Compiled>, String>>,
    calls: Arc<AtomicU64>,
}

/// Every committed featureset's features and extractors.
#[derive(Debug, Default)]
pub struct FeatureGraph {
    features: HashMap<String, FeatureInfo>,
    extractors: Vec<Ext>,
    producer: HashMap<String, usize>,
    featuresets: BTreeMap<String, Featureset>,
    /// SQL name -> class name.
    sql_names: BTreeMap<String, String>,
}

impl FeatureGraph {
    fn build(
        defs: &[Featureset],
        counters: &Mutex<HashMap<(String, String), Arc<AtomicU64>>>,
    ) -> Result<Self> {
        let mut g = FeatureGraph::default();
        for fs in defs {
            for e in &fs.extractors {
                for o in &e.outputs {
                    g.producer.insert(format!("{}.{o}", fs.name), usize::MAX);
                }
            }
        }
        for fs in defs {
            for f in &fs.features {
                let q = format!("{}.{}", fs.name, f.name);
                let (dtype, _) = stored_type(&f.ty)
                    .map_err(|e| Error::InvalidDefinition(format!("feature {q}: {e}")))?;
                g.features.insert(
                    q.clone(),
                    FeatureInfo {
                        featureset: fs.name.clone(),
                        name: f.name.clone(),
                        ty: f.ty.clone(),
                        dtype,
                        computed: g.producer.contains_key(&q),
                    },
                );
            }
            for e in &fs.extractors {
                let mut inputs = e.inputs.clone();
                if let (ExtractorKind::Expr, Some(x)) = (e.kind, &e.expr) {
                    let mut cols = Vec::new();
                    x.columns(&mut cols);
                    for c in cols {
                        let q = format!("{}.{c}", fs.name);
                        if !inputs.contains(&q) {
                            inputs.push(q);
                        }
                    }
                }
                let idx = g.extractors.len();
                let outputs: Vec<String> = e
                    .outputs
                    .iter()
                    .map(|o| format!("{}.{o}", fs.name))
                    .collect();
                for o in &outputs {
                    g.producer.insert(o.clone(), idx);
                }
                let calls = counters
                    .lock()
                    .expect("counters")
                    .entry((fs.name.clone(), e.name.clone()))
                    .or_default()
                    .clone();
                g.extractors.push(Ext {
                    featureset: fs.name.clone(),
                    def: e.clone(),
                    inputs,
                    outputs,
                    compiled: OnceLock::new(),
                    calls,
                });
            }
            g.sql_names.insert(snake_case(&fs.name), fs.name.clone());
            g.featuresets.insert(fs.name.clone(), fs.clone());
        }
        Ok(g)
    }

    /// A feature by qualified name.
    pub fn feature(&self, qualified: &str) -> Option<&FeatureInfo> {
        self.features.get(qualified)
    }

    /// A featureset by class name or SQL name.
    pub fn featureset(&self, name: &str) -> Option<&Featureset> {
        self.featuresets.get(name).or_else(|| {
            self.sql_names
                .get(name)
                .or_else(|| self.sql_names.get(&snake_case(name)))
                .and_then(|n| self.featuresets.get(n))
        })
    }

    /// SQL names of every featureset.
    pub fn sql_names(&self) -> impl Iterator<Item = &String> {
        self.sql_names.keys()
    }

    /// The features of `fs` that no extractor computes: what a query of
    /// the whole featureset must supply.
    pub fn natural_inputs(&self, fs: &Featureset) -> Vec<String> {
        fs.features
            .iter()
            .filter(|f| {
                !self
                    .producer
                    .contains_key(&format!("{}.{}", fs.name, f.name))
            })
            .map(|f| f.name.clone())
            .collect()
    }

    fn names(&self, list: &[String]) -> String {
        list.join(", ")
    }
}

/// A resolved query: what to read from the caller and which extractors to
/// run, in order.
#[derive(Debug, Clone)]
pub struct QueryPlan {
    graph: Arc<FeatureGraph>,
    /// Supplied features, qualified, in the caller's order.
    pub inputs: Vec<String>,
    /// Extractors to run (indexes into the graph), dependencies first.
    steps: Vec<usize>,
    /// Requested features, qualified, in output order.
    pub outputs: Vec<String>,
    /// The lookup steps grouped by (dataset, input features), with every
    /// field each group reads: one read per group serves them all.
    lookup_fields: Arc<LookupFields>,
}

/// Fields read per (dataset, input features) group of lookups.
type LookupFields = HashMap<(String, Vec<String>), Vec<String>>;

impl QueryPlan {
    /// The Arrow type of each input, in order.
    pub fn input_types(&self) -> Vec<DataType> {
        self.inputs
            .iter()
            .map(|q| self.graph.features[q].arrow())
            .collect()
    }

    /// The input features.
    pub fn input_features(&self) -> Vec<&FeatureInfo> {
        self.inputs
            .iter()
            .map(|q| &self.graph.features[q])
            .collect()
    }

    /// Whether a Python extractor runs (the evaluation may then block on the
    /// interpreter).
    pub fn has_python(&self) -> bool {
        self.steps
            .iter()
            .any(|&i| self.graph.extractors[i].def.kind == ExtractorKind::Python)
    }

    /// The output features.
    pub fn output_features(&self) -> Vec<&FeatureInfo> {
        self.outputs
            .iter()
            .map(|q| &self.graph.features[q])
            .collect()
    }

    /// Names of the extractors the plan runs, in order (`Featureset.name`).
    pub fn extractor_names(&self) -> Vec<String> {
        self.steps
            .iter()
            .map(|&i| {
                let e = &self.graph.extractors[i];
                format!("{}.{}", e.featureset, e.def.name)
            })
            .collect()
    }

    /// The schema of the evaluated batch: one column per output, named by
    /// its qualified name.
    pub fn output_schema(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.output_features()
                .iter()
                .map(|f| Field::new(format!("{}.{}", f.featureset, f.name), f.arrow(), true))
                .collect::<Vec<_>>(),
        ))
    }
}

/// The reads one evaluation has done, per (dataset, input features) group
/// of lookups ([`QueryPlan`] knows each group's fields).
type LookupReads = HashMap<(String, Vec<String>), (RecordBatch, Vec<bool>)>;

/// Featureset serving state: the graph of the committed featuresets (rebuilt
/// when a commit changes them), the Python runtime, call counters.
pub struct Features {
    registry: Arc<Registry>,
    python: OnceLock<Arc<dyn PythonRuntime>>,
    graph: RwLock<(u64, Arc<FeatureGraph>)>,
    counters: Mutex<HashMap<(String, String), Arc<AtomicU64>>>,
    reader: Arc<StoreReader>,
    ctx: SessionContext,
}

impl std::fmt::Debug for Features {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Features").finish_non_exhaustive()
    }
}

impl Features {
    pub fn new(registry: Arc<Registry>) -> Self {
        let reader = Arc::new(StoreReader::new(registry.catalog().clone()));
        Features {
            registry,
            python: OnceLock::new(),
            graph: RwLock::new((u64::MAX, Arc::new(FeatureGraph::default()))),
            counters: Mutex::new(HashMap::new()),
            reader,
            ctx: SessionContext::new(),
        }
    }

    /// Install the Python runtime (once; later calls are ignored).
    /// The Python runtime, once set.
    pub fn python(&self) -> Option<&Arc<dyn PythonRuntime>> {
        self.python.get()
    }

    pub fn set_python(&self, python: Arc<dyn PythonRuntime>) {
        let _ = self.python.set(python);
    }

    /// The current graph (rebuilt after a commit changed the definitions).
    pub fn graph(&self) -> Result<Arc<FeatureGraph>> {
        let version = self.registry.version();
        {
            let g = self.graph.read().expect("graph");
            if g.0 == version {
                return Ok(g.1.clone());
            }
        }
        let defs: Vec<Featureset> = self
            .registry
            .featuresets()
            .into_iter()
            .map(|d| d.definition)
            .collect();
        let built = Arc::new(FeatureGraph::build(&defs, &self.counters)?);
        *self.graph.write().expect("graph") = (version, built.clone());
        Ok(built)
    }

    /// How many times each extractor ran (`(featureset, extractor)` ->
    /// batches), since the server started.
    pub fn extractor_calls(&self) -> BTreeMap<(String, String), u64> {
        self.counters
            .lock()
            .expect("counters")
            .iter()
            .map(|(k, v)| (k.clone(), v.load(Ordering::Relaxed)))
            .collect()
    }

    /// Read a keyed dataset (class or SQL name) for JSON key columns, as of
    /// `ts` per row: the chosen fields (all when `None`) and whether each
    /// key was found (`POST /api/v1/lookup`).
    pub fn lookup_json(
        &self,
        dataset: &str,
        keys: &serde_json::Map<String, Value>,
        fields: Option<&[String]>,
        ts: &[i64],
    ) -> Result<(RecordBatch, Vec<bool>)> {
        let spec = self
            .registry
            .dataset(dataset)
            .map(|d| d.definition)
            .ok_or_else(|| Error::UnknownTable(dataset.to_string()))?;
        let ds = self.reader.dataset(&spec.name)?;
        let mut arrays = Vec::with_capacity(ds.key_indices().len());
        for &k in ds.key_indices() {
            let name = &ds.fields()[k].name;
            let values = match keys.get(name) {
                Some(Value::Array(v)) => v,
                Some(_) => {
                    return Err(Error::UnboundInputs(format!(
                        "keys.{name} must be an array of values"
                    )))
                }
                None => {
                    return Err(Error::UnboundInputs(format!(
                        "give the key {name} of {} in keys (keys: {})",
                        spec.name,
                        ds.def.keys.join(", ")
                    )))
                }
            };
            if values.len() != ts.len() {
                return Err(Error::UnboundInputs(format!(
                    "keys.{name} has {} values for {} rows",
                    values.len(),
                    ts.len()
                )));
            }
            let ty = spec
                .fields
                .iter()
                .find(|f| &f.name == name)
                .map(|f| f.ty.clone())
                .ok_or_else(|| Error::Internal(format!("key {name} not in the definition")))?;
            let info = FeatureInfo {
                featureset: spec.name.clone(),
                name: name.clone(),
                dtype: ds.fields()[k].dtype,
                ty,
                computed: false,
            };
            arrays.push(json_to_array(&info, &format!("keys.{name}"), values)?);
        }
        if let Some(extra) = keys.keys().find(|k| !ds.def.keys.contains(k)) {
            return Err(Error::UnboundInputs(format!(
                "{extra} is not a key of {} (keys: {})",
                spec.name,
                ds.def.keys.join(", ")
            )));
        }
        self.reader.lookup(&spec.name, &arrays, ts, fields)
    }

    /// Resolve the extractors that compute `outputs` from `inputs`.
    /// Names are qualified (`Featureset.feature`); an output may be a
    /// featureset name, meaning all of its features.
    pub fn plan(&self, inputs: &[String], outputs: &[String]) -> Result<QueryPlan> {
        let graph = self.graph()?;
        let mut seen_in = HashSet::new();
        for i in inputs {
            if graph.feature(i).is_none() {
                return Err(unknown_feature(&graph, i, "input"));
            }
            if !seen_in.insert(i.as_str()) {
                return Err(Error::UnboundInputs(format!("input {i} is given twice")));
            }
        }
        let mut outs: Vec<String> = Vec::new();
        for o in outputs {
            if graph.feature(o).is_some() {
                outs.push(o.clone());
            } else if let Some(fs) = graph.featureset(o) {
                outs.extend(
                    fs.features
                        .iter()
                        .map(|f| format!("{}.{}", fs.name, f.name)),
                );
            } else {
                return Err(unknown_feature(&graph, o, "output"));
            }
        }
        if outs.is_empty() {
            return Err(Error::UnboundInputs(
                "a query needs at least one output".into(),
            ));
        }
        let mut dedup = HashSet::new();
        outs.retain(|o| dedup.insert(o.clone()));
        // Post-order walk from every output.
        let mut steps = Vec::new();
        let mut done: HashSet<usize> = HashSet::new();
        let mut available: HashSet<String> = inputs.iter().cloned().collect();
        for o in &outs {
            resolve(&graph, o, None, &mut available, &mut done, &mut steps)?;
        }
        let mut lookup_fields = LookupFields::new();
        for &i in &steps {
            let e = &graph.extractors[i];
            if let (ExtractorKind::Lookup, Some(d), Some(f)) =
                (&e.def.kind, &e.def.dataset, &e.def.field)
            {
                let fields = lookup_fields
                    .entry((d.clone(), e.inputs.clone()))
                    .or_default();
                if !fields.contains(f) {
                    fields.push(f.clone());
                }
            }
        }
        Ok(QueryPlan {
            inputs: inputs.to_vec(),
            steps,
            outputs: outs,
            graph,
            lookup_fields: Arc::new(lookup_fields),
        })
    }

    /// Evaluate `plan` for the rows of `inputs` (one array per plan input,
    /// of its type) read at `ts` (one time per row, µs).
    pub fn evaluate(
        &self,
        plan: &QueryPlan,
        inputs: Vec<ArrayRef>,
        ts: &[i64],
    ) -> Result<RecordBatch> {
        let g = &plan.graph;
        let n = ts.len();
        let mut cols: HashMap<String, ArrayRef> = HashMap::new();
        for ((q, a), f) in plan.inputs.iter().zip(inputs).zip(plan.input_features()) {
            if a.len() != n {
                return Err(Error::UnboundInputs(format!(
                    "input {q} has {} values for {n} rows",
                    a.len()
                )));
            }
            let a = conform(a, &f.arrow()).map_err(|e| {
                Error::UnboundInputs(format!("input {q} does not fit {}: {e}", f.ty))
            })?;
            cols.insert(q.clone(), a);
        }
        let ts_array: ArrayRef =
            Arc::new(TimestampMicrosecondArray::from(ts.to_vec()).with_timezone(UTC));
        // Lookups into one dataset with the same inputs share one read of
        // every field they need.
        let mut reads = LookupReads::new();
        for &i in &plan.steps {
            let e = &g.extractors[i];
            let ins: Vec<ArrayRef> = e.inputs.iter().map(|q| cols[q].clone()).collect();
            let out = self.run(plan, e, ins, &ts_array, ts, &mut reads)?;
            e.calls.fetch_add(1, Ordering::Relaxed);
            for (q, a) in e.outputs.iter().zip(out) {
                // A supplied value wins over a computed one.
                cols.entry(q.clone()).or_insert(a);
            }
        }
        let schema = plan.output_schema();
        let columns = plan
            .outputs
            .iter()
            .map(|q| cols[q].clone())
            .collect::<Vec<_>>();
        let opts = arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(n));
        Ok(RecordBatch::try_new_with_options(schema, columns, &opts)?)
    }

    /// Run one extractor: one array per output, each of its feature's type.
    fn run(
        &self,
        plan: &QueryPlan,
        e: &Ext,
        ins: Vec<ArrayRef>,
        ts_array: &ArrayRef,
        ts: &[i64],
        reads: &mut LookupReads,
    ) -> Result<Vec<ArrayRef>> {
        let g = &plan.graph;
        let n = ts.len();
        let fail = |message: String| Error::Extractor {
            extractor: format!("{}.{}", e.featureset, e.def.name),
            message,
        };
        let out_types: Vec<DataType> = e.outputs.iter().map(|q| g.features[q].arrow()).collect();
        let outs = match e.def.kind {
            ExtractorKind::Lookup => {
                let (Some(dataset), Some(field)) = (&e.def.dataset, &e.def.field) else {
                    return Err(fail("a lookup names a dataset and a field".into()));
                };
                let group = (dataset.clone(), e.inputs.clone());
                if !reads.contains_key(&group) {
                    let fields = plan
                        .lookup_fields
                        .get(&group)
                        .map_or_else(|| std::slice::from_ref(field), Vec::as_slice);
                    let read = self.reader.lookup(dataset, &ins, ts, Some(fields))?;
                    reads.insert(group.clone(), read);
                }
                let (batch, found) = &reads[&group];
                let found = found.clone();
                let column = batch
                    .column_by_name(field)
                    .ok_or_else(|| fail(format!("{dataset} has no field {field}")))?;
                let mut value = conform(column.clone(), &out_types[0])
                    .map_err(|m| fail(format!("{dataset}.{field}: {m}")))?;
                if let Some(d) = e.def.default.as_ref().filter(|d| !d.is_null()) {
                    let default = scalar_array(d, g.features[&e.outputs[0]].dtype)
                        .map_err(|m| fail(format!("default {d}: {m}")))?;
                    let mask = BooleanArray::from(found);
                    let fill = arrow::array::Scalar::new(default);
                    value = arrow::compute::kernels::zip::zip(&mask, &value, &fill)?;
                }
                vec![value]
            }
            ExtractorKind::Alias => vec![conform(ins[0].clone(), &out_types[0]).map_err(fail)?],
            ExtractorKind::Expr => {
                let compiled = e
                    .compiled
                    .get_or_init(|| self.compile(g, e).map_err(|err| err.to_string()))
                    .clone()
                    .map_err(fail)?;
                let schema = Arc::new(Schema::new(
                    e.inputs
                        .iter()
                        .map(|q| Field::new(&g.features[q].name, g.features[q].arrow(), true))
                        .collect::<Vec<_>>(),
                ));
                let opts = arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(n));
                let batch = RecordBatch::try_new_with_options(schema, ins, &opts)?;
                let v = compiled.eval(&batch).map_err(|err| fail(err.to_string()))?;
                vec![conform(v, &out_types[0]).map_err(fail)?]
            }
            ExtractorKind::Python => {
                let python = self
                    .python
                    .get()
                    .ok_or_else(|| fail("this server runs without embedded Python".into()))?;
                let call = ExtractorCall {
                    featureset: &e.featureset,
                    name: &e.def.name,
                    source: e.def.source.as_deref().unwrap_or_default(),
                    imports: e
                        .def
                        .env
                        .as_ref()
                        .and_then(|env| env.imports.as_deref())
                        .unwrap_or_default(),
                    deps: &e.def.deps,
                    ts: ts_array,
                    inputs: e
                        .inputs
                        .iter()
                        .zip(ins)
                        .map(|(q, a)| {
                            let f = &g.features[q];
                            let name = if f.featureset == e.featureset {
                                f.name.clone()
                            } else {
                                q.clone()
                            };
                            (name, a)
                        })
                        .collect(),
                    outputs: e
                        .def
                        .outputs
                        .iter()
                        .cloned()
                        .zip(out_types.iter().cloned())
                        .collect(),
                    reader: self.reader.clone(),
                };
                python.call_extractor(&call)?
            }
        };
        if outs.len() != e.outputs.len() {
            return Err(fail(format!(
                "returned {} columns for {} outputs",
                outs.len(),
                e.outputs.len()
            )));
        }
        for ((a, q), t) in outs.iter().zip(&e.outputs).zip(&out_types) {
            if a.len() != n {
                return Err(fail(format!(
                    "returned {} values of {q} for {n} rows",
                    a.len()
                )));
            }
            if a.data_type() != t {
                return Err(fail(format!(
                    "returned {} for {q}, which is {}",
                    a.data_type(),
                    g.features[q].ty
                )));
            }
        }
        Ok(outs)
    }

    fn compile(&self, g: &FeatureGraph, e: &Ext) -> Result<Arc<Compiled>> {
        let expr = e
            .def
            .expr
            .as_ref()
            .ok_or_else(|| Error::InvalidDefinition("an expr extractor needs expr".into()))?;
        let schema = Schema::new(
            e.inputs
                .iter()
                .map(|q| Field::new(&g.features[q].name, g.features[q].arrow(), true))
                .collect::<Vec<_>>(),
        );
        let target = &g.features[&e.outputs[0]].ty;
        Ok(Arc::new(Compiled::new(
            &self.ctx,
            &schema,
            expr,
            Some(target),
        )?))
    }
}

fn unknown_feature(g: &FeatureGraph, name: &str, what: &str) -> Error {
    let hint = match name.split_once('.') {
        None => format!(
            "{what} {name:?} is not a featureset or a qualified feature (Featureset.feature)"
        ),
        Some((fs, f)) => match g.featureset(fs) {
            None => format!(
                "{what} {name}: featureset {fs} is not committed (featuresets: {})",
                g.names(&g.featuresets.keys().cloned().collect::<Vec<_>>())
            ),
            Some(set) => format!(
                "{what} {name}: featureset {fs} has no feature {f} (features: {})",
                g.names(
                    &set.features
                        .iter()
                        .map(|x| x.name.clone())
                        .collect::<Vec<_>>()
                )
            ),
        },
    };
    Error::UnknownFeature(hint)
}

/// Make `q` available: supplied, or computed after its extractor's inputs.
fn resolve(
    g: &FeatureGraph,
    q: &str,
    needed_by: Option<&str>,
    available: &mut HashSet<String>,
    done: &mut HashSet<usize>,
    steps: &mut Vec<usize>,
) -> Result<()> {
    if available.contains(q) {
        return Ok(());
    }
    let Some(&idx) = g.producer.get(q) else {
        let f = &g.features[q];
        let fs = &g.featuresets[&f.featureset];
        let inputs = g.natural_inputs(fs);
        let why = match needed_by {
            Some(e) => format!(" (extractor {e} reads it)"),
            None => String::new(),
        };
        return Err(Error::UnboundInputs(format!(
            "feature {q} is an input{why}: supply it; {} is computed from {}",
            f.featureset,
            inputs
                .iter()
                .map(|i| format!("{}.{i}", f.featureset))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    if done.contains(&idx) {
        return Ok(());
    }
    let e = &g.extractors[idx];
    let name = format!("{}.{}", e.featureset, e.def.name);
    for i in &e.inputs {
        if !g.features.contains_key(i) {
            return Err(Error::InvalidDefinition(format!(
                "extractor {name} reads {i}, which is not a committed feature"
            )));
        }
        resolve(g, i, Some(&name), available, done, steps)?;
    }
    done.insert(idx);
    steps.push(idx);
    available.extend(e.outputs.iter().cloned());
    Ok(())
}

/// Cast `a` to `t` (strictly: a value that does not fit is an error).
fn conform(a: ArrayRef, t: &DataType) -> std::result::Result<ArrayRef, String> {
    if a.data_type() == t {
        return Ok(a);
    }
    if a.data_type() == &DataType::Null {
        return Ok(arrow::array::new_null_array(t, a.len()));
    }
    let strict = arrow::compute::CastOptions {
        safe: false,
        ..Default::default()
    };
    arrow::compute::cast_with_options(&a, t, &strict).map_err(|e| e.to_string())
}

/// A one-element array of `dtype` holding the JSON value `v`.
fn scalar_array(v: &Value, dtype: DType) -> std::result::Result<ArrayRef, String> {
    thyme_table::webhook::json_array(dtype, false, 1, &|_| v).map_err(|e| e.to_string())
}

/// JSON values (request data) as an array of the feature's type, checked:
/// a value that does not fit names the feature, the row and the value.
pub fn json_to_array(f: &FeatureInfo, qualified: &str, values: &[Value]) -> Result<ArrayRef> {
    let checker = thyme_model::values::Checker::new(&f.ty);
    for (i, v) in values.iter().enumerate() {
        if let Err(m) = checker.check(v) {
            return Err(Error::InvalidRow {
                message: format!("{qualified}, row {i}: {m}"),
                row: Some(i),
                field: Some(qualified.to_string()),
                value: Some(v.clone()),
            });
        }
    }
    let json_text = matches!(f.ty.non_optional(), Type::Map(_) | Type::Struct(_));
    thyme_table::webhook::json_array(f.dtype, json_text, values.len(), &|i| &values[i])
}
