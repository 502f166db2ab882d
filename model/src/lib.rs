//! Thyme's definitions, independent of storage and SQL: the versioned
//! commit payload that `thyme commit` posts (datasets, sources, pipelines,
//! featuresets), its types, its validation, the version rule for changed
//! definitions, and checking ingested JSON values against field types.
//!
//! The server and the Python package's native module both use this crate,
//! so a definition is judged by the same code on the laptop and in the
//! control plane.
//!
//! - [`payload`]: the payload structs (and its JSON Schema);
//! - [`types`]: field and feature types;
//! - [`validate`]: the commit rules;
//! - [`diff`]: what a commit changes, and the version rule;
//! - [`values`]: JSON values and timestamps against types;
//! - [`columns`]: column-oriented ingestion data against a dataset;
//! - [`duration`]: `"7d"`-style durations.

pub mod columns;
pub mod diff;
pub mod duration;
pub mod payload;
pub mod types;
pub mod validate;
pub mod values;

pub use payload::Commit;
pub use types::Type;
pub use validate::{validate, Problems};

/// The SQL name of a class name: `UserStats` -> `user_stats`,
/// `HTTPLog` -> `http_log`, `user_stats` stays.
pub fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let prev = i.checked_sub(1).map(|j| chars[j]);
            let next = chars.get(i + 1);
            let boundary = match prev {
                None => false,
                Some('_') => false,
                Some(p) if p.is_lowercase() || p.is_ascii_digit() => true,
                Some(p) if p.is_uppercase() => next.is_some_and(|n| n.is_lowercase()),
                _ => false,
            };
            if boundary {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn snake_case() {
        for (a, b) in [
            ("UserStats", "user_stats"),
            ("HTTPLog", "http_log"),
            ("Transaction", "transaction"),
            ("user_stats", "user_stats"),
            ("UserFeatures2", "user_features2"),
            ("ABTest", "ab_test"),
        ] {
            assert_eq!(super::snake_case(a), b);
        }
    }
}
