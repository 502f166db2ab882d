#!/usr/bin/env bash
# HTTP ingest benchmark: rows/s through POST /api/v1/log at batch sizes
# 100 / 1,000 / 10,000 (keyless append and keyed upsert datasets).
#   bench/http_ingest.sh           # 1M rows per run, release build -> bench/results/http_ingest.md
#   bench/http_ingest.sh --smoke   # 20k rows, debug build (CI)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
if [ "${1:-}" = "--smoke" ]; then
  cargo build --locked -q --workspace --all-targets
  "$THYME_VENV/bin/python" bench/http_ingest.py --bin "$CARGO_TARGET_DIR/debug/thyme" --rows 20000 --batches 1000,10000
  exit 0
fi
ROWS="${BENCH_ROWS:-1000000}"
cargo build --locked -q --release --workspace --bins --examples
"$THYME_VENV/bin/python" bench/http_ingest.py --bin "$CARGO_TARGET_DIR/release/thyme" --rows "$ROWS" \
  --batches 100,1000,10000 --out bench/results/http_ingest.md --command "bench/http_ingest.sh"
