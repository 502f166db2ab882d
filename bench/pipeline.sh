#!/usr/bin/env bash
# End-to-end pipeline benchmark (HTTP ingest -> 3 aggregations x 2 windows ->
# durable), then windowed AS OF reads vs latest reads.
#   bench/pipeline.sh           # 1M and 10M events, release build -> bench/results/pipeline.md
#   bench/pipeline.sh --smoke   # 20k events, debug build (CI)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
if [ "${1:-}" = "--smoke" ]; then
  cargo build --locked -q --workspace --all-targets
  "$THYME_VENV/bin/python" bench/pipeline.py --bin "$CARGO_TARGET_DIR/debug/thyme" --events 20000 --read-secs 1
  exit 0
fi
cargo build --locked -q --release --workspace --bins --examples
"$THYME_VENV/bin/python" bench/pipeline.py --bin "$CARGO_TARGET_DIR/release/thyme" \
  --events "${BENCH_EVENTS:-1000000,10000000}" --out bench/results/pipeline.md --command "bench/pipeline.sh"
