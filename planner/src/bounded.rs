//! Size limits on the functions that build large values from small
//! arguments: `range` / `generate_series` (as arrays), `array_repeat`,
//! `repeat`, `lpad`, `rpad`.
//!
//! Such a value is allocated whole by the function, outside DataFusion's
//! memory pool, so `range(1, 10000000000)` would ask for 80 GB at once. Each
//! of these functions is replaced by a wrapper that computes, from its
//! arguments, how large its output for one batch would be and refuses the
//! call (SQLSTATE 54000, as Postgres' "array size exceeds the maximum
//! allowed" / "requested length too large") when it is over
//! [`MAX_ARRAY_ELEMENTS`] elements or [`MAX_VALUE_BYTES`] bytes, Postgres'
//! own limits for one array and one value. Everything else the wrapper hands
//! to the function unchanged.

use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Int64Type};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl};
use datafusion::prelude::SessionContext;

/// Most elements in the arrays one call builds (Postgres' `MaxArraySize`).
pub const MAX_ARRAY_ELEMENTS: u128 = 134_217_727;
/// Most bytes in the strings one call builds (Postgres' `MaxAllocSize`).
pub const MAX_VALUE_BYTES: u128 = (1 << 30) - 1;

/// What a wrapped function builds, and from which arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Shape {
    /// `range(stop)`, `range(start, stop[, step])`: an integer series.
    Series,
    /// `array_repeat(value, count)`.
    Repeat,
    /// `repeat(text, n)`: `n` copies of the text.
    Text,
    /// `lpad` / `rpad(text, n[, fill])`: `n` characters.
    Pad,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Bounded {
    inner: Arc<ScalarUDF>,
    shape: Shape,
}

fn too_large(what: String) -> DataFusionError {
    DataFusionError::External(Box::new(thyme_table::Error::LimitExceeded(what)))
}

/// Integer argument `i` at each row, if it is a 64-bit integer.
fn ints(arg: &ColumnarValue, rows: usize) -> Option<Box<dyn Fn(usize) -> Option<i64> + '_>> {
    match arg {
        ColumnarValue::Scalar(ScalarValue::Int64(v)) => {
            let v = *v;
            Some(Box::new(move |_| v))
        }
        ColumnarValue::Array(a) if a.data_type() == &DataType::Int64 && a.len() >= rows => {
            let a = a.as_primitive::<Int64Type>();
            Some(Box::new(move |i| a.is_valid(i).then(|| a.value(i))))
        }
        _ => None,
    }
}

/// Byte length of text argument `i` at each row.
fn text_len(arg: &ColumnarValue, rows: usize) -> Option<Box<dyn Fn(usize) -> u128 + '_>> {
    match arg {
        ColumnarValue::Scalar(
            ScalarValue::Utf8(v) | ScalarValue::LargeUtf8(v) | ScalarValue::Utf8View(v),
        ) => {
            let n = v.as_ref().map_or(0, |s| s.len() as u128);
            Some(Box::new(move |_| n))
        }
        ColumnarValue::Array(a) if a.len() >= rows => match a.data_type() {
            DataType::Utf8 => {
                let a = a.as_string::<i32>();
                Some(Box::new(move |i| a.value(i).len() as u128))
            }
            DataType::LargeUtf8 => {
                let a = a.as_string::<i64>();
                Some(Box::new(move |i| a.value(i).len() as u128))
            }
            DataType::Utf8View => {
                let a = a.as_string_view();
                Some(Box::new(move |i| a.value(i).len() as u128))
            }
            _ => None,
        },
        _ => None,
    }
}

impl Bounded {
    /// Refuse the call when its output for these arguments is too large.
    fn check(&self, args: &[ColumnarValue], rows: usize) -> Result<()> {
        let rows = args
            .iter()
            .find_map(|a| match a {
                ColumnarValue::Array(a) => Some(a.len()),
                _ => None,
            })
            .unwrap_or(rows.max(1));
        let name = self.inner.name();
        match self.shape {
            Shape::Series => {
                let parts: Option<Vec<_>> = args.iter().map(|a| ints(a, rows)).collect();
                let Some(parts) = parts else { return Ok(()) };
                let mut total: u128 = 0;
                for i in 0..rows {
                    let (start, stop, step) = match parts.as_slice() {
                        [stop] => (Some(0), stop(i), Some(1)),
                        [start, stop] => (start(i), stop(i), Some(1)),
                        [start, stop, step] => (start(i), stop(i), step(i)),
                        _ => return Ok(()),
                    };
                    let (Some(start), Some(stop), Some(step)) = (start, stop, step) else {
                        continue;
                    };
                    if step != 0 {
                        let span = (stop as i128 - start as i128).unsigned_abs();
                        total += span / step.unsigned_abs() as u128 + 1;
                    }
                }
                if total > MAX_ARRAY_ELEMENTS {
                    return Err(too_large(format!(
                        "{name}: array size exceeds the maximum allowed ({MAX_ARRAY_ELEMENTS} elements)"
                    )));
                }
            }
            Shape::Repeat => {
                let Some(count) = args.get(1).and_then(|a| ints(a, rows)) else {
                    return Ok(());
                };
                let total: u128 = (0..rows)
                    .map(|i| count(i).unwrap_or(0).max(0) as u128)
                    .sum();
                if total > MAX_ARRAY_ELEMENTS {
                    return Err(too_large(format!(
                        "{name}: array size exceeds the maximum allowed ({MAX_ARRAY_ELEMENTS} elements)"
                    )));
                }
            }
            Shape::Text | Shape::Pad => {
                let Some(n) = args.get(1).and_then(|a| ints(a, rows)) else {
                    return Ok(());
                };
                let len = match self.shape {
                    Shape::Text => args.first().and_then(|a| text_len(a, rows)),
                    _ => None,
                };
                let mut total: u128 = 0;
                for i in 0..rows {
                    let times = n(i).unwrap_or(0).max(0) as u128;
                    total += match &len {
                        Some(len) => times * len(i),
                        // A pad's characters take up to 4 bytes each.
                        None => times * 4,
                    };
                }
                if total > MAX_VALUE_BYTES {
                    return Err(too_large(format!(
                        "{name}: requested length too large (at most {MAX_VALUE_BYTES} bytes)"
                    )));
                }
            }
        }
        Ok(())
    }
}

impl ScalarUDFImpl for Bounded {
    delegate_udf!();

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        self.inner.simplify(args, info)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        self.check(&args.args, args.number_rows)?;
        self.inner.invoke_with_args(args)
    }
}

/// Replace the functions of the module docs in `ctx` by their bounded
/// wrappers.
pub fn install(ctx: &SessionContext) {
    let state = ctx.state();
    let functions = state.scalar_functions();
    for (name, shape) in [
        ("range", Shape::Series),
        ("generate_series", Shape::Series),
        ("array_repeat", Shape::Repeat),
        ("repeat", Shape::Text),
        ("lpad", Shape::Pad),
        ("rpad", Shape::Pad),
    ] {
        if let Some(inner) = functions.get(name) {
            ctx.register_udf(ScalarUDF::new_from_impl(Bounded {
                inner: inner.clone(),
                shape,
            }));
        }
    }
}
