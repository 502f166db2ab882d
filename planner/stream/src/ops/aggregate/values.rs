//! Moving single values between Arrow columns and [`V`].

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Date32Array, Float64Array, Int64Array, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::DataType;
use datafusion::common::ScalarValue;

use super::accum::V;
use thyme_table::error::{Error, Result};
use thyme_table::types::DType;

/// A typed reader over one column.
pub enum Reader<'a> {
    I(&'a Int64Array),
    F(&'a Float64Array),
    B(&'a BooleanArray),
    S(&'a StringArray),
    T(&'a TimestampMicrosecondArray),
    D(&'a Date32Array),
}

impl<'a> Reader<'a> {
    pub fn new(a: &'a ArrayRef) -> Result<Reader<'a>> {
        let any = a.as_any();
        Ok(match a.data_type() {
            DataType::Int64 => Reader::I(any.downcast_ref().expect("int64")),
            DataType::Float64 => Reader::F(any.downcast_ref().expect("float64")),
            DataType::Boolean => Reader::B(any.downcast_ref().expect("bool")),
            DataType::Utf8 => Reader::S(any.downcast_ref().expect("utf8")),
            DataType::Timestamp(_, _) => Reader::T(any.downcast_ref().ok_or_else(|| {
                Error::Unsupported("timestamps in pipelines are microseconds".into())
            })?),
            DataType::Date32 => Reader::D(any.downcast_ref().expect("date32")),
            other => {
                return Err(Error::Unsupported(format!(
                    "a pipeline column of type {other} cannot be aggregated or grouped on"
                )))
            }
        })
    }

    #[inline]
    pub fn get(&self, i: usize) -> V {
        macro_rules! g {
            ($a:expr, $f:expr) => {
                if $a.is_null(i) {
                    V::Null
                } else {
                    $f($a.value(i))
                }
            };
        }
        match self {
            Reader::I(a) => g!(a, V::I),
            Reader::F(a) => g!(a, V::F),
            Reader::B(a) => g!(a, V::B),
            Reader::S(a) => g!(a, |s: &str| V::S(s.into())),
            Reader::T(a) => g!(a, V::I),
            Reader::D(a) => g!(a, |d: i32| V::I(d as i64)),
        }
    }
}

/// One output value of an aggregation.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    V(V),
    List(Vec<V>),
}

/// Builds one output column of a stored type from values, without a
/// per-value allocation for scalar types.
pub enum ColumnBuilder {
    Int(arrow::array::Int64Builder),
    Float(arrow::array::Float64Builder),
    Bool(arrow::array::BooleanBuilder),
    Str(arrow::array::StringBuilder),
    Ts(arrow::array::TimestampMicrosecondBuilder),
    Date(arrow::array::Date32Builder),
    Other(DType, Vec<ScalarValue>),
}

impl ColumnBuilder {
    pub fn new(dtype: DType, cap: usize) -> Self {
        match dtype {
            DType::Int => ColumnBuilder::Int(arrow::array::Int64Builder::with_capacity(cap)),
            DType::Float => ColumnBuilder::Float(arrow::array::Float64Builder::with_capacity(cap)),
            DType::Bool => ColumnBuilder::Bool(arrow::array::BooleanBuilder::with_capacity(cap)),
            DType::Str => {
                ColumnBuilder::Str(arrow::array::StringBuilder::with_capacity(cap, cap * 8))
            }
            DType::Datetime => ColumnBuilder::Ts(
                arrow::array::TimestampMicrosecondBuilder::with_capacity(cap)
                    .with_timezone(thyme_table::types::UTC),
            ),
            DType::Date => ColumnBuilder::Date(arrow::array::Date32Builder::with_capacity(cap)),
            other => ColumnBuilder::Other(other, Vec::with_capacity(cap)),
        }
    }

    pub fn push(&mut self, v: &V) -> Result<()> {
        macro_rules! put {
            ($b:expr, $x:expr) => {
                match $x {
                    Some(x) => $b.append_value(x),
                    None => $b.append_null(),
                }
            };
        }
        match self {
            ColumnBuilder::Int(b) => put!(
                b,
                match v {
                    V::I(i) => Some(*i),
                    V::F(f) => Some(*f as i64),
                    _ => None,
                }
            ),
            ColumnBuilder::Float(b) => put!(b, v.as_f64()),
            ColumnBuilder::Bool(b) => put!(
                b,
                match v {
                    V::B(x) => Some(*x),
                    _ => None,
                }
            ),
            ColumnBuilder::Str(b) => put!(
                b,
                match v {
                    V::S(x) => Some(x.as_ref()),
                    _ => None,
                }
            ),
            ColumnBuilder::Ts(b) => put!(
                b,
                match v {
                    V::I(i) => Some(*i),
                    _ => None,
                }
            ),
            ColumnBuilder::Date(b) => put!(
                b,
                match v {
                    V::I(i) => Some(*i as i32),
                    _ => None,
                }
            ),
            ColumnBuilder::Other(dtype, vals) => vals.push(scalar(*dtype, v)?),
        }
        Ok(())
    }

    pub fn push_cell(&mut self, c: &Cell) -> Result<()> {
        match (c, self) {
            (Cell::V(v), b) => b.push(v),
            (Cell::List(items), ColumnBuilder::Other(dtype, vals)) => {
                vals.push(list_scalar(*dtype, items)?);
                Ok(())
            }
            (Cell::List(_), _) => Err(Error::Internal("a list value for a scalar column".into())),
        }
    }

    pub fn finish(self) -> Result<ArrayRef> {
        Ok(match self {
            ColumnBuilder::Int(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Float(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Bool(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Str(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Ts(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Date(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Other(dtype, vals) => column(dtype, vals)?,
        })
    }
}

/// A scalar of a stored type from a value.
pub fn scalar(dtype: DType, v: &V) -> Result<ScalarValue> {
    let dt = dtype.arrow();
    if v.is_null() {
        return ScalarValue::try_from(&dt).map_err(|e| Error::Internal(e.to_string()));
    }
    let bad = || {
        Error::Internal(format!(
            "pipeline value {v:?} does not fit the output type {dtype}"
        ))
    };
    Ok(match (dtype, v) {
        (DType::Int, V::I(i)) => ScalarValue::Int64(Some(*i)),
        (DType::Int, V::F(f)) => ScalarValue::Int64(Some(*f as i64)),
        (DType::Float, V::F(f)) => ScalarValue::Float64(Some(*f)),
        (DType::Float, V::I(i)) => ScalarValue::Float64(Some(*i as f64)),
        (DType::Bool, V::B(b)) => ScalarValue::Boolean(Some(*b)),
        (DType::Str, V::S(s)) => ScalarValue::Utf8(Some(s.to_string())),
        (DType::Datetime, V::I(i)) => {
            ScalarValue::TimestampMicrosecond(Some(*i), Some(thyme_table::types::UTC.into()))
        }
        (DType::Date, V::I(i)) => ScalarValue::Date32(Some(*i as i32)),
        _ => return Err(bad()),
    })
}

/// A list scalar of a stored list type from values.
pub fn list_scalar(dtype: DType, items: &[V]) -> Result<ScalarValue> {
    let DType::List(elem) = dtype else {
        return Err(Error::Internal(format!("{dtype} is not a list type")));
    };
    let et = elem.dtype();
    let values = items
        .iter()
        .map(|v| scalar(et, v))
        .collect::<Result<Vec<_>>>()?;
    Ok(ScalarValue::List(ScalarValue::new_list_nullable(
        &values,
        &et.arrow(),
    )))
}

/// Build a column from scalars of one type.
pub fn column(dtype: DType, values: Vec<ScalarValue>) -> Result<ArrayRef> {
    if values.is_empty() {
        return Ok(arrow::array::new_empty_array(&dtype.arrow()));
    }
    let a = ScalarValue::iter_to_array(values).map_err(|e| Error::Internal(e.to_string()))?;
    if a.data_type() != &dtype.arrow() {
        return arrow::compute::cast(&a, &dtype.arrow())
            .map_err(|e| Error::Internal(e.to_string()));
    }
    Ok(Arc::clone(&a))
}
