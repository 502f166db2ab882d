//! Byte encodings of keys and rows.
//!
//! **Keys** use an order-preserving, prefix-free encoding, field after field,
//! so byte order is key order and the store can place a key's versions
//! together:
//! - `int` / `datetime`: 8 bytes big-endian with the sign bit flipped;
//! - `date`: 4 bytes, likewise; `bool`: one byte;
//! - `str` / `bytes`: the bytes with `00` escaped as `00 FF`, then `00 01`.
//!
//! **Rows** are a null bitmap followed by the non-null values in field order:
//! `int`/`datetime` 8 bytes LE, `float` 8 bytes LE, `bool` 1 byte, `date`
//! 4 bytes LE, `str`/`bytes` a u32 LE length and the bytes, `decimal` 16
//! bytes LE (the unscaled i128), a list a u32 LE element count, a null
//! bitmap of the elements and the non-null elements. Rows decode straight
//! into Arrow builders ([`RowDecoder`]).

use std::sync::Arc;

use arrow::array::builder::NullBufferBuilder;
use arrow::array::{
    Array, ArrayRef, BinaryArray, BinaryBuilder, BooleanArray, BooleanBuilder, Date32Array,
    Date32Builder, Decimal128Array, Decimal128Builder, Float64Array, Float64Builder, Int64Array,
    Int64Builder, ListArray, StringArray, StringBuilder, TimestampMicrosecondArray,
    TimestampMicrosecondBuilder,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{FieldRef, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;

use crate::catalog::{Dataset, Decay};
use crate::error::{Error, Result};
use crate::types::{DType, DECIMAL_PRECISION, UTC};

/// A typed view of one column of a batch that matches a dataset's schema.
pub enum Col<'a> {
    Int(&'a Int64Array),
    Float(&'a Float64Array),
    Bool(&'a BooleanArray),
    Str(&'a StringArray),
    Bytes(&'a BinaryArray),
    Ts(&'a TimestampMicrosecondArray),
    Date(&'a Date32Array),
    Decimal(&'a Decimal128Array),
    List(&'a ListArray, Box<Col<'a>>),
}

impl<'a> Col<'a> {
    pub fn new(dtype: DType, a: &'a ArrayRef) -> Result<Self> {
        fn dc<T: 'static>(a: &ArrayRef) -> Result<&T> {
            a.as_any()
                .downcast_ref::<T>()
                .ok_or_else(|| Error::Internal(format!("unexpected array type {}", a.data_type())))
        }
        Ok(match dtype {
            DType::Int => Col::Int(dc(a)?),
            DType::Float => Col::Float(dc(a)?),
            DType::Bool => Col::Bool(dc(a)?),
            DType::Str => Col::Str(dc(a)?),
            DType::Bytes => Col::Bytes(dc(a)?),
            DType::Datetime => Col::Ts(dc(a)?),
            DType::Date => Col::Date(dc(a)?),
            DType::Decimal(_) => Col::Decimal(dc(a)?),
            DType::List(e) => {
                let list: &ListArray = dc(a)?;
                Col::List(list, Box::new(Col::new(e.dtype(), list.values())?))
            }
        })
    }

    pub fn is_null(&self, i: usize) -> bool {
        match self {
            Col::Int(a) => a.is_null(i),
            Col::Float(a) => a.is_null(i),
            Col::Bool(a) => a.is_null(i),
            Col::Str(a) => a.is_null(i),
            Col::Bytes(a) => a.is_null(i),
            Col::Ts(a) => a.is_null(i),
            Col::Date(a) => a.is_null(i),
            Col::Decimal(a) => a.is_null(i),
            Col::List(a, _) => a.is_null(i),
        }
    }

    fn encode_value(&self, i: usize, out: &mut Vec<u8>) {
        match self {
            Col::Int(a) => out.extend_from_slice(&a.value(i).to_le_bytes()),
            Col::Ts(a) => out.extend_from_slice(&a.value(i).to_le_bytes()),
            Col::Float(a) => out.extend_from_slice(&a.value(i).to_le_bytes()),
            Col::Bool(a) => out.push(a.value(i) as u8),
            Col::Date(a) => out.extend_from_slice(&a.value(i).to_le_bytes()),
            Col::Str(a) => {
                let v = a.value(i).as_bytes();
                out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                out.extend_from_slice(v);
            }
            Col::Bytes(a) => {
                let v = a.value(i);
                out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                out.extend_from_slice(v);
            }
            Col::Decimal(a) => out.extend_from_slice(&a.value(i).to_le_bytes()),
            Col::List(a, items) => {
                let offsets = a.value_offsets();
                let (start, end) = (offsets[i] as usize, offsets[i + 1] as usize);
                let n = end - start;
                out.extend_from_slice(&(n as u32).to_le_bytes());
                let bitmap_at = out.len();
                out.resize(bitmap_at + n.div_ceil(8), 0);
                for (k, j) in (start..end).enumerate() {
                    if items.is_null(j) {
                        out[bitmap_at + k / 8] |= 1 << (k % 8);
                    } else {
                        items.encode_value(j, out);
                    }
                }
            }
        }
    }

    pub fn encode_key(&self, i: usize, out: &mut Vec<u8>) {
        match self {
            Col::Int(a) => key_i64(a.value(i), out),
            Col::Ts(a) => key_i64(a.value(i), out),
            Col::Date(a) => out.extend_from_slice(&((a.value(i) as u32) ^ (1 << 31)).to_be_bytes()),
            Col::Bool(a) => out.push(a.value(i) as u8),
            Col::Str(a) => key_bytes(a.value(i).as_bytes(), out),
            Col::Bytes(a) => key_bytes(a.value(i), out),
            // Lists and decimals are refused as keys by validation; keep
            // their bytes distinct anyway.
            Col::Decimal(_) | Col::List(..) => {
                let mut v = Vec::new();
                self.encode_value(i, &mut v);
                key_bytes(&v, out)
            }
            // Float keys are refused by validation; order them anyway.
            Col::Float(a) => {
                let b = a.value(i).to_bits();
                let b = if b >> 63 == 1 { !b } else { b ^ (1 << 63) };
                out.extend_from_slice(&b.to_be_bytes())
            }
        }
    }

    /// The value at `i` as a timestamp in microseconds (for the event-time column).
    pub fn ts(&self, i: usize) -> i64 {
        match self {
            Col::Ts(a) => a.value(i),
            Col::Int(a) => a.value(i),
            _ => 0,
        }
    }
}

fn key_i64(v: i64, out: &mut Vec<u8>) {
    out.extend_from_slice(&((v as u64) ^ (1 << 63)).to_be_bytes());
}

fn key_bytes(v: &[u8], out: &mut Vec<u8>) {
    for &b in v {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0, 1]);
}

/// Encodes the rows of one batch (already shaped like the dataset).
pub struct RowEncoder<'a> {
    cols: Vec<Col<'a>>,
    key_idx: &'a [usize],
    ts_idx: usize,
}

impl<'a> RowEncoder<'a> {
    pub fn new(ds: &'a Dataset, batch: &'a RecordBatch) -> Result<Self> {
        let cols = ds
            .fields()
            .iter()
            .zip(batch.columns())
            .map(|(f, a)| Col::new(f.dtype, a))
            .collect::<Result<Vec<_>>>()?;
        Ok(RowEncoder {
            cols,
            key_idx: ds.key_indices(),
            ts_idx: ds.ts_index(),
        })
    }

    pub fn ts(&self, row: usize) -> i64 {
        self.cols[self.ts_idx].ts(row)
    }

    /// Encode row `row` into `out` (cleared first).
    pub fn encode_row(&self, row: usize, out: &mut Vec<u8>) {
        out.clear();
        let n = self.cols.len();
        let bitmap_len = n.div_ceil(8);
        out.resize(bitmap_len, 0);
        for (j, c) in self.cols.iter().enumerate() {
            if c.is_null(row) {
                out[j / 8] |= 1 << (j % 8);
            } else {
                c.encode_value(row, out);
            }
        }
    }

    /// Encode only the key and event time of `row` (a delete marker's row).
    pub fn encode_key_row(&self, row: usize, out: &mut Vec<u8>) {
        out.clear();
        let n = self.cols.len();
        out.resize(n.div_ceil(8), 0);
        for (j, c) in self.cols.iter().enumerate() {
            if self.key_idx.contains(&j) || j == self.ts_idx {
                c.encode_value(row, out);
            } else {
                out[j / 8] |= 1 << (j % 8);
            }
        }
    }

    /// Encode the key fields of `row` into `out` (cleared first).
    pub fn encode_key(&self, row: usize, out: &mut Vec<u8>) {
        out.clear();
        for &k in self.key_idx {
            self.cols[k].encode_key(row, out);
        }
    }
}

/// Encode one key field from a scalar (used for pushed-down predicates).
/// Returns `None` when the scalar cannot be a value of the field (so nothing
/// can match).
pub fn encode_key_scalar(dtype: DType, v: &ScalarValue, out: &mut Vec<u8>) -> Option<()> {
    // A fractional number never equals an integer key (casting would truncate).
    let fractional = match v {
        ScalarValue::Float64(Some(f)) => f.fract() != 0.0,
        ScalarValue::Float32(Some(f)) => f.fract() != 0.0,
        _ => false,
    };
    if fractional && dtype != DType::Float {
        return None;
    }
    let v = v.cast_to(&dtype.arrow()).ok()?;
    match (dtype, v) {
        (DType::Int, ScalarValue::Int64(Some(x))) => key_i64(x, out),
        (DType::Datetime, ScalarValue::TimestampMicrosecond(Some(x), _)) => key_i64(x, out),
        (DType::Date, ScalarValue::Date32(Some(x))) => {
            out.extend_from_slice(&((x as u32) ^ (1 << 31)).to_be_bytes())
        }
        (DType::Bool, ScalarValue::Boolean(Some(x))) => out.push(x as u8),
        (DType::Str, ScalarValue::Utf8(Some(x))) => key_bytes(x.as_bytes(), out),
        (DType::Bytes, ScalarValue::Binary(Some(x))) => key_bytes(&x, out),
        _ => return None,
    }
    Some(())
}

enum Builder {
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
    Str(StringBuilder),
    Bytes(BinaryBuilder),
    Ts(TimestampMicrosecondBuilder),
    Date(Date32Builder),
    Decimal(Decimal128Builder),
    List {
        field: FieldRef,
        offsets: Vec<i32>,
        nulls: NullBufferBuilder,
        items: Box<Builder>,
    },
}

impl Builder {
    fn new(dtype: DType, cap: usize) -> Self {
        match dtype {
            DType::Decimal(s) => Builder::Decimal(
                Decimal128Builder::with_capacity(cap)
                    .with_precision_and_scale(DECIMAL_PRECISION, s as i8)
                    .expect("valid decimal precision and scale"),
            ),
            DType::List(e) => {
                let arrow::datatypes::DataType::List(field) = dtype.arrow() else {
                    unreachable!("a list type")
                };
                let mut offsets = Vec::with_capacity(cap + 1);
                offsets.push(0);
                Builder::List {
                    field,
                    offsets,
                    nulls: NullBufferBuilder::new(cap),
                    items: Box::new(Builder::new(e.dtype(), cap * 4)),
                }
            }
            DType::Int => Builder::Int(Int64Builder::with_capacity(cap)),
            DType::Float => Builder::Float(Float64Builder::with_capacity(cap)),
            DType::Bool => Builder::Bool(BooleanBuilder::with_capacity(cap)),
            DType::Str => Builder::Str(StringBuilder::with_capacity(cap, cap * 16)),
            DType::Bytes => Builder::Bytes(BinaryBuilder::with_capacity(cap, cap * 16)),
            DType::Datetime => {
                Builder::Ts(TimestampMicrosecondBuilder::with_capacity(cap).with_timezone(UTC))
            }
            DType::Date => Builder::Date(Date32Builder::with_capacity(cap)),
        }
    }

    fn append_null(&mut self) {
        match self {
            Builder::Int(b) => b.append_null(),
            Builder::Float(b) => b.append_null(),
            Builder::Bool(b) => b.append_null(),
            Builder::Str(b) => b.append_null(),
            Builder::Bytes(b) => b.append_null(),
            Builder::Ts(b) => b.append_null(),
            Builder::Date(b) => b.append_null(),
            Builder::Decimal(b) => b.append_null(),
            Builder::List { offsets, nulls, .. } => {
                offsets.push(*offsets.last().expect("starts with 0"));
                nulls.append_null();
            }
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Int(b) => Arc::new(b.finish()),
            Builder::Float(b) => Arc::new(b.finish()),
            Builder::Bool(b) => Arc::new(b.finish()),
            Builder::Str(b) => Arc::new(b.finish()),
            Builder::Bytes(b) => Arc::new(b.finish()),
            Builder::Ts(b) => Arc::new(b.finish()),
            Builder::Date(b) => Arc::new(b.finish()),
            Builder::Decimal(b) => Arc::new(b.finish()),
            Builder::List {
                field,
                offsets,
                nulls,
                items,
            } => {
                let offs = OffsetBuffer::new(std::mem::replace(offsets, vec![0]).into());
                Arc::new(ListArray::new(
                    field.clone(),
                    offs,
                    items.finish(),
                    nulls.finish(),
                ))
            }
        }
    }

    /// Decode one non-null value from the front of `rest`.
    fn append_value(&mut self, rest: &mut &[u8]) -> Result<()> {
        match self {
            Builder::Int(b) => {
                b.append_value(i64::from_le_bytes(take(rest, 8)?.try_into().expect("8")))
            }
            Builder::Ts(b) => {
                b.append_value(i64::from_le_bytes(take(rest, 8)?.try_into().expect("8")))
            }
            Builder::Float(b) => {
                b.append_value(f64::from_le_bytes(take(rest, 8)?.try_into().expect("8")))
            }
            Builder::Bool(b) => b.append_value(take(rest, 1)?[0] != 0),
            Builder::Date(b) => {
                b.append_value(i32::from_le_bytes(take(rest, 4)?.try_into().expect("4")))
            }
            Builder::Str(b) => {
                let len = u32::from_le_bytes(take(rest, 4)?.try_into().expect("4"));
                let s = take(rest, len as usize)?;
                b.append_value(
                    std::str::from_utf8(s)
                        .map_err(|_| Error::Internal("invalid utf-8 in a stored row".into()))?,
                )
            }
            Builder::Bytes(b) => {
                let len = u32::from_le_bytes(take(rest, 4)?.try_into().expect("4"));
                b.append_value(take(rest, len as usize)?)
            }
            Builder::Decimal(b) => {
                b.append_value(i128::from_le_bytes(take(rest, 16)?.try_into().expect("16")))
            }
            Builder::List {
                offsets,
                nulls,
                items,
                ..
            } => {
                let n = u32::from_le_bytes(take(rest, 4)?.try_into().expect("4")) as usize;
                let bitmap = take(rest, n.div_ceil(8))?;
                for k in 0..n {
                    if bitmap[k / 8] & (1 << (k % 8)) != 0 {
                        items.append_null();
                    } else {
                        items.append_value(rest)?;
                    }
                }
                let last = *offsets.last().expect("starts with 0");
                offsets.push(last + n as i32);
                nulls.append_non_null();
            }
        }
        Ok(())
    }
}

fn take<'r>(row: &mut &'r [u8], n: usize) -> Result<&'r [u8]> {
    if row.len() < n {
        return Err(Error::Internal("truncated row in the store".into()));
    }
    let (a, b) = row.split_at(n);
    *row = b;
    Ok(a)
}

fn width(dtype: DType, row: &[u8]) -> Result<usize> {
    Ok(match dtype {
        DType::Int | DType::Float | DType::Datetime => 8,
        DType::Bool => 1,
        DType::Date => 4,
        DType::Decimal(_) => 16,
        DType::Str | DType::Bytes => {
            let mut r = row;
            let len = take(&mut r, 4)?;
            4 + u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize
        }
        DType::List(e) => {
            let mut r = row;
            let n = u32::from_le_bytes(take(&mut r, 4)?.try_into().expect("4 bytes")) as usize;
            let bitmap = take(&mut r, n.div_ceil(8))?;
            let mut total = 4 + n.div_ceil(8);
            for k in 0..n {
                if bitmap[k / 8] & (1 << (k % 8)) == 0 {
                    let w = width(e.dtype(), r)?;
                    take(&mut r, w)?;
                    total += w;
                }
            }
            total
        }
    })
}

/// Decodes stored rows into Arrow columns, keeping only the projected fields.
pub struct RowDecoder {
    dtypes: Vec<DType>,
    /// For every field: its builder slot in the output, if projected.
    slots: Vec<Option<usize>>,
    builders: Vec<Builder>,
    schema: SchemaRef,
    rows: usize,
}

impl RowDecoder {
    /// `projection` lists dataset field positions in output order.
    pub fn new(ds: &Dataset, projection: &[usize], schema: SchemaRef, cap: usize) -> Self {
        let dtypes: Vec<DType> = ds.fields().iter().map(|f| f.dtype).collect();
        let mut slots = vec![None; dtypes.len()];
        let mut builders = Vec::with_capacity(projection.len());
        for (out, &p) in projection.iter().enumerate() {
            slots[p] = Some(out);
            builders.push(Builder::new(dtypes[p], cap));
        }
        RowDecoder {
            dtypes,
            slots,
            builders,
            schema,
            rows: 0,
        }
    }

    /// Rows appended so far.
    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Append one stored row.
    pub fn append(&mut self, row: &[u8]) -> Result<()> {
        let n = self.dtypes.len();
        let mut rest = row;
        let bitmap = take(&mut rest, n.div_ceil(8))?;
        for j in 0..n {
            let null = bitmap[j / 8] & (1 << (j % 8)) != 0;
            let dtype = self.dtypes[j];
            match self.slots[j] {
                None => {
                    if !null {
                        let w = width(dtype, rest)?;
                        take(&mut rest, w)?;
                    }
                }
                Some(slot) => {
                    let b = &mut self.builders[slot];
                    if null {
                        b.append_null();
                        continue;
                    }
                    b.append_value(&mut rest)?;
                }
            }
        }
        self.rows += 1;
        Ok(())
    }

    /// Finish the current batch, with `extra` columns appended after the
    /// projected fields.
    pub fn finish(&mut self, extra: Vec<ArrayRef>) -> Result<RecordBatch> {
        let mut cols: Vec<ArrayRef> = self.builders.iter_mut().map(|b| b.finish()).collect();
        cols.extend(extra);
        let rows = std::mem::take(&mut self.rows);
        let opts = arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(rows));
        RecordBatch::try_new_with_options(self.schema.clone(), cols, &opts)
            .map_err(|e| Error::Internal(e.to_string()))
    }
}

/// Reading decayed fields (`ExpDecaySum` outputs): the decay itself is
/// resolved with the dataset ([`Decay`]), applied here where rows decode.
impl Decay {
    /// The row as read at `as_of` (`i64::MAX`: now): every decayed field
    /// multiplied by `2^(-(as_of - ts) / half_life)`.
    pub fn apply(&self, ds: &Dataset, row: &[u8], as_of: i64) -> Result<Vec<u8>> {
        let read_at = if as_of == i64::MAX {
            chrono::Utc::now().timestamp_micros()
        } else {
            as_of
        };
        let mut out = row.to_vec();
        let n = ds.fields().len();
        let bitmap_len = n.div_ceil(8);
        let mut pos = bitmap_len;
        let mut ts = None;
        let mut offsets = vec![None; n];
        for (j, f) in ds.fields().iter().enumerate() {
            if row[j / 8] & (1 << (j % 8)) != 0 {
                continue;
            }
            let w = width(f.dtype, &row[pos..])?;
            offsets[j] = Some(pos);
            if j == ds.ts_index() {
                ts = Some(i64::from_le_bytes(
                    row[pos..pos + 8].try_into().expect("8 bytes"),
                ));
            }
            pos += w;
        }
        let Some(ts) = ts else { return Ok(out) };
        for &(j, h) in &self.fields {
            if let Some(p) = offsets[j] {
                let v = f64::from_le_bytes(row[p..p + 8].try_into().expect("8 bytes"));
                let d = v * (-((read_at - ts).max(0) as f64) / h).exp2();
                out[p..p + 8].copy_from_slice(&d.to_le_bytes());
            }
        }
        Ok(out)
    }
}
