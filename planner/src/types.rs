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
//!
//! `Optional[T]` is `T` with `nullable: true`. Key and timestamp fields are
//! never nullable.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::{DataType, TimeUnit};
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
}

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
            _ => return None,
        })
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
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
