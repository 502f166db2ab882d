#!/usr/bin/env bash
# Offline training sets, side by side in one run on the same data: a spine
# of (uid, time) rows against the seed example's featureset through Thyme's
# `Client.query_offline` (Arrow over HTTP) and its SQL form (ASOF JOIN with
# the featureset view), and Feast's `get_historical_features` (file offline
# store) over the same feature history; seconds, rows/s, peak memory.
#
#   bench/offline.sh            # 100k users, 1M transactions, 1M-row spine, release build, with Feast
#   bench/offline.sh --smoke    # 1k users, 20k transactions, 20k-row spine, debug build, Thyme only (CI)
#
# Writes bench/results/offline.md (full runs) or prints the table (smoke).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
. bench/lib.sh

USERS=100000; TXNS=1000000; SPINE=1000000; PROFILE=release; SMOKE=0
if [ "${1:-}" = "--smoke" ]; then USERS=1000; TXNS=20000; SPINE=20000; PROFILE=debug; SMOKE=1; fi
USERS="${BENCH_USERS:-$USERS}"; TXNS="${BENCH_TXNS:-$TXNS}"; SPINE="${BENCH_SPINE:-$SPINE}"

build_thyme "$PROFILE"
"$THYME_VENV/bin/pip" install -q --disable-pip-version-check numpy pyarrow

FEAST_ARGS=()
if [ "$SMOKE" = 0 ]; then
  feast_venv
  FEAST_ARGS=(--feast-python "$FEAST_VENV/bin/python")
fi

out=()
[ "$SMOKE" = 0 ] && out=(--out bench/results/offline.md.new)
"$THYME_VENV/bin/python" bench/offline.py --thyme "$BIN" --users "$USERS" --txns "$TXNS" --spine "$SPINE" \
  "${FEAST_ARGS[@]}" "${out[@]}"
if [ "$SMOKE" = 0 ]; then
  {
    echo "# Offline training sets: Thyme vs Feast"
    echo
    echo "\`bench/offline.sh\` (release build, $(nproc) cores, $(date -u +%Y-%m-%d)): the seed example with $USERS users and"
    echo "$TXNS transactions over 90 days (through the real pipeline; ingest not timed), a spine of $SPINE"
    echo "random (uid, time) rows. Feast reads every version of Thyme's \`user_stats\` and \`user_info\`"
    echo "(exported to Parquet), so both join the same history. Thyme's memory is the server's peak"
    echo "(VmHWM, ingest included); Feast's its process's max RSS. Times include sending the spine and"
    echo "receiving the result (Thyme) or building the DataFrame (Feast)."
    echo
    cat bench/results/offline.md.new
    echo
    echo "Feast returns only the spine rows that have a user_info version at their time (it drops the"
    echo "others; Thyme returns every row, with NULLs and defaults). Where both answer, the country agrees"
    echo "everywhere; the 7-day count differs where events left the window after the user's last"
    echo "transaction: Feast serves the last stored version, Thyme the window at the row's own time."
  } > bench/results/offline.md
  rm -f bench/results/offline.md.new
  cat bench/results/offline.md
fi
