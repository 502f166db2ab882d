//! Arrow batches to Postgres `DataRow` messages.
//!
//! [`encode_batch`] turns a result batch into `DataRow`s for the columns
//! `fields` describe (type, text or binary format, format options), with
//! pgwire's `DataRowEncoder` and `arrow-pg`'s per-value encoder, as
//! `arrow_pg::datatypes::encode_recordbatch` does, with one exception:
//! `timestamptz` text in the ISO date style (the default) for UTC
//! timestamps of years 1 to 9999 is written here as
//! `YYYY-MM-DD HH:MM:SS.ffffff+00`. The generic path formats each such
//! value with chrono's `strftime` and parses the date style again for every
//! value: about 8% of the server's CPU on a point lookup over pgwire. Each
//! cell is byte for byte what `encode_recordbatch` sends (the tests below
//! check that on random batches).

use std::error::Error;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, Field, SchemaRef, TimeUnit, TimestampMicrosecondType};
use arrow::record_batch::RecordBatch;
use arrow_pg::encoder::{encode_value, Encoder};
use bytes::{BufMut, BytesMut};
use chrono::{DateTime, Datelike, Timelike, Utc};
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo};
use pgwire::api::Type;
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;
use pgwire::types::format::FormatOptions;
use pgwire::types::ToSqlText;
use postgres_types::{to_sql_checked, IsNull, ToSql};

/// Whether column `field` / `pg` is `timestamptz` text, in UTC, in the ISO
/// date style: the cells [`IsoUtc`] writes.
fn iso_utc_text(field: &Field, pg: &FieldInfo) -> bool {
    // Field metadata can change the wire type: leave such columns to arrow-pg.
    field.metadata().is_empty()
        && pg.format() == FieldFormat::Text
        && *pg.datatype() == Type::TIMESTAMPTZ
        && matches!(
            field.data_type(),
            DataType::Timestamp(TimeUnit::Microsecond, Some(tz)) if matches!(tz.as_ref(), "UTC" | "+00:00")
        )
        && iso_date_style(&pg.format_options().date_style)
}

/// Whether pgwire would format dates in the ISO style for this `DateStyle`
/// setting (it takes the part before `", "` and falls back to ISO for
/// anything it does not know).
fn iso_date_style(config: &str) -> bool {
    let style = config.split_once(", ").map_or(config, |(s, _)| s);
    !matches!(
        style.trim().to_ascii_lowercase().as_str(),
        "sql" | "german" | "postgres"
    )
}

/// A UTC timestamp in a column [`iso_utc_text`] accepts. Years outside 1 to
/// 9999, and the binary format, go to chrono's value as arrow-pg builds it.
#[derive(Debug)]
struct IsoUtc(DateTime<Utc>);

impl ToSqlText for IsoUtc {
    fn to_sql_text(
        &self,
        ty: &Type,
        out: &mut BytesMut,
        format_options: &FormatOptions,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        let t = &self.0;
        let year = t.year();
        if !(1..=9999).contains(&year) {
            return t.fixed_offset().to_sql_text(ty, out, format_options);
        }
        let mut s = [0u8; 29];
        put_digits(&mut s[0..4], year as u32);
        s[4] = b'-';
        put_digits(&mut s[5..7], t.month());
        s[7] = b'-';
        put_digits(&mut s[8..10], t.day());
        s[10] = b' ';
        put_digits(&mut s[11..13], t.hour());
        s[13] = b':';
        put_digits(&mut s[14..16], t.minute());
        s[16] = b':';
        put_digits(&mut s[17..19], t.second());
        s[19] = b'.';
        // chrono's `%.6f` truncates the nanoseconds (a leap second shows
        // as 1_000_000+ µs; keep the last six digits as chrono does).
        put_digits(&mut s[20..26], (t.nanosecond() / 1000) % 1_000_000);
        s[26..29].copy_from_slice(b"+00");
        out.put_slice(&s);
        Ok(IsNull::No)
    }
}

impl ToSql for IsoUtc {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        self.0.fixed_offset().to_sql(ty, out)
    }

    fn accepts(ty: &Type) -> bool {
        <DateTime<chrono::FixedOffset> as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}

/// Write `v` as `out.len()` decimal digits, zero-padded.
fn put_digits(out: &mut [u8], mut v: u32) {
    for d in out.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// The rows of `batch` as `DataRow`s for the result columns `fields`.
pub fn encode_batch(
    fields: Arc<Vec<FieldInfo>>,
    batch: RecordBatch,
) -> Box<dyn Iterator<Item = PgWireResult<DataRow>> + Send + Sync> {
    if fields.len() != batch.num_columns() {
        let err = PgWireError::ApiError(
            format!(
                "{} result columns described, {} produced",
                fields.len(),
                batch.num_columns()
            )
            .into(),
        );
        return Box::new(std::iter::once(Err(err)));
    }
    let schema = batch.schema();
    let iso_utc = schema
        .fields()
        .iter()
        .zip(fields.iter())
        .map(|(f, pg)| iso_utc_text(f, pg))
        .collect();
    let mut rows = Rows {
        columns: batch.columns().to_vec(),
        schema,
        iso_utc,
        encoder: DataRowEncoder::new(fields.clone()),
        fields,
        next: 0,
        len: batch.num_rows(),
    };
    Box::new(std::iter::from_fn(move || rows.next_row()))
}

struct Rows {
    columns: Vec<ArrayRef>,
    schema: SchemaRef,
    /// Per column: written through [`IsoUtc`].
    iso_utc: Vec<bool>,
    encoder: DataRowEncoder,
    fields: Arc<Vec<FieldInfo>>,
    next: usize,
    len: usize,
}

impl Rows {
    fn next_row(&mut self) -> Option<PgWireResult<DataRow>> {
        if self.next == self.len {
            return None;
        }
        let i = self.next;
        self.next += 1;
        for (c, a) in self.columns.iter().enumerate() {
            let pg = &self.fields[c];
            let done = if self.iso_utc[c] {
                let v = (!a.is_null(i))
                    .then(|| a.as_primitive::<TimestampMicrosecondType>().value(i))
                    // Out of chrono's range: NULL, as arrow-pg sends.
                    .and_then(DateTime::from_timestamp_micros)
                    .map(IsoUtc);
                Encoder::encode_field(&mut self.encoder, &v, pg)
            } else {
                encode_value(&mut self.encoder, a, i, self.schema.field(c), pg)
            };
            if let Err(e) = done {
                // Drop the partial row.
                self.encoder.take_row();
                return Some(Err(e));
            }
        }
        Some(Ok(self.encoder.take_row()))
    }
}

#[cfg(test)]
mod tests {
    //! Differential: every batch encodes to the same bytes as arrow-pg's
    //! `encode_recordbatch`, in text and binary formats and several date
    //! styles, on random values with nulls.
    use super::*;
    use arrow::array::{
        BinaryArray, BooleanArray, Date32Array, Float64Array, Int16Array, Int32Array, Int64Array,
        StringArray, TimestampMicrosecondArray,
    };
    use arrow::datatypes::Schema;
    use arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch};
    use pgwire::api::portal::Format;
    use pgwire::types::format::FormatOptions;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// A value from `gen`, or (one time in five) null.
    fn maybe<T>(rng: &mut StdRng, gen: impl FnOnce(&mut StdRng) -> T) -> Option<T> {
        let v = gen(rng);
        (rng.random_range(0..5) != 0).then_some(v)
    }

    fn random_batch(rng: &mut StdRng, n: usize) -> RecordBatch {
        let micros = |rng: &mut StdRng| -> i64 {
            match rng.random_range(0..6) {
                // Around today, with and without fractions.
                0 => 1_700_000_000_000_000 + rng.random_range(-10i64.pow(15)..10i64.pow(15)),
                1 => rng.random_range(-10i64.pow(9)..10i64.pow(9)) * 1_000_000,
                // Early years, before year 1, after 9999, and chrono's edges.
                2 => rng.random_range(-63_000_000_000_000_000i64..-61_000_000_000_000_000),
                3 => rng.random_range(253_000_000_000_000_000i64..254_000_000_000_000_000),
                4 => [i64::MIN, i64::MAX, 0, -1, 1][rng.random_range(0..5)],
                _ => rng.random_range(i64::MIN..i64::MAX),
            }
        };
        let text = |rng: &mut StdRng| -> String {
            let len = rng.random_range(0..12);
            (0..len)
                .map(|_| match rng.random_range(0..4) {
                    0 => 'é',
                    1 => '"',
                    2 => char::from(rng.random_range(32u8..127)),
                    _ => char::from_u32(rng.random_range(0x4e00..0x4f00)).unwrap(),
                })
                .collect()
        };
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter(
                (0..n).map(|_| maybe(rng, |r| r.random::<i64>())),
            )),
            Arc::new(Int32Array::from_iter(
                (0..n).map(|_| maybe(rng, |r| r.random::<i32>())),
            )),
            Arc::new(Int16Array::from_iter(
                (0..n).map(|_| maybe(rng, |r| r.random::<i16>())),
            )),
            Arc::new(BooleanArray::from_iter(
                (0..n).map(|_| maybe(rng, |r| r.random::<bool>())),
            )),
            Arc::new(StringArray::from_iter(
                (0..n).map(|_| maybe(rng, |r| text(r))),
            )),
            Arc::new(Float64Array::from_iter((0..n).map(|_| {
                maybe(rng, |r| match r.random_range(0..4) {
                    0 => f64::from_bits(r.random()),
                    1 => r.random_range(-1e6..1e6),
                    2 => [f64::NAN, f64::INFINITY, -0.0, 1e300][r.random_range(0..4)],
                    _ => r.random_range(-100i64..100) as f64,
                })
            }))),
            Arc::new(
                TimestampMicrosecondArray::from_iter((0..n).map(|_| maybe(rng, |r| micros(r))))
                    .with_timezone("UTC"),
            ),
            Arc::new(TimestampMicrosecondArray::from_iter(
                (0..n).map(|_| maybe(rng, |r| micros(r) / 1000)),
            )),
            Arc::new(Date32Array::from_iter(
                (0..n).map(|_| maybe(rng, |r| r.random_range(-800_000..3_000_000))),
            )),
            Arc::new(BinaryArray::from_iter(
                (0..n).map(|_| maybe(rng, |r| text(r).into_bytes())),
            )),
        ];
        let schema = Schema::new(
            cols.iter()
                .enumerate()
                .map(|(i, c)| Field::new(format!("c{i}"), c.data_type().clone(), true))
                .collect::<Vec<_>>(),
        );
        RecordBatch::try_new(Arc::new(schema), cols).unwrap()
    }

    fn rows(
        it: impl Iterator<Item = PgWireResult<DataRow>>,
    ) -> Vec<Result<(i16, Vec<u8>), String>> {
        it.map(|r| {
            r.map(|r| (r.field_count, r.data.to_vec()))
                .map_err(|e| e.to_string())
        })
        .collect()
    }

    #[test]
    fn same_bytes_as_arrow_pg() {
        let seed: u64 = std::env::var("THYME_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(rand::random);
        println!("seed {seed}");
        let mut rng = StdRng::seed_from_u64(seed);
        let mut compared = 0;
        for round in 0..40 {
            let n = rng.random_range(0..200);
            let batch = random_batch(&mut rng, n);
            let formats = [
                Format::UnifiedText,
                Format::UnifiedBinary,
                Format::Individual((0..batch.num_columns()).map(|c| (c % 2) as i16).collect()),
            ];
            let format = &formats[round % formats.len()];
            for style in [
                "ISO, MDY", "ISO", "SQL, DMY", "Postgres", "German", "iso, ymd",
            ] {
                let mut options = FormatOptions::default();
                options.date_style = style.into();
                let options = Arc::new(options);
                let fields: Vec<FieldInfo> =
                    arrow_schema_to_pg_fields(batch.schema_ref(), format, None)
                        .unwrap()
                        .into_iter()
                        .map(|f| f.with_format_options(options.clone()))
                        .collect();
                let fields = Arc::new(fields);
                let want = rows(encode_recordbatch(fields.clone(), batch.clone()));
                let got = rows(encode_batch(fields, batch.clone()));
                assert_eq!(got.len(), want.len());
                for (r, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(g, w, "seed {seed}, row {r}, date style {style}");
                }
                compared += want.len();
            }
        }
        assert!(compared > 1000, "only {compared} rows compared");
    }

    #[test]
    fn timestamps_match_postgres_text() {
        let ts = TimestampMicrosecondArray::from(vec![
            Some(1_704_067_200_000_000),
            Some(1_704_067_200_123_456),
            Some(-1),
            None,
        ])
        .with_timezone("UTC");
        let schema = Schema::new(vec![Field::new("t", ts.data_type().clone(), true)]);
        let batch = RecordBatch::try_new(Arc::new(schema), vec![Arc::new(ts)]).unwrap();
        let fields = Arc::new(
            arrow_schema_to_pg_fields(batch.schema_ref(), &Format::UnifiedText, None).unwrap(),
        );
        let got: Vec<Option<String>> = encode_batch(fields, batch)
            .map(|r| {
                let r = r.unwrap();
                let len = i32::from_be_bytes(r.data[..4].try_into().unwrap());
                (len >= 0).then(|| String::from_utf8(r.data[4..].to_vec()).unwrap())
            })
            .collect();
        assert_eq!(
            got,
            vec![
                Some("2024-01-01 00:00:00.000000+00".to_string()),
                Some("2024-01-01 00:00:00.123456+00".to_string()),
                Some("1969-12-31 23:59:59.999999+00".to_string()),
                None,
            ]
        );
    }
}
