//! Checking JSON values against committed types, as ingestion receives them
//! (`{"data": {column: [values]}}`), and reading event times.
//!
//! Timestamps are RFC 3339 strings (`2024-01-15T12:00:00Z`; a missing offset
//! means UTC; a bare date means midnight UTC) or epoch numbers whose unit is
//! read from their magnitude: below 10^11 seconds, below 10^14 milliseconds,
//! below 10^17 microseconds, otherwise nanoseconds.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, NaiveDateTime};
use serde_json::{Map, Value};

use crate::types::Type;

/// Microseconds since the Unix epoch of a JSON timestamp.
pub fn parse_timestamp(v: &Value) -> Result<i64, String> {
    match v {
        Value::String(s) => parse_timestamp_str(s),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                epoch_to_micros(i as f64)
                    .ok_or_else(|| format!("{i} is out of range for a timestamp"))
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                epoch_to_micros(f).ok_or_else(|| format!("{n} is out of range for a timestamp"))
            }
        }
        other => Err(format!(
            "{} is not a timestamp (RFC 3339 string or epoch number)",
            short(other)
        )),
    }
}

fn epoch_to_micros(x: f64) -> Option<i64> {
    if !x.is_finite() {
        return None;
    }
    let a = x.abs();
    let micros = if a < 1e11 {
        x * 1e6
    } else if a < 1e14 {
        x * 1e3
    } else if a < 1e17 {
        x
    } else {
        x / 1e3
    };
    (micros.abs() < 9.2e18).then_some(micros.round() as i64)
}

/// Parse an RFC 3339 (or `YYYY-MM-DD[ HH:MM:SS[.f]]`, UTC) timestamp.
pub fn parse_timestamp_str(s: &str) -> Result<i64, String> {
    let t = s.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Ok(dt.timestamp_micros());
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(t, fmt) {
            return Ok(dt.and_utc().timestamp_micros());
        }
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f%#z",
        "%Y-%m-%dT%H:%M:%S%.f%#z",
        "%Y-%m-%d %H:%M:%S%.f %Z",
    ] {
        if let Ok(dt) = DateTime::parse_from_str(t, fmt) {
            return Ok(dt.timestamp_micros());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Ok(d
            .and_hms_opt(0, 0, 0)
            .expect("midnight")
            .and_utc()
            .timestamp_micros());
    }
    Err(format!(
        "{s:?} is not a timestamp (expected RFC 3339, e.g. 2024-01-15T12:00:00Z)"
    ))
}

/// Days since the Unix epoch of a JSON date (`YYYY-MM-DD`).
pub fn parse_date(v: &Value) -> Result<i32, String> {
    let s = v
        .as_str()
        .ok_or_else(|| format!("{} is not a date (expected \"YYYY-MM-DD\")", short(v)))?;
    let d = NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .map_err(|_| format!("{s:?} is not a date (expected \"YYYY-MM-DD\")"))?;
    Ok((d - NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days() as i32)
}

/// The bytes of a JSON `bytes` value (base64 text, standard alphabet,
/// padding optional).
pub fn parse_bytes(v: &Value) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    let s = v
        .as_str()
        .ok_or_else(|| format!("{} is not bytes (expected base64 text)", short(v)))?;
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| format!("{} is not base64 text", short(v)))
}

/// A JSON integer (an integral float such as `3.0` counts: pandas turns
/// integer columns holding nulls into floats).
pub fn as_int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            let f = n.as_f64()?;
            (f.fract() == 0.0 && f.abs() < 9.2e18).then_some(f as i64)
        }),
        _ => None,
    }
}

/// A value shown in an error message: JSON, cut after 80 characters.
pub fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 80 {
        let cut: String = s.chars().take(77).collect();
        format!("{cut}...")
    } else {
        s
    }
}

/// Checks values against one type, with its regular expressions compiled
/// once.
pub struct Checker {
    ty: Type,
    regexes: HashMap<String, regex::Regex>,
}

impl Checker {
    pub fn new(ty: &Type) -> Checker {
        let mut regexes = HashMap::new();
        collect_regexes(ty, &mut regexes);
        Checker {
            ty: ty.clone(),
            regexes,
        }
    }

    /// `Ok` when `v` is a value of the type; otherwise what is wrong.
    pub fn check(&self, v: &Value) -> Result<(), String> {
        self.check_as(&self.ty, v)
    }

    fn check_as(&self, ty: &Type, v: &Value) -> Result<(), String> {
        let wrong = || Err(format!("{} is not a value of type {ty}", short(v)));
        if v.is_null() {
            return if ty.is_optional() {
                Ok(())
            } else {
                Err(format!("null is not allowed (type {ty}, not Optional)"))
            };
        }
        match ty {
            Type::Optional(t) => self.check_as(t, v),
            Type::Int => as_int(v).map(|_| ()).map_or_else(wrong, Ok),
            Type::Float => {
                if v.is_number() {
                    Ok(())
                } else {
                    wrong()
                }
            }
            Type::Bool => {
                if v.is_boolean() {
                    Ok(())
                } else {
                    wrong()
                }
            }
            Type::Str => {
                if v.is_string() {
                    Ok(())
                } else {
                    wrong()
                }
            }
            Type::Bytes => parse_bytes(v).map(|_| ()),
            Type::Datetime => parse_timestamp(v).map(|_| ()),
            Type::Date => parse_date(v).map(|_| ()),
            Type::List(t) => match v {
                Value::Array(items) => items.iter().enumerate().try_for_each(|(i, x)| {
                    self.check_as(t, x).map_err(|e| format!("element {i}: {e}"))
                }),
                _ => wrong(),
            },
            Type::Map(t) => match v {
                Value::Object(m) => m.iter().try_for_each(|(k, x)| {
                    self.check_as(t, x).map_err(|e| format!("key {k:?}: {e}"))
                }),
                _ => wrong(),
            },
            Type::Decimal(scale) => check_decimal(v, *scale),
            Type::Embedding(n) => match v {
                Value::Array(items)
                    if items.len() == *n as usize && items.iter().all(Value::is_number) =>
                {
                    Ok(())
                }
                Value::Array(items) if items.len() != *n as usize => Err(format!(
                    "an Embedding[{n}] needs {n} numbers, got {}",
                    items.len()
                )),
                _ => wrong(),
            },
            Type::Struct(s) => match v {
                Value::Object(m) => self.check_struct(s, m),
                _ => wrong(),
            },
            Type::Between(b) => {
                self.check_as(&b.base, v)?;
                let x = v.as_f64().unwrap_or(f64::NAN);
                let low_ok = if b.strict_min { x > b.min } else { x >= b.min };
                let high_ok = if b.strict_max { x < b.max } else { x <= b.max };
                if low_ok && high_ok {
                    Ok(())
                } else {
                    Err(format!("{} is outside {ty}", short(v)))
                }
            }
            Type::OneOf(o) => {
                self.check_as(&o.base, v)?;
                let hit = o
                    .options
                    .iter()
                    .any(|opt| match (&o.base, as_int(opt), as_int(v)) {
                        (Type::Int, Some(a), Some(b)) => a == b,
                        _ => opt == v,
                    });
                if hit {
                    Ok(())
                } else {
                    Err(format!("{} is not one of {ty}", short(v)))
                }
            }
            Type::Regex(p) => {
                let s = v
                    .as_str()
                    .ok_or_else(|| format!("{} is not a string", short(v)))?;
                let re = self
                    .regexes
                    .get(p)
                    .ok_or_else(|| format!("regex({p:?}) does not compile"))?;
                if re.is_match(s) {
                    Ok(())
                } else {
                    Err(format!("{} does not match {ty}", short(v)))
                }
            }
        }
    }

    fn check_struct(
        &self,
        s: &crate::types::StructType,
        m: &Map<String, Value>,
    ) -> Result<(), String> {
        for k in m.keys() {
            if !s.fields.iter().any(|f| &f.name == k) {
                return Err(format!("struct {} has no field {k}", s.name));
            }
        }
        for f in &s.fields {
            match m.get(&f.name) {
                Some(x) => self
                    .check_as(&f.ty, x)
                    .map_err(|e| format!("struct {} field {}: {e}", s.name, f.name))?,
                None if f.ty.is_optional() => {}
                None => return Err(format!("struct {} is missing field {}", s.name, f.name)),
            }
        }
        Ok(())
    }
}

fn collect_regexes(ty: &Type, out: &mut HashMap<String, regex::Regex>) {
    match ty {
        Type::Regex(p) if !out.contains_key(p) => {
            // Whole-string match, as the type promises.
            if let Ok(re) = regex::Regex::new(&format!("^(?:{p})$")) {
                out.insert(p.clone(), re);
            }
        }
        Type::Optional(t) | Type::List(t) | Type::Map(t) => collect_regexes(t, out),
        Type::Struct(s) => s.fields.iter().for_each(|f| collect_regexes(&f.ty, out)),
        _ => {}
    }
}

/// Check one value against a type (compiles regular expressions each call;
/// use [`Checker`] for columns).
pub fn check(ty: &Type, v: &Value) -> Result<(), String> {
    Checker::new(ty).check(v)
}

/// The unscaled value of a decimal (`12.5` at scale 2 is 1250).
pub fn parse_decimal(v: &Value, scale: u8) -> Result<i128, String> {
    check_decimal(v, scale)?;
    let text = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_string(),
        _ => unreachable!("checked"),
    };
    let (neg, digits) = match text.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, text.as_str()),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let frac = frac.trim_end_matches('0');
    let mut unscaled: i128 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        unscaled = unscaled * 10 + i128::from(b - b'0');
    }
    for _ in frac.len()..scale as usize {
        unscaled *= 10;
    }
    Ok(if neg { -unscaled } else { unscaled })
}

fn check_decimal(v: &Value, scale: u8) -> Result<(), String> {
    let text = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_string(),
        other => return Err(format!("{} is not a decimal", short(other))),
    };
    let digits = text.strip_prefix('-').unwrap_or(&text);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let ok = !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit());
    if !ok {
        return Err(format!("{} is not a decimal", short(v)));
    }
    let frac = frac.trim_end_matches('0');
    if frac.len() > scale as usize {
        return Err(format!(
            "{} has more than {scale} digits after the point (Decimal[{scale}])",
            short(v)
        ));
    }
    if int.trim_start_matches('0').len() + scale as usize > 28 {
        return Err(format!(
            "{} does not fit Decimal[{scale}] (28 digits)",
            short(v)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn timestamps() {
        let want = 1_705_320_000_000_000i64; // 2024-01-15T12:00:00Z
        for v in [
            json!("2024-01-15T12:00:00Z"),
            json!("2024-01-15T13:00:00+01:00"),
            json!("2024-01-15 12:00:00"),
            json!(1_705_320_000),
            json!(1_705_320_000_000i64),
            json!(1_705_320_000_000_000i64),
            json!(1_705_320_000_000_000_000i64),
            json!(1_705_320_000.0),
        ] {
            assert_eq!(parse_timestamp(&v).unwrap(), want, "{v}");
        }
        assert!(parse_timestamp(&json!("yesterday"))
            .unwrap_err()
            .contains("yesterday"));
        assert!(parse_timestamp(&json!(true)).is_err());
    }

    #[test]
    fn values_against_types() {
        let t = |j: Value| Type::from_json(&j).unwrap();
        assert!(check(&t(json!("int")), &json!(3)).is_ok());
        assert_eq!(parse_bytes(&json!("aGk=")), Ok(b"hi".to_vec()));
        assert_eq!(parse_bytes(&json!("aGk")), Ok(b"hi".to_vec()));
        assert!(check(&t(json!("bytes")), &json!("not base64!"))
            .unwrap_err()
            .contains("base64"));
        assert!(check(&t(json!("int")), &json!(3.0)).is_ok());
        assert!(check(&t(json!("int")), &json!(3.5)).is_err());
        assert!(check(&t(json!("int")), &json!(null))
            .unwrap_err()
            .contains("null"));
        assert!(check(&t(json!({"optional": "int"})), &json!(null)).is_ok());
        assert!(check(&t(json!({"list": "str"})), &json!(["a", 1]))
            .unwrap_err()
            .contains("element 1"));
        assert!(check(&t(json!({"map": "float"})), &json!({"a": 1.5})).is_ok());
        assert!(check(&t(json!({"decimal": 2})), &json!("12.345")).is_err());
        assert!(check(&t(json!({"decimal": 2})), &json!(12.34)).is_ok());
        assert_eq!(parse_decimal(&json!("-12.3"), 2), Ok(-1230));
        assert_eq!(parse_decimal(&json!(7), 2), Ok(700));
        assert_eq!(parse_decimal(&json!("0.05"), 3), Ok(50));
        assert!(check(&t(json!({"embedding": 2})), &json!([1, 2.5])).is_ok());
        assert!(check(&t(json!({"embedding": 2})), &json!([1])).is_err());
        let b = t(json!({"between": {"type": "int", "min": 0, "max": 10, "strict_max": true}}));
        assert!(check(&b, &json!(0)).is_ok());
        assert!(check(&b, &json!(10)).unwrap_err().contains("outside"));
        let o = t(json!({"oneof": {"type": "str", "options": ["a", "b"]}}));
        assert!(check(&o, &json!("c")).unwrap_err().contains("not one of"));
        let r = t(json!({"regex": "[a-z]+"}));
        assert!(check(&r, &json!("abc")).is_ok());
        assert!(check(&r, &json!("abc1")).is_err());
        let s = t(json!({"struct": {"name": "Address", "fields": [
            {"name": "city", "type": "str"}, {"name": "zip", "type": {"optional": "str"}}]}}));
        assert!(check(&s, &json!({"city": "x"})).is_ok());
        assert!(check(&s, &json!({"zip": "x"}))
            .unwrap_err()
            .contains("missing field city"));
    }
}
