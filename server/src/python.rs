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

use std::collections::HashMap;
use std::ffi::CString;
use std::sync::{Arc, Mutex, Once};

use arrow::array::{
    Array, ArrayRef, BinaryArray, BooleanArray, BooleanBuilder, Date32Array, Date32Builder,
    Float64Array, Float64Builder, Int64Array, Int64Builder, ListArray, StringArray, StringBuilder,
    TimestampMicrosecondArray, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use pyo3::prelude::*;
use pyo3::types::PyList;
use thyme_model::payload::Func;
use thyme_planner::pipeline::PythonRuntime;
use thyme_planner::{Error, Result};

const HELPERS: &str = r#"
import math, textwrap, datetime as _dt

def load(source, kind, name, imports):
    ns = {}
    for line in (imports or "").splitlines():
        try:
            exec(line, ns)
        except Exception:
            pass
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
}

static INIT: Once = Once::new();

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
    pub fn new() -> Result<Arc<Self>> {
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
            Ok(Arc::new(Interpreter {
                helpers: helpers.unbind(),
                funcs: Mutex::new(HashMap::new()),
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

impl PythonRuntime for Interpreter {
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
