#!/usr/bin/env bash
# ASOF join throughput, side by side in one run on the same generated data
# (loading excluded): Thyme's SQL `ASOF LEFT JOIN` vs DuckDB's `ASOF LEFT
# JOIN` and Polars' `join_asof`, 1M x 1M and 10M x 10M rows over 100k keys;
# seconds (best of 3), ratio to DuckDB, peak memory.
#
#   bench/asof.sh            # 1M and 10M, release build
#   bench/asof.sh --smoke    # 20k rows, 1 run, debug build (CI)
#
# Writes bench/results/asof.md (full runs) or prints the table (smoke).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
. bench/lib.sh

SIZES=1000000,10000000; RUNS=3; PROFILE=release; SMOKE=0
if [ "${1:-}" = "--smoke" ]; then SIZES=20000; RUNS=1; PROFILE=debug; SMOKE=1; fi
SIZES="${BENCH_SIZES:-$SIZES}"

build_thyme "$PROFILE"
# The peers and the data generator.
"$THYME_VENV/bin/pip" install -q --disable-pip-version-check duckdb polars numpy pyarrow

out=()
[ "$SMOKE" = 0 ] && out=(--out bench/results/asof.md.new)
"$THYME_VENV/bin/python" bench/asof.py --thyme "$BIN" --sizes "$SIZES" --runs "$RUNS" --keys 100000 "${out[@]}"
if [ "$SMOKE" = 0 ]; then
  {
    echo "# ASOF join: Thyme vs DuckDB vs Polars"
    echo
    echo "\`bench/asof.sh\` (release build, $(nproc) cores, $(date -u +%Y-%m-%d)): left (id, uid, ts) and right"
    echo "(uid, ts, v) with N rows each, uid uniform over 100k keys, times uniform over a year; every engine"
    echo "computes \`l ASOF LEFT JOIN r ON l.uid = r.uid AND l.ts >= r.ts\` and counts/sums the result; best of 3,"
    echo "loading excluded. Thyme's memory is the server's peak (VmHWM, loading included)."
    echo
    cat bench/results/asof.md.new
  } > bench/results/asof.md
  rm -f bench/results/asof.md.new
  cat bench/results/asof.md
fi
