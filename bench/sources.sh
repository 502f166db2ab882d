#!/usr/bin/env bash
# Source benchmarks, Thyme against a floor on the same data in the same run:
# Kafka (10M JSON messages, 4 partitions) against a librdkafka consumer that
# only counts, Parquet (10M rows, 20 files) against DuckDB's CREATE TABLE AS,
# a Postgres table (1M rows) against COPY TO STDOUT.
#   bench/sources.sh           # full size, release build -> bench/results/sources.md
#   bench/sources.sh --smoke   # small sizes, debug build (CI)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
if [ "${1:-}" = "--smoke" ]; then
  cargo build --locked -q --workspace --all-targets
  "$THYME_VENV/bin/python" bench/sources.py --bin "$CARGO_TARGET_DIR/debug/thyme" \
    --kafka-rows 20000 --parquet-rows 20000 --parquet-files 4 --postgres-rows 20000
  exit 0
fi
cargo build --locked -q --release --workspace --bins --examples
"$THYME_VENV/bin/python" bench/sources.py --bin "$CARGO_TARGET_DIR/release/thyme" \
  --kafka-rows "${KAFKA_ROWS:-10000000}" --parquet-rows "${PARQUET_ROWS:-10000000}" \
  --postgres-rows "${POSTGRES_ROWS:-1000000}" --runs "${RUNS:-1}" \
  --out bench/results/sources.md --command "bench/sources.sh"
