#!/usr/bin/env bash
# The same benchmarks on two builds of the server, alternating A B A B in one
# run (machines here drift by 30-40% between runs, so only a paired run
# compares): pipeline ingest (bench/pipeline.py, 1M events), ASOF join
# (bench/asof.py, 1M x 1M) and point lookups (bench/pgbench_lookup.sh, 1M
# rows, one 20 s round per system and build).
#
#   bench/before_after.sh BEFORE_BIN AFTER_BIN [ROUNDS]   # -> stdout, markdown
#
# Build each binary with `cargo build --release --workspace --bins` in a
# checkout of the commit to measure.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
A="$1"; B="$2"; ROUNDS="${3:-2}"
"$THYME_VENV/bin/pip" install -q --disable-pip-version-check duckdb polars numpy pyarrow
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT

pipeline() { # bin -> "events/s cpu_s peak_mib"
  "$THYME_VENV/bin/python" bench/pipeline.py --bin "$1" --events 1000000 --read-secs 0 --out "$work/p.md" >/dev/null
  awk -F'|' '/^\| 1,000,000/ {gsub(/ /,""); print $5 " ev/s, " $7 " s, " $8 " MiB"; exit}' "$work/p.md"
}
asof() { # bin -> seconds (best of 3)
  "$THYME_VENV/bin/python" bench/asof.py --thyme "$1" --sizes 1000000 --runs 3 --keys 100000 --out "$work/a.md" >/dev/null
  awk -F'|' '$3 ~ /Thyme/ {gsub(/ /,""); print $4 " (" $5 "x DuckDB)"; exit}' "$work/a.md"
}
pgbench() { # bin -> "thyme_tps postgres_tps"
  THYME_BENCH_BIN="$1" BENCH_SECS=20 BENCH_ROUNDS=1 bench/pgbench_lookup.sh > "$work/g.txt"
  awk -F'|' '/^\| Postgres 15/ {gsub(/ /,""); pg=$6} /^\| Thyme/ {gsub(/ /,""); th=$6} END {print th " / " pg}' "$work/g.txt"
}

echo "| round | build | pipeline 1M (events/s, CPU s, peak) | ASOF 1M x 1M (s) | point lookups (Thyme tps / Postgres tps, same round) |"
echo "|---|---|---|---|---|"
for r in $(seq 1 "$ROUNDS"); do
  for which in before after; do
    bin="$A"; [ "$which" = after ] && bin="$B"
    p=$(pipeline "$bin"); a=$(asof "$bin"); g=$(pgbench "$bin")
    echo "| $r | $which | $p | $a | $g |"
  done
done
