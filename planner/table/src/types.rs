//! Thyme's field types and how each maps to Arrow and to SQL.
//!
//! | Thyme (`dtype`) | Python          | Arrow                          | Postgres      | SQL names accepted                                   |
//! |-----------------|-----------------|--------------------------------|---------------|------------------------------------------------------|
//! | `int`           | `int`           | `Int64`                        | `int8`        | `BIGINT`, `INT8`, `INTEGER`, `INT`, `INT4`, `SMALLINT`, `INT2` |
//! | `float`         | `float`         | `Float64`                      | `float8`      | `DOUBLE PRECISION`, `FLOAT8`, `FLOAT`, `REAL`, `FLOAT4`  |
//! | `bool`          | `bool`          | `Boolean`                      | `bool`        | `BOOLEAN`, `BOOL`                                    |
//! | `str`           | `str`           | `Utf8`                         | `text`        | `TEXT`, `VARCHAR`, `CHAR`, `STRING`                  |
//! | `bytes`         | `bytes`         | `Binary`                       | `bytea`       | `BYTEA`                                              |
//! | `datetime`      | `datetime`      | `Timestamp(µs, "UTC")`         | `timestamptz` | `TIMESTAMP`, `TIMESTAMPTZ`                           |
//! | `date`          | `date`          | `Date32`                       | `date`        | `DATE`                                               |
//! | `{"decimal": s}`| `Decimal[s]`    | `Decimal128(28, s)`            | `numeric`     | `NUMERIC(p, s)`, `DECIMAL(p, s)` (p <= 28)           |
//! | `{"list": T}`   | `List[T]`       | `List(T)`                      | `T[]`         | `BIGINT[]`, `TEXT[]`, ... (scalar elements)          |
//!
//! `Optional[T]` is `T` with `nullable: true`; list elements are nullable.
//! `Embedding[n]` is stored as `List[float]` (its length is checked on the
//! way in). Key and timestamp fields are never nullable.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, TimeUnit};
use serde::{Deserialize, Serialize};

/// The type of a dataset field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    Int,
    Float,
    Bool,
    Str,
    Bytes,
    Datetime,
    Date,
    /// Exact decimal with this many digits after the point (28 in all).
    Decimal(u8),
    /// A list of scalars.
    List(Elem),
}

/// The element type of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Elem {
    Int,
    Float,
    Bool,
    Str,
    Datetime,
    Date,
}

impl Elem {
    pub fn dtype(self) -> DType {
        match self {
            Elem::Int => DType::Int,
            Elem::Float => DType::Float,
            Elem::Bool => DType::Bool,
            Elem::Str => DType::Str,
            Elem::Datetime => DType::Datetime,
            Elem::Date => DType::Date,
        }
    }

    /// The element type of a scalar type, when lists of it are supported.
    pub fn of(d: DType) -> Option<Elem> {
        Some(match d {
            DType::Int => Elem::Int,
            DType::Float => Elem::Float,
            DType::Bool => Elem::Bool,
            DType::Str => Elem::Str,
            DType::Datetime => Elem::Datetime,
            DType::Date => Elem::Date,
            _ => return None,
        })
    }
}

/// Digits of precision of every decimal.
pub const DECIMAL_PRECISION: u8 = 28;

/// The Arrow timezone of every event-time column.
pub const UTC: &str = "UTC";

impl DType {
    pub fn arrow(&self) -> DataType {
        match self {
            DType::Int => DataType::Int64,
            DType::Float => DataType::Float64,
            DType::Bool => DataType::Boolean,
            DType::Str => DataType::Utf8,
            DType::Bytes => DataType::Binary,
            DType::Datetime => DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from(UTC))),
            DType::Date => DataType::Date32,
            DType::Decimal(s) => DataType::Decimal128(DECIMAL_PRECISION, *s as i8),
            DType::List(e) => DataType::List(Arc::new(Field::new("item", e.dtype().arrow(), true))),
        }
    }

    /// The Postgres name shown to SQL users.
    pub fn pg_name(&self) -> &'static str {
        match self {
            DType::Int => "bigint",
            DType::Float => "double precision",
            DType::Bool => "boolean",
            DType::Str => "text",
            DType::Bytes => "bytea",
            DType::Datetime => "timestamp with time zone",
            DType::Date => "date",
            DType::Decimal(_) => "numeric",
            DType::List(Elem::Int) => "bigint[]",
            DType::List(Elem::Float) => "double precision[]",
            DType::List(Elem::Bool) => "boolean[]",
            DType::List(Elem::Str) => "text[]",
            DType::List(Elem::Datetime) => "timestamp with time zone[]",
            DType::List(Elem::Date) => "date[]",
        }
    }

    /// Map a SQL type name (as written in `CREATE TABLE`) to a Thyme type.
    pub fn from_sql(dt: &sqlparser::ast::DataType) -> Option<DType> {
        use sqlparser::ast::DataType as S;
        Some(match dt {
            S::BigInt(_)
            | S::Int8(_)
            | S::Int(_)
            | S::Integer(_)
            | S::Int4(_)
            | S::SmallInt(_)
            | S::Int2(_)
            | S::Int64 => DType::Int,
            S::Double(_)
            | S::DoublePrecision
            | S::Float8
            | S::Float(_)
            | S::Real
            | S::Float4
            | S::Float64 => DType::Float,
            S::Boolean | S::Bool => DType::Bool,
            S::Text
            | S::Varchar(_)
            | S::CharVarying(_)
            | S::Char(_)
            | S::Character(_)
            | S::String(_) => DType::Str,
            S::Bytea => DType::Bytes,
            S::Timestamp(_, _) | S::TimestampNtz(_) => DType::Datetime,
            S::Date => DType::Date,
            S::Numeric(info) | S::Decimal(info) | S::Dec(info) => {
                use sqlparser::ast::ExactNumberInfo as E;
                let (p, s) = match info {
                    E::None => (DECIMAL_PRECISION as u64, 0),
                    E::Precision(p) => (*p, 0),
                    E::PrecisionAndScale(p, s) => (*p, *s),
                };
                if p > DECIMAL_PRECISION as u64 || s < 0 || s as u64 > p {
                    return None;
                }
                DType::Decimal(s as u8)
            }
            S::Array(arr) => {
                use sqlparser::ast::ArrayElemTypeDef as A;
                let inner = match arr {
                    A::SquareBracket(t, _) | A::AngleBracket(t) | A::Parenthesis(t) => t,
                    A::None => return None,
                };
                DType::List(Elem::of(DType::from_sql(inner)?)?)
            }
            _ => return None,
        })
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            DType::Decimal(s) => return write!(f, "Decimal[{s}]"),
            DType::List(e) => return write!(f, "List[{}]", e.dtype()),
            DType::Int => "int",
            DType::Float => "float",
            DType::Bool => "bool",
            DType::Str => "str",
            DType::Bytes => "bytes",
            DType::Datetime => "datetime",
            DType::Date => "date",
        };
        f.write_str(s)
    }
}
