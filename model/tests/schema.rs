//! The published JSON Schema (`docs/commit-payload.schema.json`) is the one
//! generated from the payload types. Regenerate with
//! `THYME_BLESS=1 cargo test --workspace --test schema`.

use std::path::PathBuf;

#[test]
fn published_schema_matches_the_types() {
    // At run time, not `env!`: a build cached from a checkout elsewhere
    // would bake in that checkout's path.
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo test");
    let path = PathBuf::from(manifest).join("../docs/commit-payload.schema.json");
    let generated =
        serde_json::to_string_pretty(&thyme_model::payload::json_schema()).unwrap() + "\n";
    if std::env::var_os("THYME_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let published = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        published == generated,
        "docs/commit-payload.schema.json is out of date; regenerate it with THYME_BLESS=1 cargo test --workspace --test schema"
    );
}
