#!/usr/bin/env bash
# Point-lookup latency alone, with 100 idle connections, and with a heavy
# analytical query running (issue 20's goal: p99 under 2x the p99 alone),
# with the query pool at the default priority (idle) and at low (nice 10).
#
#   bench/interference.sh            # 1M rows, 20 s per scenario (release build)
#   bench/interference.sh --smoke    # 20k rows, 2 s per scenario (debug build; CI)
#
# Writes bench/results/interference.md (full runs) or prints the table (smoke).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
. bench/lib.sh

ROWS=1000000; SECS=20; PROFILE=release; SMOKE=0
if [ "${1:-}" = "--smoke" ]; then ROWS=20000; SECS=2; PROFILE=debug; SMOKE=1; fi
build_thyme "$PROFILE"
out=()
[ "$SMOKE" = 0 ] && [ -z "${THYME_BENCH_BIN:-}" ] && out=(--out bench/results/interference.md.new)
prios=idle,low; [ "$SMOKE" = 1 ] && prios=idle
"$THYME_VENV/bin/python" bench/interference.py --thyme "$BIN" --rows "${BENCH_ROWS:-$ROWS}" --seconds "${BENCH_SECS:-$SECS}" --priorities "$prios" "${out[@]}"
if [ "${#out[@]}" -gt 0 ]; then
  {
    echo "# Point lookups under interference"
    echo
    echo "Command: \`bench/interference.sh\`. Machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; date $(date -u +%Y-%m-%d)."
    echo
    cat bench/results/interference.md.new
  } > bench/results/interference.md
  rm bench/results/interference.md.new
fi
