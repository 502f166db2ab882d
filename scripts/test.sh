#!/usr/bin/env bash
# Run every test: Rust unit and integration tests (storage model, sqllogictest
# files against the real server, durability, protocol), the Python client
# tests (psql, psycopg 3, psycopg2), and the benchmarks at smoke size.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
scripts/setup.sh

cargo build --locked --workspace --all-targets
bench/storage.sh --smoke
bench/pgbench_lookup.sh --smoke
cargo test --locked --workspace
"$THYME_VENV/bin/python" -m pytest -q tests
