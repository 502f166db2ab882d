//! Field and feature types as committed (the "Types" table of
//! `docs/commit-payload.md`), how they are written in JSON, and how a JSON
//! value is checked against one.
//!
//! Scalars are strings (`"int"`); everything else is a one-key object
//! (`{"optional": "int"}`, `{"list": "str"}`, `{"between": {...}}`). Types
//! display the way Python writes them (`Optional[List[int]]`), so messages
//! read like the user's own definitions.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{json, Map, Value};

use crate::values;

/// A committed type.
#[derive(Debug, Clone, PartialEq)]
pub enum Type {
    Int,
    Float,
    Bool,
    Str,
    Bytes,
    Datetime,
    Date,
    Optional(Box<Type>),
    List(Box<Type>),
    /// `Dict[str, T]`.
    Map(Box<Type>),
    /// `Decimal[scale]`, 28 digits of precision.
    Decimal(u8),
    /// `Embedding[n]`: `n` floats.
    Embedding(u32),
    Struct(StructType),
    /// `between(int|float, min, max)`.
    Between(Box<Between>),
    /// `oneof(int|str, [...])`.
    OneOf(Box<OneOf>),
    /// `regex("...")`: a string matching the whole pattern.
    Regex(String),
}

/// A `@struct` class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StructType {
    pub name: String,
    pub fields: Vec<StructField>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StructField {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: Type,
}

/// A number in a range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Between {
    #[serde(rename = "type")]
    pub base: Type,
    pub min: f64,
    pub max: f64,
    #[serde(default)]
    pub strict_min: bool,
    #[serde(default)]
    pub strict_max: bool,
}

/// One of a fixed set of values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OneOf {
    #[serde(rename = "type")]
    pub base: Type,
    pub options: Vec<Value>,
}

/// The scalar a value is stored as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scalar {
    Int,
    Float,
    Bool,
    Str,
    Bytes,
    Datetime,
    Date,
}

impl Type {
    /// Parse the JSON form.
    pub fn from_json(v: &Value) -> Result<Type, String> {
        match v {
            Value::String(s) => Type::scalar_named(s)
                .ok_or_else(|| format!("unknown type {s:?} (expected int, float, bool, str, bytes, datetime, date or an object)")),
            Value::Object(m) if m.len() == 1 => {
                let (k, inner) = m.iter().next().expect("one entry");
                let sub = |v: &Value| Type::from_json(v).map(Box::new);
                let t = match k.as_str() {
                    "optional" => {
                        let t = sub(inner)?;
                        if matches!(*t, Type::Optional(_)) {
                            return Err("Optional[Optional[...]] is not a type".into());
                        }
                        Type::Optional(t)
                    }
                    "list" => Type::List(sub(inner)?),
                    "map" => Type::Map(sub(inner)?),
                    "decimal" => {
                        let scale = inner
                            .as_u64()
                            .filter(|s| *s <= 28)
                            .ok_or_else(|| format!("Decimal scale must be an integer from 0 to 28, not {inner}"))?;
                        Type::Decimal(scale as u8)
                    }
                    "embedding" => {
                        let n = inner
                            .as_u64()
                            .filter(|n| (1..=65536).contains(n))
                            .ok_or_else(|| format!("Embedding size must be an integer from 1 to 65536, not {inner}"))?;
                        Type::Embedding(n as u32)
                    }
                    "struct" => {
                        let s: StructType = serde_json::from_value(inner.clone())
                            .map_err(|e| format!("struct type: {e}"))?;
                        if s.fields.is_empty() {
                            return Err(format!("struct {} has no fields", s.name));
                        }
                        let mut seen = std::collections::HashSet::new();
                        for f in &s.fields {
                            if !seen.insert(f.name.as_str()) {
                                return Err(format!("struct {} declares field {} twice", s.name, f.name));
                            }
                        }
                        Type::Struct(s)
                    }
                    "between" => {
                        let b: Between = serde_json::from_value(inner.clone())
                            .map_err(|e| format!("between type: {e}"))?;
                        if !matches!(b.base, Type::Int | Type::Float) {
                            return Err(format!("between() needs int or float, not {}", b.base));
                        }
                        if b.min > b.max {
                            return Err(format!("between(): min {} is greater than max {}", b.min, b.max));
                        }
                        Type::Between(Box::new(b))
                    }
                    "oneof" => {
                        let o: OneOf = serde_json::from_value(inner.clone())
                            .map_err(|e| format!("oneof type: {e}"))?;
                        if !matches!(o.base, Type::Int | Type::Str) {
                            return Err(format!("oneof() needs int or str, not {}", o.base));
                        }
                        if o.options.is_empty() {
                            return Err("oneof() needs at least one option".into());
                        }
                        for opt in &o.options {
                            values::check(&o.base, opt)
                                .map_err(|e| format!("oneof() option {opt}: {e}"))?;
                        }
                        Type::OneOf(Box::new(o))
                    }
                    "regex" => {
                        let p = inner
                            .as_str()
                            .ok_or_else(|| format!("regex() needs a pattern string, not {inner}"))?;
                        regex::Regex::new(p).map_err(|e| format!("regex() pattern {p:?} does not compile: {e}"))?;
                        Type::Regex(p.to_string())
                    }
                    other => return Err(format!("unknown type constructor {other:?}")),
                };
                Ok(t)
            }
            other => Err(format!("a type is a string or a one-key object, not {other}")),
        }
    }

    fn scalar_named(s: &str) -> Option<Type> {
        Some(match s {
            "int" => Type::Int,
            "float" => Type::Float,
            "bool" => Type::Bool,
            "str" => Type::Str,
            "bytes" => Type::Bytes,
            "datetime" => Type::Datetime,
            "date" => Type::Date,
            _ => return None,
        })
    }

    /// The JSON form.
    pub fn to_json(&self) -> Value {
        match self {
            Type::Int => json!("int"),
            Type::Float => json!("float"),
            Type::Bool => json!("bool"),
            Type::Str => json!("str"),
            Type::Bytes => json!("bytes"),
            Type::Datetime => json!("datetime"),
            Type::Date => json!("date"),
            Type::Optional(t) => json!({"optional": t.to_json()}),
            Type::List(t) => json!({"list": t.to_json()}),
            Type::Map(t) => json!({"map": t.to_json()}),
            Type::Decimal(s) => json!({"decimal": s}),
            Type::Embedding(n) => json!({"embedding": n}),
            Type::Struct(s) => json!({"struct": s}),
            Type::Between(b) => json!({"between": b}),
            Type::OneOf(o) => json!({"oneof": o}),
            Type::Regex(p) => json!({"regex": p}),
        }
    }

    pub fn is_optional(&self) -> bool {
        matches!(self, Type::Optional(_))
    }

    /// The type without `Optional`.
    pub fn non_optional(&self) -> &Type {
        match self {
            Type::Optional(t) => t,
            t => t,
        }
    }

    /// `Optional[self]` (itself when already optional).
    pub fn optional(&self) -> Type {
        match self {
            Type::Optional(_) => self.clone(),
            t => Type::Optional(Box::new(t.clone())),
        }
    }

    /// The scalar a value of this type is, when it is one (constraints
    /// count as their base type).
    pub fn scalar(&self) -> Option<Scalar> {
        Some(match self.non_optional() {
            Type::Int => Scalar::Int,
            Type::Float => Scalar::Float,
            Type::Bool => Scalar::Bool,
            Type::Str | Type::Regex(_) => Scalar::Str,
            Type::Bytes => Scalar::Bytes,
            Type::Datetime => Scalar::Datetime,
            Type::Date => Scalar::Date,
            Type::Between(b) => return b.base.scalar(),
            Type::OneOf(o) => return o.base.scalar(),
            _ => return None,
        })
    }

    /// int or float (constraints included).
    pub fn is_numeric(&self) -> bool {
        matches!(self.scalar(), Some(Scalar::Int | Scalar::Float))
    }

    /// Values of the type can be compared for equality and hashed (keys,
    /// `Distinct`, `Count(unique=True)`).
    pub fn is_hashable(&self) -> bool {
        match self.non_optional() {
            Type::Float | Type::Embedding(_) | Type::Map(_) => false,
            Type::List(t) => t.is_hashable(),
            Type::Struct(s) => s.fields.iter().all(|f| f.ty.is_hashable()),
            Type::Between(b) => b.base != Type::Float,
            _ => true,
        }
    }

    /// Whether a value of `other` can be stored in a field of this type
    /// (the same type once constraints are reduced to their base).
    pub fn same_shape(&self, other: &Type) -> bool {
        fn base(t: &Type) -> Cow<'_, Type> {
            match t {
                Type::Between(b) => Cow::Borrowed(&b.base),
                Type::OneOf(o) => Cow::Borrowed(&o.base),
                Type::Regex(_) => Cow::Owned(Type::Str),
                t => Cow::Borrowed(t),
            }
        }
        match (self, other) {
            (Type::Optional(a), Type::Optional(b))
            | (Type::List(a), Type::List(b))
            | (Type::Map(a), Type::Map(b)) => a.same_shape(b),
            (a, b) => *base(a) == *base(b),
        }
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Type::Int => f.write_str("int"),
            Type::Float => f.write_str("float"),
            Type::Bool => f.write_str("bool"),
            Type::Str => f.write_str("str"),
            Type::Bytes => f.write_str("bytes"),
            Type::Datetime => f.write_str("datetime"),
            Type::Date => f.write_str("date"),
            Type::Optional(t) => write!(f, "Optional[{t}]"),
            Type::List(t) => write!(f, "List[{t}]"),
            Type::Map(t) => write!(f, "Dict[str, {t}]"),
            Type::Decimal(s) => write!(f, "Decimal[{s}]"),
            Type::Embedding(n) => write!(f, "Embedding[{n}]"),
            Type::Struct(s) => f.write_str(&s.name),
            Type::Between(b) => write!(f, "between({}, {}, {})", b.base, b.min, b.max),
            Type::OneOf(o) => {
                let opts: Vec<String> = o.options.iter().map(|v| v.to_string()).collect();
                write!(f, "oneof({}, [{}])", o.base, opts.join(", "))
            }
            Type::Regex(p) => write!(f, "regex({p:?})"),
        }
    }
}

impl Serialize for Type {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Type {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Type::from_json(&v).map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for Type {
    fn schema_name() -> Cow<'static, str> {
        "Type".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let one = |key: &str, inner: Value| {
            let mut props = Map::new();
            props.insert(key.to_string(), inner);
            json!({"type": "object", "properties": props, "required": [key], "additionalProperties": false})
        };
        let ty = json!({"$ref": "#/$defs/Type"});
        let schema = json!({
            "description": "A field or feature type: a scalar name, or a one-key object (see the Types table).",
            "oneOf": [
                {"enum": ["int", "float", "bool", "str", "bytes", "datetime", "date"]},
                one("optional", ty.clone()),
                one("list", ty.clone()),
                one("map", ty.clone()),
                one("decimal", json!({"type": "integer", "minimum": 0, "maximum": 28})),
                one("embedding", json!({"type": "integer", "minimum": 1, "maximum": 65536})),
                one("struct", json!({
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "fields": {"type": "array", "items": {
                            "type": "object",
                            "properties": {"name": {"type": "string"}, "type": ty},
                            "required": ["name", "type"],
                            "additionalProperties": false
                        }}
                    },
                    "required": ["name", "fields"],
                    "additionalProperties": false
                })),
                one("between", json!({
                    "type": "object",
                    "properties": {
                        "type": {"enum": ["int", "float"]},
                        "min": {"type": "number"}, "max": {"type": "number"},
                        "strict_min": {"type": "boolean"}, "strict_max": {"type": "boolean"}
                    },
                    "required": ["type", "min", "max"],
                    "additionalProperties": false
                })),
                one("oneof", json!({
                    "type": "object",
                    "properties": {"type": {"enum": ["int", "str"]}, "options": {"type": "array"}},
                    "required": ["type", "options"],
                    "additionalProperties": false
                })),
                one("regex", json!({"type": "string"})),
            ]
        });
        schemars::Schema::try_from(schema).expect("an object")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_and_display() {
        for (j, shown) in [
            (json!("int"), "int"),
            (json!({"optional": {"list": "str"}}), "Optional[List[str]]"),
            (json!({"map": "float"}), "Dict[str, float]"),
            (json!({"decimal": 2}), "Decimal[2]"),
            (json!({"embedding": 4}), "Embedding[4]"),
            (
                json!({"between": {"type": "int", "min": 0.0, "max": 10.0, "strict_min": false, "strict_max": false}}),
                "between(int, 0, 10)",
            ),
            (json!({"regex": "[a-z]+"}), "regex(\"[a-z]+\")"),
        ] {
            let t = Type::from_json(&j).unwrap();
            assert_eq!(t.to_string(), shown);
            assert_eq!(Type::from_json(&t.to_json()).unwrap(), t);
        }
    }

    #[test]
    fn bad_types_are_named() {
        for (j, msg) in [
            (json!("integer"), "unknown type \"integer\""),
            (
                json!({"optional": {"optional": "int"}}),
                "Optional[Optional",
            ),
            (
                json!({"between": {"type": "str", "min": 0, "max": 1}}),
                "needs int or float",
            ),
            (
                json!({"oneof": {"type": "int", "options": ["a"]}}),
                "option \"a\"",
            ),
            (json!({"regex": "("}), "does not compile"),
            (json!({"decimal": 40}), "scale"),
            (json!({"list": "int", "map": "int"}), "one-key object"),
        ] {
            let e = Type::from_json(&j).unwrap_err();
            assert!(e.contains(msg), "{e}");
        }
    }
}
