//! The embedded Python interpreter (pyo3) that runs the functions shipped
//! with pipelines: `filter` / `assign` lambdas and `transform` functions,
//! a batch at a time.
//!
//! A batch becomes a pandas DataFrame (ints, floats, bools, strings, bytes,
//! datetimes as UTC timestamps, dates, lists; nulls as `None` / nullable
//! dtypes); the function's result (a Series, list or DataFrame) is converted
//! back to the declared Arrow type. Functions are built once from their
//! source text with the import lines of their module and cached. The
//! interpreter finds packages (pandas, the `thyme` SDK) in the virtualenv
//! named by `VIRTUAL_ENV` and in `THYME_PYTHONPATH`, besides its own.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

use arrow::array::{
    Array, ArrayRef, BinaryArray, BooleanArray, BooleanBuilder, Date32Array, Date32Builder,
    Float64Array, Float64Builder, Int64Array, Int64Builder, ListArray, StringArray, StringBuilder,
    TimestampMicrosecondArray, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use pyo3::prelude::*;
use pyo3::types::{PyCFunction, PyDict, PyList, PyTuple};
use thyme_model::payload::Func;
use thyme_planner::{Error, Result};
use thyme_table::read::DatasetReader;
use thyme_table::udf::ExtractorCall;
use thyme_table::udf::PythonRuntime;

const HELPERS: &str = r#"
import math, textwrap, datetime as _dt

def _sdk_import(line):
    # The SDK's own imports (decorators, type names) are not needed to run
    # shipped code, and the server's Python need not have the SDK.
    words = line.replace(",", " ").split()
    return len(words) > 1 and words[0] in ("import", "from") and words[1].split(".")[0] == "thyme"

def _code(source, kind, name):
    if kind == "lambda":
        return compile(source, "<" + name + ">", "eval")
    return compile(textwrap.dedent(source), "<" + name + ">", "exec")

def _used_names(code):
    """Every global or attribute name the code (and code nested in it)
    refers to: a superset of the module names it needs."""
    import types
    out = set()
    todo = [code]
    while todo:
        c = todo.pop()
        out.update(c.co_names)
        out.update(c.co_freevars)
        todo.extend(k for k in c.co_consts if isinstance(k, types.CodeType))
    return out

def _bound_names(line):
    """The names an import line binds (None: it cannot be told)."""
    import ast
    try:
        tree = ast.parse(line.strip())
    except SyntaxError:
        return None
    out = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            out.update(a.asname or a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if any(a.name == "*" for a in node.names):
                return None
            out.update(a.asname or a.name for a in node.names)
        else:
            return None
    return out

def run_imports(imports, ns, used):
    """Run a module's import lines in ns. A line that fails is skipped when
    the function uses none of the names it binds (a helper module of the
    client's project, say); otherwise its failure is the answer (None when
    every needed import ran)."""
    for line in (imports or "").splitlines():
        if not line.strip():
            continue
        try:
            exec(line, ns)
        except Exception as e:
            bound = _bound_names(line)
            if _sdk_import(line) or (bound is not None and not (bound & used)):
                continue
            return f"the import {line.strip()!r} fails in the server's Python: {type(e).__name__}: {e}"
    return None

def check(source, kind, name, imports):
    try:
        code = _code(source, kind, name)
    except SyntaxError as e:
        text = (e.text or "").strip()
        return f"{name} does not compile: {e.msg} (line {e.lineno}: {text!r})"
    return run_imports(imports, {}, _used_names(code))

def load(source, kind, name, imports):
    ns = {}
    problem = run_imports(imports, ns, _used_names(_code(source, kind, name)))
    if problem:
        raise ImportError(problem)
    if kind == "lambda":
        return eval(source, ns)
    exec(textwrap.dedent(source), ns)
    return ns[name]

def frame(cols):
    import pandas as pd
    data = {}
    for name, kind, values in cols:
        if kind == "datetime":
            data[name] = pd.to_datetime(pd.Series(values, dtype="object"), unit="us", utc=True)
        elif kind == "date":
            data[name] = pd.Series([None if v is None else _dt.date.fromordinal(719163 + v) for v in values], dtype="object")
        elif kind == "int" and any(v is None for v in values):
            data[name] = pd.array(values, dtype="Int64")
        elif kind == "bool" and any(v is None for v in values):
            data[name] = pd.array(values, dtype="boolean")
        else:
            data[name] = values
    return pd.DataFrame(data)

def _missing(v):
    import pandas as pd
    if v is None or v is pd.NA or v is pd.NaT:
        return True
    return isinstance(v, float) and math.isnan(v)

def values(x, kind, n):
    import pandas as pd
    if kind == "datetime":
        s = pd.to_datetime(pd.Series(x), utc=True)
        out = [None if pd.isna(v) else v.value // 1000 for v in s]
    elif kind == "date":
        out = [None if _missing(v) else (v.toordinal() - 719163) for v in (x.tolist() if hasattr(x, "tolist") else list(x))]
    else:
        x = x.tolist() if hasattr(x, "tolist") else list(x)
        out = [None if _missing(v) else v for v in x]
    if n is not None and len(out) != n:
        raise ValueError(f"the function returned {len(out)} values for {n} rows")
    return out

class ExtractorError(Exception):
    pass

class _Dataset:
    """A committed dataset inside an extractor: ``Name.lookup(ts, key=...)``
    reads it as of each row's time."""

    def __init__(self, name, describe, read):
        self._name = name
        self._describe = describe
        self._read = read

    def __repr__(self):
        return f"<dataset {self._name}>"

    def lookup(self, ts, *args, fields=None, **keys):
        import pandas as pd
        name = self._name
        key_names, all_fields = self._describe(name)
        given = dict(keys)
        if len(args) == 1 and isinstance(args[0], pd.DataFrame):
            frame_arg = args[0]
            args = tuple(frame_arg[k] for k in key_names if k in frame_arg.columns)
        if len(args) > len(key_names):
            raise TypeError(f"{name}.lookup: {len(args)} key columns for keys {key_names}")
        for k, v in zip(key_names, args):
            given[k] = v
        unknown = [k for k in given if k not in key_names]
        if unknown:
            raise TypeError(f"{name}.lookup: {unknown} are not keys of {name} (keys: {key_names})")
        missing = [k for k in key_names if k not in given]
        if missing:
            raise TypeError(f"{name}.lookup: give the keys {missing}")
        if fields is not None:
            fields = [str(f) for f in fields]
            bad = [f for f in fields if f not in all_fields]
            if bad:
                raise KeyError(f"{name}.lookup: {bad} are not fields of {name} (fields: {all_fields})")
        t = values(ts, "datetime", None)
        key_values = []
        for k in key_names:
            v = given[k]
            v = v.tolist() if hasattr(v, "tolist") else list(v)
            v = [None if _missing(x) else x for x in v]
            if len(v) != len(t):
                raise ValueError(f"{name}.lookup: key {k} has {len(v)} values for {len(t)} timestamps")
            key_values.append(v)
        cols, found = self._read(name, t, key_values, fields)
        return frame(cols), pd.Series(found, dtype=bool, name="found")

def run_extractor(fn, fs_name, ts, inputs, outputs, deps, describe, read):
    import pandas as pd, types
    g = getattr(fn, "__globals__", None)
    if g is not None:
        for d in deps:
            if not isinstance(g.get(d), _Dataset):
                g[d] = _Dataset(d, describe, read)
    n = len(ts)
    ts_s = pd.to_datetime(pd.Series(ts, dtype="object"), unit="us", utc=True)
    df = frame(inputs)
    args = [df[name] for name, _, _ in inputs]
    cls = types.SimpleNamespace(__name__=fs_name)
    try:
        out = fn(cls, ts_s, *args)
    except TimeoutError:
        raise
    except Exception as e:
        import traceback
        lines = [f.lineno for f in traceback.extract_tb(e.__traceback__) if f.filename == "<string>"]
        where = f" (line {lines[-1]} of {getattr(fn, '__name__', 'the extractor')})" if lines else ""
        raise ExtractorError(f"{type(e).__name__}: {e}{where}") from None
    names = [name for name, _ in outputs]
    if isinstance(out, pd.Series):
        if len(outputs) != 1:
            raise TypeError(f"returned a Series for {len(outputs)} outputs; return a DataFrame with columns {names}")
        cols = {names[0]: out}
    elif isinstance(out, pd.DataFrame):
        cols = {}
        for name in names:
            if name in out.columns:
                cols[name] = out[name]
            elif f"{fs_name}.{name}" in out.columns:
                cols[name] = out[f"{fs_name}.{name}"]
            else:
                raise KeyError(f"the result has no column {name!r} (columns: {list(out.columns)})")
    else:
        raise TypeError(f"returned {type(out).__name__}; return a pandas DataFrame with columns {names} (or a Series for one output)")
    result = []
    for name, kind in outputs:
        v = cols[name]
        if len(v) != n:
            raise ValueError(f"returned {len(v)} values of {name} for {n} rows")
        result.append(values(v, kind, n))
    return result

def column(df, name, kind):
    if name not in df.columns:
        raise KeyError(f"the transform's result has no column {name!r} (columns: {list(df.columns)})")
    return values(df[name], kind, None)
"#;

/// Built functions by (source, imports).
type FunctionCache = HashMap<(String, String), Arc<Py<PyAny>>>;

/// The pyo3-backed runtime.
pub struct Interpreter {
    helpers: Py<PyModule>,
    funcs: Mutex<FunctionCache>,
    /// How long one extractor call may run.
    limit: Duration,
    watchdog: Arc<Watchdog>,
    /// `describe` and `read`, the callables behind `Dataset.lookup`.
    reader_fns: OnceLock<(Py<PyAny>, Py<PyAny>)>,
}

/// Interrupts extractor calls that run past their deadline: a thread that
/// raises `TimeoutError` in the calling Python thread (an asynchronous
/// exception, delivered at its next bytecode).
#[derive(Default)]
struct Watchdog {
    next: AtomicU64,
    /// Call id -> (Python thread ident, deadline).
    running: Mutex<HashMap<u64, (std::os::raw::c_ulong, Instant)>>,
    /// Calls that were interrupted.
    fired: Mutex<HashSet<u64>>,
}

impl Watchdog {
    fn start(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("thyme-extractor-watchdog".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_millis(20));
                let Some(w) = me.upgrade() else { return };
                let now = Instant::now();
                let overdue: Vec<u64> = w
                    .running
                    .lock()
                    .expect("watchdog")
                    .iter()
                    .filter(|(_, (_, d))| *d <= now)
                    .map(|(id, _)| *id)
                    .collect();
                if overdue.is_empty() {
                    continue;
                }
                // Holding the GIL, a call still registered is still running
                // Python code (calls deregister before releasing the GIL).
                Python::attach(|_py| {
                    let running = w.running.lock().expect("watchdog");
                    let mut fired = w.fired.lock().expect("watchdog");
                    for id in overdue {
                        if let Some((thread, _)) = running.get(&id) {
                            if fired.insert(id) {
                                // SAFETY: called with the GIL held; the
                                // exception type is a static Python object.
                                unsafe {
                                    pyo3::ffi::PyThreadState_SetAsyncExc(
                                        *thread as std::os::raw::c_long,
                                        pyo3::ffi::PyExc_TimeoutError,
                                    );
                                }
                            }
                        }
                    }
                });
            })
            .expect("watchdog thread");
    }

    /// Register a call made by the current Python thread (GIL held).
    fn enter(&self, limit: Duration) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        // SAFETY: plain query of the current thread's identifier.
        let thread = unsafe { pyo3::ffi::PyThread_get_thread_ident() };
        self.running
            .lock()
            .expect("watchdog")
            .insert(id, (thread, Instant::now() + limit));
        id
    }

    /// Deregister a call (GIL held); whether it was interrupted. A pending
    /// interrupt that the call did not reach is cleared.
    fn leave(&self, id: u64) -> bool {
        let entry = self.running.lock().expect("watchdog").remove(&id);
        let fired = self.fired.lock().expect("watchdog").remove(&id);
        if fired {
            if let Some((thread, _)) = entry {
                // SAFETY: GIL held; NULL clears a pending async exception.
                unsafe {
                    pyo3::ffi::PyThreadState_SetAsyncExc(
                        thread as std::os::raw::c_long,
                        std::ptr::null_mut(),
                    );
                }
            }
        }
        fired
    }
}

static INIT: Once = Once::new();

/// The text of a Python exception (`Type: message`, and where in the
/// extractor it was raised, as `run_extractor` words it).
fn python_error(py: Python<'_>, e: &PyErr) -> String {
    match e.value(py).str() {
        Ok(s) if e.get_type(py).name().is_ok_and(|n| n == "ExtractorError") => s.to_string(),
        _ => e.to_string(),
    }
}

fn py_err(what: &str, e: PyErr) -> Error {
    Error::InvalidDefinition(format!("{what}: {e}"))
}

fn kind(dt: &DataType) -> &'static str {
    match dt {
        DataType::Int64 => "int",
        DataType::Float64 => "float",
        DataType::Boolean => "bool",
        DataType::Timestamp(..) => "datetime",
        DataType::Date32 => "date",
        _ => "other",
    }
}

impl Interpreter {
    /// Start the interpreter (once per process) and load the helpers.
    /// `limit` bounds one extractor call.
    pub fn new(limit: Duration) -> Result<Arc<Self>> {
        INIT.call_once(Python::initialize);
        Python::attach(|py| {
            let site = py.import("site").map_err(|e| py_err("python", e))?;
            let mut dirs: Vec<String> = Vec::new();
            if let Ok(venv) = std::env::var("VIRTUAL_ENV") {
                if let Ok(rd) = std::fs::read_dir(format!("{venv}/lib")) {
                    for e in rd.flatten() {
                        let p = e.path().join("site-packages");
                        if p.is_dir() {
                            dirs.push(p.display().to_string());
                        }
                    }
                }
            }
            if let Ok(extra) = std::env::var("THYME_PYTHONPATH") {
                dirs.extend(extra.split(':').filter(|s| !s.is_empty()).map(String::from));
            }
            for d in dirs {
                site.call_method1("addsitedir", (d,))
                    .map_err(|e| py_err("python", e))?;
            }
            let code = CString::new(HELPERS).expect("no NUL");
            let helpers = PyModule::from_code(py, &code, c"thyme_runtime.py", c"thyme_runtime")
                .map_err(|e| py_err("python helpers", e))?;
            let watchdog = Arc::new(Watchdog::default());
            watchdog.start();
            Ok(Arc::new(Interpreter {
                helpers: helpers.unbind(),
                funcs: Mutex::new(HashMap::new()),
                limit,
                watchdog,
                reader_fns: OnceLock::new(),
            }))
        })
    }

    fn function(&self, py: Python<'_>, f: &Func, imports: &str) -> Result<Arc<Py<PyAny>>> {
        let key = (f.source.clone(), imports.to_string());
        if let Some(x) = self.funcs.lock().expect("lock").get(&key) {
            return Ok(x.clone());
        }
        let obj = self
            .helpers
            .bind(py)
            .call_method1("load", (&f.source, &f.kind, &f.name, imports))
            .map_err(|e| py_err(&format!("python function {}", f.name), e))?;
        let obj = Arc::new(obj.unbind());
        self.funcs.lock().expect("lock").insert(key, obj.clone());
        Ok(obj)
    }

    /// Which interpreter runs shipped code, and where it finds packages.
    fn describe_python(py: Python<'_>) -> String {
        let sys = match py.import("sys") {
            Ok(s) => s,
            Err(_) => return "an embedded Python".into(),
        };
        let get = |a: &str| {
            sys.getattr(a)
                .and_then(|v| v.str().map(|s| s.to_string()))
                .unwrap_or_default()
        };
        let version = get("version");
        let version = version.split_whitespace().next().unwrap_or("");
        let venv = std::env::var("VIRTUAL_ENV").ok();
        format!(
            "Python {version} ({}, prefix {}; VIRTUAL_ENV={}{})",
            get("executable"),
            get("prefix"),
            venv.as_deref().unwrap_or("unset"),
            std::env::var("THYME_PYTHONPATH")
                .map(|p| format!(", THYME_PYTHONPATH={p}"))
                .unwrap_or_default()
        )
    }

    fn frame<'py>(&self, py: Python<'py>, batch: &RecordBatch) -> Result<Bound<'py, PyAny>> {
        let cols = PyList::empty(py);
        for (field, col) in batch.schema().fields().iter().zip(batch.columns()) {
            let values = to_py(py, col)?;
            cols.append((field.name(), kind(field.data_type()), values))
                .map_err(|e| py_err("python", e))?;
        }
        self.helpers
            .bind(py)
            .call_method1("frame", (cols,))
            .map_err(|e| py_err("building the DataFrame", e))
    }
}

fn to_py<'py>(py: Python<'py>, a: &ArrayRef) -> Result<Bound<'py, PyList>> {
    let err = |e: PyErr| py_err("python", e);
    macro_rules! list {
        ($t:ty, $f:expr) => {{
            let a = a.as_any().downcast_ref::<$t>().expect("type checked");
            PyList::new(
                py,
                (0..a.len()).map(|i| if a.is_null(i) { None } else { Some($f(a, i)) }),
            )
            .map_err(err)
        }};
    }
    match a.data_type() {
        DataType::Int64 => list!(Int64Array, |a: &Int64Array, i| a.value(i)),
        DataType::Float64 => list!(Float64Array, |a: &Float64Array, i| a.value(i)),
        DataType::Boolean => list!(BooleanArray, |a: &BooleanArray, i| a.value(i)),
        DataType::Utf8 => list!(StringArray, |a: &StringArray, i| a.value(i).to_string()),
        DataType::Binary => list!(BinaryArray, |a: &BinaryArray, i| a.value(i).to_vec()),
        DataType::Timestamp(..) => {
            list!(
                TimestampMicrosecondArray,
                |a: &TimestampMicrosecondArray, i| a.value(i)
            )
        }
        DataType::Date32 => list!(Date32Array, |a: &Date32Array, i| a.value(i) as i64),
        DataType::List(_) => {
            let l = a.as_any().downcast_ref::<ListArray>().expect("list");
            let out = PyList::empty(py);
            for i in 0..l.len() {
                if l.is_null(i) {
                    out.append(py.None()).map_err(err)?;
                } else {
                    out.append(to_py(py, &l.value(i))?).map_err(err)?;
                }
            }
            Ok(out)
        }
        other => {
            let strs = (0..a.len())
                .map(|i| {
                    (!a.is_null(i)).then(|| {
                        arrow::util::display::array_value_to_string(a, i).unwrap_or_default()
                    })
                })
                .collect::<Vec<_>>();
            let _ = other;
            PyList::new(py, strs).map_err(err)
        }
    }
}

fn from_py(values: &Bound<'_, PyAny>, dt: &DataType, what: &str) -> Result<ArrayRef> {
    let items: Vec<Bound<'_, PyAny>> = values
        .try_iter()
        .map_err(|e| py_err(what, e))?
        .collect::<PyResult<_>>()
        .map_err(|e| py_err(what, e))?;
    let bad = |i: usize, e: PyErr| {
        Error::InvalidDefinition(format!("{what}: value {} does not fit {dt}: {e}", i + 1))
    };
    macro_rules! build {
        ($b:expr, $t:ty) => {{
            let mut b = $b;
            for (i, v) in items.iter().enumerate() {
                if v.is_none() {
                    b.append_null();
                } else {
                    b.append_value(v.extract::<$t>().map_err(|e| bad(i, e.into()))?);
                }
            }
            Arc::new(b.finish()) as ArrayRef
        }};
    }
    Ok(match dt {
        DataType::Int64 => build!(Int64Builder::with_capacity(items.len()), i64),
        DataType::Float64 => build!(Float64Builder::with_capacity(items.len()), f64),
        DataType::Boolean => build!(BooleanBuilder::with_capacity(items.len()), bool),
        DataType::Utf8 => build!(StringBuilder::new(), String),
        DataType::Date32 => build!(Date32Builder::with_capacity(items.len()), i32),
        DataType::Timestamp(_, tz) => {
            let b = TimestampMicrosecondBuilder::with_capacity(items.len());
            let b = match tz {
                Some(tz) => b.with_timezone(tz.clone()),
                None => b,
            };
            build!(b, i64)
        }
        other => {
            return Err(Error::Unsupported(format!(
                "{what}: results of type {other} from Python functions"
            )))
        }
    })
}

/// The callables `describe(name)` and `read(name, ts, keys, fields)` that
/// serve `Dataset.lookup` inside extractors.
fn reader_functions(
    py: Python<'_>,
    reader: Arc<dyn DatasetReader>,
) -> PyResult<(Py<PyAny>, Py<PyAny>)> {
    let to_py_err = |e: Error| pyo3::exceptions::PyValueError::new_err(e.to_string());
    let r = reader.clone();
    let describe = PyCFunction::new_closure(
        py,
        Some(c"describe"),
        None,
        move |args: &Bound<'_, PyTuple>, _kw: Option<&Bound<'_, PyDict>>| -> PyResult<Py<PyAny>> {
            let py = args.py();
            let name: String = args.get_item(0)?.extract()?;
            let (keys, fields) = r.describe(&name).map_err(to_py_err)?;
            let keys: Vec<String> = keys.into_iter().map(|(k, _)| k).collect();
            Ok((keys, fields).into_pyobject(py)?.into_any().unbind())
        },
    )?;
    let read = PyCFunction::new_closure(
        py,
        Some(c"read"),
        None,
        move |args: &Bound<'_, PyTuple>, _kw: Option<&Bound<'_, PyDict>>| -> PyResult<Py<PyAny>> {
            let py = args.py();
            let name: String = args.get_item(0)?.extract()?;
            let ts: Vec<i64> = args.get_item(1)?.extract()?;
            let key_values = args.get_item(2)?;
            let fields: Option<Vec<String>> = args.get_item(3)?.extract()?;
            let (key_types, _) = reader.describe(&name).map_err(to_py_err)?;
            let mut keys = Vec::with_capacity(key_types.len());
            for (i, (k, dt)) in key_types.iter().enumerate() {
                let vals = key_values.get_item(i)?;
                keys.push(
                    from_py(&vals, dt, &format!("{name}.lookup key {k}")).map_err(to_py_err)?,
                );
            }
            let (batch, found) = reader
                .lookup(&name, &keys, &ts, fields.as_deref())
                .map_err(to_py_err)?;
            let cols = PyList::empty(py);
            for (field, col) in batch.schema().fields().iter().zip(batch.columns()) {
                let values = to_py(py, col).map_err(to_py_err)?;
                cols.append((field.name(), kind(field.data_type()), values))?;
            }
            Ok((cols, found).into_pyobject(py)?.into_any().unbind())
        },
    )?;
    Ok((describe.into_any().unbind(), read.into_any().unbind()))
}

impl PythonRuntime for Interpreter {
    fn check(&self, func: &Func, imports: &str) -> std::result::Result<(), String> {
        Python::attach(|py| {
            let r = self
                .helpers
                .bind(py)
                .call_method1("check", (&func.source, &func.kind, &func.name, imports))
                .map_err(|e| python_error(py, &e))?;
            if r.is_none() {
                Ok(())
            } else {
                Err(r.str().map(|s| s.to_string()).unwrap_or_default())
            }
        })
    }

    fn describe(&self) -> String {
        Python::attach(Self::describe_python)
    }

    fn call_extractor(&self, call: &ExtractorCall<'_>) -> Result<Vec<ArrayRef>> {
        let qualified = format!("{}.{}", call.featureset, call.name);
        let fail = |message: String| Error::Extractor {
            extractor: qualified.clone(),
            message,
        };
        let f = Func {
            name: call.name.to_string(),
            source: call.source.to_string(),
            kind: "def".into(),
        };
        Python::attach(|py| {
            let func = self
                .function(py, &f, call.imports)
                .map_err(|e| fail(e.to_string()))?;
            let (describe, read) = match self.reader_fns.get() {
                Some(fns) => (fns.0.clone_ref(py), fns.1.clone_ref(py)),
                None => {
                    let fns = reader_functions(py, call.reader.clone())
                        .map_err(|e| fail(e.to_string()))?;
                    let out = (fns.0.clone_ref(py), fns.1.clone_ref(py));
                    let _ = self.reader_fns.set(fns);
                    out
                }
            };
            let ts = to_py(py, call.ts).map_err(|e| fail(e.to_string()))?;
            let inputs = PyList::empty(py);
            for (name, col) in &call.inputs {
                let values = to_py(py, col).map_err(|e| fail(e.to_string()))?;
                inputs
                    .append((name, kind(col.data_type()), values))
                    .map_err(|e| fail(e.to_string()))?;
            }
            let outputs: Vec<(String, &str)> = call
                .outputs
                .iter()
                .map(|(n, t)| (n.clone(), kind(t)))
                .collect();
            let id = self.watchdog.enter(self.limit);
            let result = self.helpers.bind(py).call_method1(
                "run_extractor",
                (
                    func.bind(py),
                    call.featureset,
                    ts,
                    inputs,
                    outputs,
                    call.deps.to_vec(),
                    describe,
                    read,
                ),
            );
            let interrupted = self.watchdog.leave(id);
            let result = match result {
                Ok(r) => r,
                Err(e)
                    if interrupted && e.is_instance_of::<pyo3::exceptions::PyTimeoutError>(py) =>
                {
                    return Err(Error::ExtractorTimeout {
                        extractor: qualified.clone(),
                        limit_ms: self.limit.as_millis() as u64,
                    })
                }
                Err(e) => return Err(fail(python_error(py, &e))),
            };
            let mut out = Vec::with_capacity(call.outputs.len());
            for (i, (name, dt)) in call.outputs.iter().enumerate() {
                let vals = result.get_item(i).map_err(|e| fail(e.to_string()))?;
                out.push(
                    from_py(&vals, dt, &format!("output {name}")).map_err(|e| match e {
                        Error::InvalidDefinition(m) | Error::Unsupported(m) => fail(m),
                        other => other,
                    })?,
                );
            }
            Ok(out)
        })
    }

    fn call_series(
        &self,
        f: &Func,
        imports: &str,
        batch: &RecordBatch,
        dtype: &DataType,
    ) -> Result<ArrayRef> {
        let what = format!("python function {}", f.name);
        Python::attach(|py| {
            let func = self.function(py, f, imports)?;
            let df = self.frame(py, batch)?;
            let out = func.bind(py).call1((df,)).map_err(|e| py_err(&what, e))?;
            let vals = self
                .helpers
                .bind(py)
                .call_method1("values", (out, kind(dtype), batch.num_rows()))
                .map_err(|e| py_err(&what, e))?;
            from_py(&vals, dtype, &what)
        })
    }

    fn call_frame(
        &self,
        f: &Func,
        imports: &str,
        batch: &RecordBatch,
        schema: SchemaRef,
    ) -> Result<RecordBatch> {
        let what = format!("python function {}", f.name);
        Python::attach(|py| {
            let func = self.function(py, f, imports)?;
            let df = self.frame(py, batch)?;
            let out = func.bind(py).call1((df,)).map_err(|e| py_err(&what, e))?;
            let mut cols = Vec::with_capacity(schema.fields().len());
            for field in schema.fields() {
                let vals = self
                    .helpers
                    .bind(py)
                    .call_method1("column", (&out, field.name(), kind(field.data_type())))
                    .map_err(|e| py_err(&what, e))?;
                cols.push(from_py(&vals, field.data_type(), &what)?);
            }
            let n = cols.first().map_or(0, |c| c.len());
            RecordBatch::try_new_with_options(
                schema,
                cols,
                &arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(n)),
            )
            .map_err(|e| Error::InvalidDefinition(format!("{what}: {e}")))
        })
    }
}

impl std::fmt::Debug for Interpreter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Interpreter")
    }
}
