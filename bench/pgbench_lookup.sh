#!/usr/bin/env bash
# Point lookups over pgwire: Thyme vs Postgres 15 on the same machine, the
# same rows (a BIGINT primary key), the same client (pgbench, prepared
# statements, a custom script), side by side in one run.
#
#   bench/pgbench_lookup.sh            # 1M rows, 4 clients, 3 rounds of 30 s each (release build)
#   bench/pgbench_lookup.sh --smoke    # 10k rows, 1 round of 2 s each (debug build; CI)
#   bench/pgbench_lookup.sh --secure   # both systems with SCRAM-SHA-256 logins over TLS
#                                      # (sslmode=require); combines with --smoke
#
# The two systems take turns (Postgres, Thyme, Postgres, ...) and the table
# reports each one's median round, with every round listed: on a shared
# 2-core machine a single 30 s run of the same binary varies by +-15%.
#
# Writes bench/results/pgbench_lookup.md (full runs) or prints the table (smoke).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
. bench/lib.sh

ROWS=1000000; SECS=30; CLIENTS=4; THREADS=2; ROUNDS=3; PROFILE=release; SMOKE=0; SECURE=0
for a in "$@"; do
  case "$a" in
    --smoke) ROWS=10000; SECS=2; ROUNDS=1; PROFILE=debug; SMOKE=1 ;;
    --secure) SECURE=1 ;;
    *) echo "unknown option $a" >&2; exit 2 ;;
  esac
done
ROWS="${BENCH_ROWS:-$ROWS}"; SECS="${BENCH_SECS:-$SECS}"; CLIENTS="${BENCH_CLIENTS:-$CLIENTS}"
ROUNDS="${BENCH_ROUNDS:-$ROUNDS}"

build_thyme "$PROFILE"
PGBIN="$(dirname "$(readlink -f "$(command -v pg_ctl || echo /usr/lib/postgresql/15/bin/pg_ctl)")")"
[ -x "$PGBIN/initdb" ] || PGBIN=/usr/lib/postgresql/15/bin

work="$(mktemp -d)"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cleanup() {
  # Stop the server and wait for it to exit before removing its files:
  # RocksDB still writes while it shuts down, and rm -rf would race it.
  if [ -n "${thyme_pid:-}" ]; then
    kill "$thyme_pid" 2>/dev/null || true
    wait "$thyme_pid" 2>/dev/null || true
  fi
  [ -d "$work/pg" ] && "$PGBIN/pg_ctl" -D "$work/pg" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work" || { sleep 1; rm -rf "$work"; }
}
trap cleanup EXIT

# The data: k, an event time, a text value.
python3 - "$ROWS" > "$work/rows.csv" <<'PY'
import sys
n = int(sys.argv[1])
out = sys.stdout
for k in range(1, n + 1):
    out.write(f"{k},2024-01-01T00:00:00Z,value-{k}\n")
PY
echo '\set k random(1, '"$ROWS"')
SELECT * FROM t WHERE k = :k;' > "$work/lookup.sql"

# Postgres 15, throwaway cluster.
PG_PORT=$(free_port)
runas=()
if [ "$(id -u)" -eq 0 ]; then
  id -u thymebench >/dev/null 2>&1 || useradd -M -s /usr/sbin/nologin thymebench
  chown -R thymebench "$work"; chmod 755 "$work"
  runas=(runuser -u thymebench --)
fi
PASS=bench-pass-1
pg_opts="-p $PG_PORT -k $work -c listen_addresses=127.0.0.1 -c shared_buffers=512MB"
if [ "$SECURE" = 1 ]; then
  # A throwaway CA and a certificate for 127.0.0.1, for both servers.
  (cd "$work" && openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 1 -subj "/CN=bench CA" 2>/dev/null \
    && openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=127.0.0.1" 2>/dev/null \
    && printf 'subjectAltName=IP:127.0.0.1\n' > ext.cnf \
    && openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 1 -extfile ext.cnf 2>/dev/null)
  [ "$(id -u)" -eq 0 ] && chown thymebench "$work"/server.*
  chmod 600 "$work/server.key"
  pg_opts="$pg_opts -c ssl=on -c ssl_cert_file=$work/server.crt -c ssl_key_file=$work/server.key -c password_encryption=scram-sha-256"
fi
"${runas[@]}" "$PGBIN/initdb" -D "$work/pg" -U postgres -A trust >/dev/null
if [ "$SECURE" = 1 ]; then
  # Every TCP login: TLS and SCRAM (the Unix socket stays trust, for set-up).
  printf 'local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n' > "$work/pg/pg_hba.conf"
fi
"${runas[@]}" "$PGBIN/pg_ctl" -D "$work/pg" -o "$pg_opts" -l "$work/pg.log" -w start >/dev/null
psql -X -q -h "$work" -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 \
  -c "ALTER ROLE postgres PASSWORD '$PASS'" \
  -c "CREATE TABLE t (k BIGINT PRIMARY KEY, ts TIMESTAMPTZ NOT NULL, v TEXT)" \
  -c "\\copy t FROM '$work/rows.csv' WITH (FORMAT csv)" -c "VACUUM ANALYZE t"

# Thyme.
T_PORT=$(free_port); C_PORT=$(free_port); Q_PORT=$(free_port)
TUSER=thyme
secure_args=()
if [ "$SECURE" = 1 ]; then
  TUSER=bench
  secure_args=(--superuser bench --tls-cert "$work/server.crt" --tls-key "$work/server.key" --require-tls)
  export PGSSLMODE=require PGPASSWORD="$PASS"
fi
THYME_SUPERUSER_PASSWORD="$PASS" "$BIN" serve --data "$work/thyme" --pg-addr "127.0.0.1:$T_PORT" --control-addr "127.0.0.1:$C_PORT" --query-addr "127.0.0.1:$Q_PORT" "${secure_args[@]}" 2>"$work/thyme.log" &
thyme_pid=$!
for _ in $(seq 1 200); do psql -X -h 127.0.0.1 -p "$T_PORT" -U "$TUSER" -d thyme -c 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.1; done
load_start=$(date +%s.%N)
psql -X -q -h 127.0.0.1 -p "$T_PORT" -U "$TUSER" -d thyme -v ON_ERROR_STOP=1 \
  -c "CREATE TABLE t (k BIGINT PRIMARY KEY, ts TIMESTAMPTZ, v TEXT)" \
  -c "\\copy t FROM '$work/rows.csv' WITH (FORMAT csv)"
load_end=$(date +%s.%N)
n=$(psql -X -A -t -h 127.0.0.1 -p "$T_PORT" -U "$TUSER" -d thyme -c "SELECT count(*) FROM t")
[ "$n" = "$ROWS" ] || { echo "thyme loaded $n rows, expected $ROWS" >&2; exit 1; }

run() { # name port user db
  pgbench -n -M prepared -c "$CLIENTS" -j "$THREADS" -T "$SECS" -f "$work/lookup.sql" -h 127.0.0.1 -p "$2" -U "$3" "$4" 2>&1 \
    | tee "$work/$1.out" | awk '/^tps/ {print $3; exit}'
}
lat() { awk '/latency average/ {print $4; exit}' "$work/$1.out"; }
pg_all=(); th_all=(); pg_lat=(); th_lat=()
for round in $(seq 1 "$ROUNDS"); do
  t=$(run postgres "$PG_PORT" postgres postgres); [ -n "$t" ] || { cat "$work"/*.out; echo "pgbench failed" >&2; exit 1; }
  pg_all+=("$t"); pg_lat+=("$(lat postgres)")
  t=$(run thyme "$T_PORT" "$TUSER" thyme); [ -n "$t" ] || { cat "$work"/*.out; echo "pgbench failed" >&2; exit 1; }
  th_all+=("$t"); th_lat+=("$(lat thyme)")
done
# median round (by tps) and its latency; every round's tps
median() { python3 -c 'import sys; v=sorted(zip(map(float, sys.argv[1].split()), sys.argv[2].split())); t,l=v[len(v)//2]; print(f"{t:.0f} {l}")' "$1" "$2"; }
read -r pg_tps pg_l <<<"$(median "${pg_all[*]}" "${pg_lat[*]}")"
read -r th_tps th_l <<<"$(median "${th_all[*]}" "${th_lat[*]}")"
rounds() { python3 -c 'import sys; print(", ".join(f"{float(x):,.0f}" for x in sys.argv[1:]))' "$@"; }
ratio=$(python3 -c "print(f'{$th_tps/$pg_tps:.2f}')")
load_rate=$(python3 -c "print(f'{$ROWS/($load_end-$load_start):,.0f}')")

table="| system | rows | clients | seconds x rounds | lookups/s (tps), median round | avg latency ms (that round) | every round's tps |
|---|---|---|---|---|---|---|
| Postgres 15 | $ROWS | $CLIENTS | $SECS x $ROUNDS | $pg_tps | $pg_l | $(rounds "${pg_all[@]}") |
| Thyme ($PROFILE) | $ROWS | $CLIENTS | $SECS x $ROUNDS | $th_tps | $th_l | $(rounds "${th_all[@]}") |

Thyme / Postgres throughput ratio (medians): **$ratio**. Thyme COPY load: $load_rate rows/s."
echo "$table"
mode=""; [ "$SECURE" = 1 ] && mode=" (SCRAM-SHA-256 logins over TLS, sslmode=require, on both)"
echo "Connections${mode:- in clear, trust}."
out=bench/results/pgbench_lookup.md; [ "$SECURE" = 1 ] && out=bench/results/pgbench_lookup_secure.md
if [ "$SMOKE" = 0 ] && [ -z "${THYME_BENCH_BIN:-}" ]; then
  {
    echo "# Point lookups over pgwire: Thyme vs Postgres 15$mode"
    echo
    echo "Command: \`bench/pgbench_lookup.sh\` (pgbench -n -M prepared -c $CLIENTS -j $THREADS -T $SECS, script \`SELECT * FROM t WHERE k = :k\` with a random key; $ROUNDS rounds, the systems taking turns)."
    echo "Machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; date $(date -u +%Y-%m-%d)."
    echo
    echo "$table"
  } > "$out"
fi
