//! Arrow results as column-oriented JSON (`{column: [values]}`), the shape
//! the HTTP APIs answer with: integers and floats as numbers (non-finite
//! floats as null), timestamps as RFC 3339 UTC strings, dates as
//! `YYYY-MM-DD`, decimals as exact strings, bytes as base64, lists as
//! arrays. The same encodings the ingestion side reads.

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Date32Array, Decimal128Array,
    Float64Array, Int64Array, LargeStringArray, ListArray, StringArray, StringViewArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, TimeUnit};
use arrow::record_batch::RecordBatch;
use serde_json::{Map, Number, Value};

/// Every column of `batches` (one schema) as a JSON array, in schema order.
pub fn columns(batches: &[RecordBatch]) -> Map<String, Value> {
    let mut out = Map::new();
    let Some(first) = batches.first() else {
        return out;
    };
    for (j, field) in first.schema().fields().iter().enumerate() {
        let mut values = Vec::with_capacity(batches.iter().map(|b| b.num_rows()).sum());
        for b in batches {
            append(b.column(j), &mut values);
        }
        out.insert(field.name().clone(), Value::Array(values));
    }
    out
}

fn append(a: &ArrayRef, out: &mut Vec<Value>) {
    for i in 0..a.len() {
        out.push(value(a.as_ref(), i));
    }
}

/// The JSON value at row `i` of `a`.
pub fn value(a: &dyn Array, i: usize) -> Value {
    if a.is_null(i) {
        return Value::Null;
    }
    let any = a.as_any();
    match a.data_type() {
        DataType::Int64 => any
            .downcast_ref::<Int64Array>()
            .map(|x| Value::from(x.value(i))),
        DataType::Float64 => any
            .downcast_ref::<Float64Array>()
            .map(|x| Number::from_f64(x.value(i)).map_or(Value::Null, Value::Number)),
        DataType::Boolean => any
            .downcast_ref::<BooleanArray>()
            .map(|x| Value::Bool(x.value(i))),
        DataType::Utf8 => any
            .downcast_ref::<StringArray>()
            .map(|x| Value::from(x.value(i))),
        DataType::LargeUtf8 => any
            .downcast_ref::<LargeStringArray>()
            .map(|x| Value::from(x.value(i))),
        DataType::Utf8View => any
            .downcast_ref::<StringViewArray>()
            .map(|x| Value::from(x.value(i))),
        DataType::Binary => any.downcast_ref::<BinaryArray>().map(|x| {
            use base64::Engine as _;
            Value::from(base64::engine::general_purpose::STANDARD.encode(x.value(i)))
        }),
        DataType::Timestamp(TimeUnit::Microsecond, _) => any
            .downcast_ref::<TimestampMicrosecondArray>()
            .and_then(|x| {
                let t = chrono::DateTime::from_timestamp_micros(x.value(i))?;
                Some(Value::from(
                    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                ))
            }),
        DataType::Date32 => any.downcast_ref::<Date32Array>().and_then(|x| {
            let d = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?
                .checked_add_signed(chrono::TimeDelta::days(i64::from(x.value(i))))?;
            Some(Value::from(d.format("%Y-%m-%d").to_string()))
        }),
        DataType::Decimal128(_, _) => any
            .downcast_ref::<Decimal128Array>()
            .map(|x| Value::from(x.value_as_string(i))),
        DataType::List(_) => any.downcast_ref::<ListArray>().map(|x| {
            let items = x.value(i);
            Value::Array((0..items.len()).map(|k| value(items.as_ref(), k)).collect())
        }),
        DataType::Dictionary(_, _) => {
            let d = a.as_any_dictionary();
            let key = d.normalized_keys()[i];
            Some(value(d.values().as_ref(), key))
        }
        _ => None,
    }
    .unwrap_or_else(|| {
        // Types Thyme does not store (computed columns): their display text.
        arrow::util::display::array_value_to_string(a, i).map_or(Value::Null, Value::from)
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, ListBuilder, StringArray, StringBuilder};
    use arrow::datatypes::{Field, Schema};
    use serde_json::json;

    use super::*;

    #[test]
    fn columns_as_json() {
        let mut tags = ListBuilder::new(StringBuilder::new());
        tags.values().append_value("a");
        tags.append(true);
        tags.append(false);
        let ts = TimestampMicrosecondArray::from(vec![Some(1_705_320_000_000_000), None])
            .with_timezone("UTC");
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("tags", tags.finish().data_type().clone(), true),
            Field::new("ts", ts.data_type().clone(), true),
        ]));
        let mut tags = ListBuilder::new(StringBuilder::new());
        tags.values().append_value("a");
        tags.append(true);
        tags.append(false);
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec![Some("x"), None])),
                Arc::new(tags.finish()),
                Arc::new(ts),
            ],
        )
        .unwrap();
        let got = Value::Object(columns(&[batch]));
        assert_eq!(
            got,
            json!({"k": [1, 2], "name": ["x", null], "tags": [["a"], null], "ts": ["2024-01-15T12:00:00Z", null]})
        );
    }
}
