#!/usr/bin/env bash
# Run every test: Rust unit and integration tests (storage model, sqllogictest
# files against the real server, durability, protocol), the Python client
# tests (the SDK; psql, psycopg 3, psycopg2, SQLAlchemy; the HTTP control
# plane and `thyme commit`), and the benchmarks at smoke size.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
scripts/setup.sh

cargo build --locked --workspace --all-targets
bench/storage.sh --smoke
bench/pgbench_lookup.sh --smoke
bench/pgbench_lookup.sh --smoke --secure
bench/http_ingest.sh --smoke
bench/pipeline.sh --smoke
bench/features.sh --smoke
bench/asof.sh --smoke
bench/offline.sh --smoke
bench/interference.sh --smoke
bench/sources.sh --smoke
cargo test --locked --workspace
"$THYME_VENV/bin/python" -m pytest -q python/tests tests
