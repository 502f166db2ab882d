#!/usr/bin/env bash
# Point lookups (bench/pgbench_lookup.sh) on two builds of the server,
# alternating before / after in one run (machines here drift by 30-40%
# between runs, so only a paired run compares). Each invocation also runs
# Postgres 15 in the same rounds, as the floor that shows the drift.
#
#   bench/pgbench_pair.sh BEFORE_BIN AFTER_BIN [PAIRS] [--secure]   # -> stdout, markdown
set -euo pipefail
cd "$(dirname "$0")/.."
A="$1"; B="$2"; PAIRS="${3:-2}"; shift 2; [ $# -gt 0 ] && shift
extra=("$@")
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
echo "| pair | build | Thyme tps | Postgres 15 tps (same invocation) | Thyme / Postgres |"
echo "|---|---|---|---|---|"
for p in $(seq 1 "$PAIRS"); do
  for which in before after; do
    bin="$A"; [ "$which" = after ] && bin="$B"
    THYME_BENCH_BIN="$bin" BENCH_SECS="${BENCH_SECS:-20}" BENCH_ROUNDS="${BENCH_ROUNDS:-2}" \
      bench/pgbench_lookup.sh "${extra[@]}" > "$work/g.txt"
    awk -F'|' -v p="$p" -v w="$which" '
      /^\| Postgres 15/ {gsub(/ /,""); pg=$6}
      /^\| Thyme/ {gsub(/ /,""); th=$6}
      END {printf "| %s | %s | %s | %s | %.2f |\n", p, w, th, pg, th/pg}' "$work/g.txt"
  done
done
