#!/usr/bin/env bash
# Storage micro-benchmark (batched ingest, latest and as-of lookups).
#   bench/storage.sh           # 1M keys x 4 versions, release build -> bench/results/storage.md
#   bench/storage.sh --smoke   # 10k keys x 2 versions, debug build (CI)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
# Always build the whole workspace: building one package alone resolves
# features differently and would rebuild RocksDB.
if [ "${1:-}" = "--smoke" ]; then
  cargo build --locked -q --workspace --all-targets
  "$CARGO_TARGET_DIR/debug/examples/bench_store" 10000 2
  exit 0
fi
KEYS="${BENCH_KEYS:-1000000}"; VERSIONS="${BENCH_VERSIONS:-4}"
cargo build --locked -q --release --workspace --bins --examples
out=$("$CARGO_TARGET_DIR/release/examples/bench_store" "$KEYS" "$VERSIONS")
echo "$out"
{
  echo "# Storage micro-benchmark"
  echo
  echo "Command: \`bench/storage.sh\` (release \`bench_store $KEYS $VERSIONS\`)."
  echo "Machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; date $(date -u +%Y-%m-%d)."
  echo
  echo "$out"
} > bench/results/storage.md
