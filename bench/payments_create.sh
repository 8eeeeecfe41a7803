#!/usr/bin/env bash
# POST /v1/payments with unique Idempotency-Keys, through the gateway and straight at
# payments, on PostgreSQL; beside pgbench running the statements the service runs for each
# payment at the same concurrency: the rate PostgreSQL itself commits them is the physical
# limit, and the ratio says how close the service comes to it.
#
# The statement, as the service sends it to PostgreSQL for a payment under a new key (prepared,
# `pgbench -M prepared`, as sqlx does): the key claimed already finished with its response
# (one upsert) and, from its row, the payment, its event and the webhook deliveries for the
# endpoints that subscribe to it (none here: that INSERT ... SELECT still runs), in one
# statement.
#
# The service's pool holds as many PostgreSQL connections as wrk and pgbench have clients
# (PAYMENTS_DATABASE_MAX_CONNECTIONS): each payment waits for a commit (an fsync), and
# PostgreSQL flushes the commits of all connections waiting at once in one; a pool half the
# size halves how many commits share a flush.
#
# Rounds take turns (gateway, direct, pgbench) and the medians are compared.
#
# BENCH_PIN=1 runs PostgreSQL on CPU 0 and everything else (the stack, wrk, pgbench) on CPU 1,
# as a deployment runs the database on a machine of its own: then the rate PostgreSQL commits
# on its core is the limit both reach for, instead of the service's CPU being taken from the
# database's. PostgreSQL's processes (the server must be on this machine and the script run
# as root) get every CPU back at the end.
# Needs wrk and pgbench, and PostgreSQL at $BENCH_PG (default postgres://postgres@127.0.0.1:5432).
# Usage: bench/payments_create.sh [seconds] [connections] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
connections=${2:-32}
rounds=${3:-3}
pg=${BENCH_PG:-postgres://postgres@127.0.0.1:5432}
for tool in wrk pgbench psql; do command -v $tool >/dev/null || { echo "$tool is not installed" >&2; exit 1; }; done
source bench/lib.sh
ports_free 28080 28081 28082
pin=() restore_pg=:
if [ "${BENCH_PIN:-0}" = 1 ]; then
  command -v taskset >/dev/null || { echo "taskset is not installed" >&2; exit 1; }
  pg_pins() { pgrep -u postgres | xargs -r -n1 taskset -a -cp "$1" >/dev/null; }
  pg_pins 0
  restore_pg="pg_pins 0-$(($(nproc) - 1))"
  pin=(taskset -c 1)
fi

for db in bench_accounts bench_payments; do
  psql "$pg/postgres" -q -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
done
cargo build --release --locked --quiet
dir=$(mktemp -d) stack_pid=
trap 'kill $stack_pid 2>/dev/null; wait $stack_pid 2>/dev/null; rm -rf "$dir"; $restore_pg' EXIT
start_stack "$dir" ACCOUNTS_DATABASE_URL="$pg/bench_accounts" PAYMENTS_DATABASE_URL="$pg/bench_payments" \
  PAYMENTS_DATABASE_MAX_CONNECTIONS="$connections" PAYMENTS_PROCESSOR_ENABLED=false
token=$(bench_user)

# Through the gateway (/payments/v1/payments) and straight at payments (/v1/payments).
for path in /payments/v1/payments /v1/payments; do
  payments_lua "$dir/create-$(echo "$path" | tr / _).lua" "$path" "$token"
done

cat >"$dir/create.sql" <<'SQL'
\set n random(1, 2000000000)
\set m random(1, 2000000000)
WITH claimed AS (INSERT INTO idempotency_keys (principal, key, fingerprint, locked_at, response_status, response_body, payment_id, created_at, expires_at) VALUES ('pgbench', :client_id || '-' || :n || '-' || :m, repeat('f', 64), NULL, 202, repeat('x', 330), 'pay_pg_' || :client_id || '_' || :n || '_' || :m, now(), now() + interval '24 hours') ON CONFLICT (principal, key) DO UPDATE SET fingerprint = excluded.fingerprint, locked_at = excluded.locked_at, response_status = excluded.response_status, response_body = excluded.response_body, payment_id = excluded.payment_id, created_at = excluded.created_at, expires_at = excluded.expires_at WHERE idempotency_keys.expires_at <= excluded.created_at RETURNING 1), payment AS (INSERT INTO payments (id, owner, status, amount_minor, currency, description, payment_method, attempts, created_at, updated_at, capture_method) SELECT 'pay_pg_' || :client_id || '_' || :n || '_' || :m, 'pgbench', 'pending', 10000, 'USD', 'bench', 'pm_card_visa', 0, now(), now(), 'automatic' FROM claimed RETURNING id, owner), event AS (INSERT INTO payment_events (id, payment_id, owner, type, event, created_at) SELECT 'evt_pg_' || :client_id || '_' || :n || '_' || :m, id, owner, 'payments.payment.created', ('{"specversion":"1.0","data":{"description":"' || repeat('x', 400) || '"}}')::jsonb, now() FROM payment RETURNING id), deliveries AS (INSERT INTO webhook_deliveries (endpoint_id, event_id, event_type, status, attempts, next_attempt_at, created_at, updated_at) SELECT endpoint.id, event.id, 'payments.payment.created', 'pending', 0, now(), now(), now() FROM webhook_endpoints endpoint, event WHERE endpoint.status = 'enabled' AND (endpoint.enabled_events = '*' OR (' ' || endpoint.enabled_events || ' ') LIKE '% payments.payment.created %' ESCAPE '\')) SELECT count(*) FROM claimed;
SQL

median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
wrk_round() { # wrk_round <name> <script> <url>: one run; prints its line, appends its rate to rates_<name>
  local before after
  before=$(psql "$pg/bench_payments" -Atc "SELECT count(*) FROM payments")
  "${pin[@]}" wrk -t2 -c"$connections" -d"${seconds}s" --latency -s "$2" "$3" -- "$(date +%s%N)" >"$dir/wrk.txt"
  after=$(psql "$pg/bench_payments" -Atc "SELECT count(*) FROM payments")
  read -r rps p50 p99 bad < <(wrk_figures "$dir/wrk.txt")
  # Every answered request made a payment (a key used twice would be a replay, and fast).
  printf 'round %s  %-8s %10s payments/s   p50 %8s   p99 %8s   non-2xx %s   requests %s   rows %s\n' \
    "$round" "$1" "$rps" "$p50" "$p99" "$bad" "$(awk '/requests in/ {print $1}' "$dir/wrk.txt")" \
    "$((after - before))"
  eval "rates_$1+=($rps)"
  [ "$bad" = 0 ] || grep -E '"level":"(WARN|ERROR)"' "$dir/stack.log" | tail -n 3 >&2 || true
}
rates_gateway=() rates_direct=() rates_pgbench=()
echo "POST /v1/payments, unique keys, PostgreSQL, ${connections} connections, ${seconds}s, ${rounds} rounds, $(nproc) cores$([ ${#pin[@]} = 0 ] || echo ', PostgreSQL on CPU 0, the rest on CPU 1')"
for round in $(seq 1 "$rounds"); do
  wrk_round gateway "$dir/create-_payments_v1_payments.lua" http://127.0.0.1:28080
  wrk_round direct "$dir/create-_v1_payments.lua" http://127.0.0.1:28082
  "${pin[@]}" pgbench "$pg/bench_payments" -n -M prepared -c "$connections" -j 2 -T "$seconds" -f "$dir/create.sql" >"$dir/pgbench.txt" 2>&1 \
    || { cat "$dir/pgbench.txt" >&2; exit 1; }
  tps=$(awk '/^tps/ {print $3; exit}' "$dir/pgbench.txt")
  printf 'round %s  %-8s %10s payments/s   (the same statement, prepared, same concurrency)\n' "$round" pgbench "$tps"
  rates_pgbench+=("$tps")
done
gateway=$(median "${rates_gateway[@]}") direct=$(median "${rates_direct[@]}") pgbench=$(median "${rates_pgbench[@]}")
printf 'median   gateway %s, direct %s, pgbench %s payments/s\n' "$gateway" "$direct" "$pgbench"
awk -v s="$gateway" -v d="$direct" -v p="$pgbench" \
  'BEGIN { printf "ratio    %.2f of what PostgreSQL commits through the gateway, %.2f straight at payments\n", s / p, d / p }'
