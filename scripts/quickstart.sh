#!/usr/bin/env bash
# The main job on the embedded default: start `thyme serve`, commit the
# example feature file (examples/features.py) with `thyme commit`, push
# events to its webhook, drop a CSV file for a files source
# (examples/sources.py), and query the datasets, latest and as of a past
# time, through psql. Leaves the server running only if asked
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
export PATH="$THYME_VENV/bin:$PATH"

echo '== thyme commit examples/features.py'
thyme commit examples/features.py --url "http://127.0.0.1:$CONTROL_PORT" -m "quickstart"

echo '== push events to the webhook (Client.log, POST /api/v1/log)'
python - "http://127.0.0.1:$CONTROL_PORT" <<'PY'
import sys

import pandas as pd

from thyme.client import Client

client = Client(url=sys.argv[1])
client.log("main", "UserInfo", pd.DataFrame({
    "uid": [1, 2, 1],
    "country": ["DE", "US", "FR"],
    "signup_time": pd.to_datetime(["2023-05-01", "2023-07-01", "2023-05-01"], utc=True),
    "ts": pd.to_datetime(["2024-01-01", "2024-01-01", "2024-01-08"], utc=True),
}))
client.log("main", "Transaction", pd.DataFrame({
    "uid": [1, 2, 1, 1],
    "amount": [12.5, 80.0, 7.5, 300.0],
    "merchant": ["coffee", "books", "coffee", "laptop"],
    "ts": pd.to_datetime(["2024-01-01T09:00:00Z", "2024-01-02T10:00:00Z",
                          "2024-01-03T08:30:00Z", "2024-01-10T12:00:00Z"]),
}))
print("logged 3 user-info versions and 4 transactions")

# Pipelines run in the server; wait until they have consumed everything.
import json, time, urllib.request
for _ in range(600):
    ps = json.load(urllib.request.urlopen(sys.argv[1] + "/api/v1/pipelines"))["pipelines"]
    if ps and all(p["status"] == "running" and p["lag"] == 0 for p in ps):
        break
    time.sleep(0.1)
for p in ps:
    print(f"pipeline {p['pipeline']} -> {p['dataset']}: {p['status']}, {p['rows_written']} rows written")
PY

psql -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U thyme -d thyme <<'SQL'
\echo 'Every committed dataset is a table:'
\dt
\echo 'Events (keyless): every transaction'
SELECT * FROM transaction ORDER BY ts;
\echo 'Keyed: the latest row of each user'
SELECT uid, country, ts FROM user_info ORDER BY uid;
\echo 'Point in time: user 1 lived in DE before 2024-01-08'
SELECT uid, country FROM user_info WHERE uid = 1 AS OF '2024-01-05T00:00:00Z';
\echo 'Every version of user 1'
SELECT uid, country, ts, _deleted FROM history.user_info WHERE uid = 1;
\echo 'Pipeline output: 7-day and 30-day aggregates per user, exact at any time'
SELECT uid, txn_count_7d, total_7d, txn_count_30d, total_30d FROM user_stats AS OF '2024-01-09T00:00:00Z';
\echo '... a week after the 2024-01-03 transaction left the 7-day window (no new event needed)'
SELECT uid, txn_count_7d, total_7d, txn_count_30d, total_30d FROM user_stats AS OF '2024-01-10T09:00:00Z';
\echo 'Per-country 1-day totals (Python lambda filter + as-of join with user_info)'
SELECT country, total_1d, ts FROM country_stats AS OF '2024-01-10T12:00:00Z';
\echo 'The featureset UserFeatures is a view: its extractors run for the bound uids, as of the query time'
\dv
SELECT * FROM user_features WHERE uid IN (1, 2, 3) AS OF '2024-01-09T00:00:00Z';
\echo 'A training set in one statement: each label meets the features as of its own time (ASOF JOIN)'
CREATE TABLE labels (uid BIGINT, ts TIMESTAMPTZ, fraud BOOLEAN);
INSERT INTO labels VALUES (1, '2024-01-02T00:00:00Z', false), (1, '2024-01-10T13:00:00Z', true), (2, '2024-01-03T00:00:00Z', false);
SELECT l.uid, l.ts, l.fraud, f.txn_count_7d, f.total_7d, f.country
FROM labels l ASOF LEFT JOIN user_features f MATCH_CONDITION (l.ts >= f.ts) ON l.uid = f.uid ORDER BY l.ts;
SQL

echo '== a source the server reads itself: CSV files dropped into a directory (examples/sources.py)'
export THYME_DROP_DIR="$(dirname "$DATA")/drop"
mkdir -p "$THYME_DROP_DIR"
thyme commit examples/sources.py --url "http://127.0.0.1:$CONTROL_PORT" -m "quickstart: files source"
# Write elsewhere, then move in: the source never sees half a file (it also
# waits until a file is a second old).
printf 'uid,amount,ts\n1,12.5,2024-01-04T10:00:00Z\n2,30.0,2024-01-05T11:00:00Z\n2,not-a-number,2024-01-05T12:00:00Z\n' > "$THYME_DROP_DIR/.refunds-1.csv"
touch -d '5 seconds ago' "$THYME_DROP_DIR/.refunds-1.csv"
mv "$THYME_DROP_DIR/.refunds-1.csv" "$THYME_DROP_DIR/refunds-1.csv"
for _ in $(seq 1 300); do
  curl -sf "http://127.0.0.1:$CONTROL_PORT/api/v1/sources" | grep -q '"files_read":1' && break
  sleep 0.1
done
curl -sf "http://127.0.0.1:$CONTROL_PORT/api/v1/sources"; echo
psql -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U thyme -d thyme <<'SQL'
\echo 'Rows read from refunds-1.csv; the row that did not fit is listed with its reason'
SELECT uid, amount, ts FROM refund ORDER BY ts;
SELECT location, field, value, error FROM thyme_rejected_rows WHERE dataset = 'Refund';
SQL
n=$(psql -X -A -t -h 127.0.0.1 -p "$PG_PORT" -U thyme -d thyme -c "SELECT count(*) FROM refund")
[ "$n" = 2 ] || { echo "quickstart: expected 2 refunds, got $n" >&2; exit 1; }

echo '== the same training set from Python: Client.query_offline'
"$THYME_VENV/bin/python" - "http://127.0.0.1:$CONTROL_PORT" "http://127.0.0.1:$QUERY_PORT" <<'PY'
import sys

import pandas as pd

from thyme.client import Client

client = Client(sys.argv[1], sys.argv[2])
labels = pd.DataFrame({
    "uid": [1, 1, 2],
    "ts": pd.to_datetime(["2024-01-02T00:00:00Z", "2024-01-10T13:00:00Z", "2024-01-03T00:00:00Z"]),
    "fraud": [False, True, False],
})
training = client.query_offline(
    inputs=["UserFeatures.uid"],
    outputs=["UserFeatures.txn_count_7d", "UserFeatures.total_7d", "UserFeatures.country"],
    input_dataframe=labels, timestamp_column="ts")
# The spine's other columns (the label) come back beside the features.
print(training.to_string(index=False))
PY

echo '== the query server: GET /features (point in time and now), POST /api/v1/query'
curl -sf "http://127.0.0.1:$QUERY_PORT/features?featureset=UserFeatures&uid=1&ts=2024-01-09T00:00:00Z"; echo
curl -sf "http://127.0.0.1:$QUERY_PORT/features?featureset=UserFeatures&uid=1"; echo
curl -sf "http://127.0.0.1:$QUERY_PORT/api/v1/query" -H 'Content-Type: application/json' \
  -d '{"inputs": ["UserFeatures.uid"], "outputs": ["UserFeatures.txn_count_7d", "UserFeatures.country"],
       "data": {"UserFeatures.uid": [1, 2]}, "timestamps": ["2024-01-09T00:00:00Z", "2024-01-09T00:00:00Z"]}'; echo
echo "quickstart: ok (data in $DATA)"
