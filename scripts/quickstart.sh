#!/usr/bin/env bash
# The main job on the embedded default: start `thyme serve`, create a
# dataset, load rows (INSERT and COPY), and query the latest values and a
# point in time through psql. Leaves the server running only if asked
# (THYME_KEEP=1).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
scripts/setup.sh
# The whole workspace, as the tests build it (same features, one build).
cargo build --locked --workspace --all-targets

DATA="${THYME_DATA:-$(mktemp -d)/thyme-data}"
PG_PORT="${THYME_PG_PORT:-5433}"
CONTROL_PORT="${THYME_CONTROL_PORT:-8080}"
QUERY_PORT="${THYME_QUERY_PORT:-8081}"
"$THYME_BIN" serve --data "$DATA" --pg-addr "127.0.0.1:$PG_PORT" --control-addr "127.0.0.1:$CONTROL_PORT" --query-addr "127.0.0.1:$QUERY_PORT" &
pid=$!
trap '[ "${THYME_KEEP:-0}" = 1 ] || kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  psql -X -h 127.0.0.1 -p "$PG_PORT" -U thyme -d thyme -c 'SELECT 1' >/dev/null 2>&1 && break
  sleep 0.1
done

psql -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U thyme -d thyme <<'SQL'
-- A keyed dataset: one row per user, every version kept.
CREATE TABLE user_stats (
  uid TEXT PRIMARY KEY,
  ts TIMESTAMPTZ,
  txn_count BIGINT,
  total DOUBLE PRECISION
) WITH (timestamp = 'ts');

INSERT INTO user_stats VALUES
  ('user_1', '2024-01-01T00:00:00Z', 1, 10.0),
  ('user_2', '2024-01-02T00:00:00Z', 4, 99.5);

\copy user_stats FROM STDIN WITH (FORMAT csv)
user_1,2024-01-10T00:00:00Z,3,42.0
user_3,2024-01-11T00:00:00Z,1,5.0
\.

\echo 'Latest values:'
SELECT * FROM user_stats ORDER BY uid;

\echo 'As of 2024-01-05 (before the COPY):'
SELECT * FROM user_stats ORDER BY uid AS OF '2024-01-05T00:00:00Z';

\echo 'Every version of user_1:'
SELECT * FROM history.user_stats WHERE uid = 'user_1';
SQL
echo "quickstart: ok (data in $DATA)"
