#!/usr/bin/env bash
# Online feature serving, side by side in one run: Thyme GET /features and
# the SQL view (a featureset of lookups + an expression, and one with a
# Python extractor), Feast's Python feature server (`feast serve`, SQLite
# online store) with the same values, and Redis GET of a pre-computed vector.
# Latency p50 / p99 and throughput at 1, 8 and 64 concurrent clients.
#
#   bench/features.sh            # 100k users, 10 s per point, release build, with Feast and Redis
#   bench/features.sh --smoke    # 1k users, 1 s per point, debug build, Thyme only (CI)
#
# Writes bench/results/features.md (full runs) or prints the table (smoke).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
. bench/lib.sh

USERS=100000; SECS=10; CLIENTS=1,8,64; PROFILE=release; SMOKE=0
if [ "${1:-}" = "--smoke" ]; then USERS=1000; SECS=1; CLIENTS=1,8; PROFILE=debug; SMOKE=1; fi
USERS="${BENCH_USERS:-$USERS}"; SECS="${BENCH_SECS:-$SECS}"; CLIENTS="${BENCH_CLIENTS:-$CLIENTS}"

build_thyme "$PROFILE"

FEAST_ARGS=()
if [ "$SMOKE" = 0 ]; then
  # The peers: Redis from Debian, Feast in its own virtualenv.
  if ! command -v redis-server >/dev/null; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null
  fi
  feast_venv
  FEAST_ARGS=(--feast "$FEAST_VENV/bin/feast")
fi

out=()
[ "$SMOKE" = 0 ] && out=(--out bench/results/features.md.new)
"$THYME_VENV/bin/python" bench/features.py --thyme "$BIN" --users "$USERS" --secs "$SECS" --clients "$CLIENTS" \
  "${FEAST_ARGS[@]}" "${out[@]}"
if [ "$SMOKE" = 0 ]; then
  {
    echo "# Online feature serving"
    echo
    echo "\`bench/features.sh\` ($USERS users, $SECS s per point, release build, $(nproc) cores, $(date -u +%Y-%m-%d));"
    echo "every peer serves the same pre-computed rows, one random user per request; load from wrk"
    echo "(HTTP), pgbench -M prepared (SQL view) and redis-benchmark (Redis), on the same machine."
    echo
    cat bench/results/features.md.new
  } > bench/results/features.md
  rm -f bench/results/features.md.new
  cat bench/results/features.md
fi
