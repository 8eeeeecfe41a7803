#!/usr/bin/env bash
# POST /v1/payments with unique Idempotency-Keys, through the gateway and then straight at
# payments, on PostgreSQL; beside
# pgbench running the same writes (the key claim, then payment + event + key response in one
# transaction) at the same concurrency: the rate PostgreSQL itself commits them is the
# physical limit, and the ratio says how close the service comes to it.
# Needs wrk and pgbench, and PostgreSQL at $BENCH_PG (default postgres://postgres@127.0.0.1:5432).
# Usage: bench/payments_create.sh [seconds] [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
connections=${2:-32}
pg=${BENCH_PG:-postgres://postgres@127.0.0.1:5432}
for tool in wrk pgbench psql; do command -v $tool >/dev/null || { echo "$tool is not installed" >&2; exit 1; }; done

for db in bench_accounts bench_payments; do
  psql "$pg/postgres" -q -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
done
cargo build --release --locked --quiet
dir=$(mktemp -d)
GATEWAY_ADDR=127.0.0.1:28080 ACCOUNTS_ADDR=127.0.0.1:28081 PAYMENTS_ADDR=127.0.0.1:28082 RUST_LOG=warn GATEWAY_RATE_LIMIT_RPS=0 \
  ACCOUNTS_DATABASE_URL="$pg/bench_accounts" PAYMENTS_DATABASE_URL="$pg/bench_payments" \
  PAYMENTS_PROCESSOR_ENABLED=false DATA_DIR="$dir/data" "${CARGO_TARGET_DIR:-target}/release/stack" >"$dir/log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 1 60); do curl -fs http://127.0.0.1:28080/readyz >/dev/null && break; sleep 0.5; done

curl -fs -X POST http://127.0.0.1:28080/accounts/v1/users -H 'content-type: application/json' \
  -d '{"email":"bench@example.com","password":"password-123"}' >/dev/null
token=$(curl -fs -X POST http://127.0.0.1:28080/accounts/v1/token \
  -d grant_type=password -d username=bench@example.com -d password=password-123 \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')

# Through the gateway (/payments/v1/payments) and straight at payments (/v1/payments).
for path in /payments/v1/payments /v1/payments; do
cat >"$dir/create-$(echo "$path" | tr / _).lua" <<LUA
local counter = 0
-- Lua's random numbers are not seeded: the same in every run, so the run's own prefix.
local prefix = "$(date +%s%N)"
function setup(thread) thread:set("id", tostring(math.random(1, 1e9))) end
request = function()
  counter = counter + 1
  return wrk.format("POST", "$path", {
    ["Authorization"] = "Bearer $token",
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = prefix .. "-" .. id .. "-" .. counter,
  }, '{"amount": 100.00, "currency": "USD", "description": "bench"}')
end
LUA
done
echo "POST /v1/payments, unique keys, PostgreSQL, ${connections} connections, ${seconds}s, $(nproc) cores"
wrk -t2 -c"$connections" -d"${seconds}s" --latency -s "$dir/create-_payments_v1_payments.lua" http://127.0.0.1:28080 >"$dir/wrk.txt"
service_rps=$(awk '/Requests\/sec/ {print $2}' "$dir/wrk.txt")
p50=$(awk '$1 == "50%" {print $2}' "$dir/wrk.txt")
p99=$(awk '$1 == "99%" {print $2}' "$dir/wrk.txt")
non2xx=$(awk '/Non-2xx/ {print $NF}' "$dir/wrk.txt")
created=$(psql "$pg/bench_payments" -Atc "SELECT count(*) FROM payments")
wrk -t2 -c"$connections" -d"${seconds}s" --latency -s "$dir/create-_v1_payments.lua" http://127.0.0.1:28082 >"$dir/wrk-direct.txt"
direct_rps=$(awk '/Requests\/sec/ {print $2}' "$dir/wrk-direct.txt")
direct_p50=$(awk '$1 == "50%" {print $2}' "$dir/wrk-direct.txt")
direct_p99=$(awk '$1 == "99%" {print $2}' "$dir/wrk-direct.txt")
direct_non2xx=$(awk '/Non-2xx/ {print $NF}' "$dir/wrk-direct.txt")
direct_created=$(( $(psql "$pg/bench_payments" -Atc "SELECT count(*) FROM payments") - created ))

cat >"$dir/create.sql" <<'SQL'
\set n random(1, 2000000000)
\set m random(1, 2000000000)
DELETE FROM idempotency_keys WHERE principal = 'pgbench' AND key = :client_id || '-' || :n || '-' || :m AND expires_at <= now();
INSERT INTO idempotency_keys (principal, key, fingerprint, locked_at, created_at, expires_at) VALUES ('pgbench', :client_id || '-' || :n || '-' || :m, repeat('f', 64), now(), now(), now() + interval '24 hours') ON CONFLICT (principal, key) DO NOTHING;
BEGIN;
INSERT INTO payments (id, owner, status, amount_minor, currency, description, payment_method, attempts, created_at, updated_at) VALUES ('pay_pg_' || :client_id || '_' || :n || '_' || :m, 'pgbench', 'pending', 10000, 'USD', 'bench', 'pm_card_visa', 0, now(), now());
INSERT INTO payment_events (id, payment_id, owner, type, event, created_at) VALUES ('evt_pg_' || :client_id || '_' || :n || '_' || :m, 'pay_pg_' || :client_id || '_' || :n || '_' || :m, 'pgbench', 'payments.payment.created', '{"specversion":"1.0","data":{"amount":"100.00"}}', now());
UPDATE idempotency_keys SET response_status = 202, response_body = repeat('x', 330), payment_id = 'pay_pg_' || :client_id || '_' || :n || '_' || :m, locked_at = NULL WHERE principal = 'pgbench' AND key = :client_id || '-' || :n || '-' || :m;
COMMIT;
SQL
pgbench "$pg/bench_payments" -n -c "$connections" -j 2 -T "$seconds" -f "$dir/create.sql" >"$dir/pgbench.txt" 2>&1
pg_tps=$(awk '/^tps/ {print $3; exit}' "$dir/pgbench.txt")
printf 'gateway  %10s payments/s   p50 %8s   p99 %8s   non-2xx %s   rows %s\n' "$service_rps" "$p50" "$p99" "${non2xx:-0}" "$created"
printf 'direct   %10s payments/s   p50 %8s   p99 %8s   non-2xx %s   rows %s\n' "$direct_rps" "$direct_p50" "$direct_p99" "${direct_non2xx:-0}" "$direct_created"
printf 'pgbench  %10s payments/s   (same writes, same concurrency)\n' "$pg_tps"
awk -v s="$service_rps" -v d="$direct_rps" -v p="$pg_tps" \
  'BEGIN { printf "ratio    %.2f of what PostgreSQL commits through the gateway, %.2f straight at payments\n", s / p, d / p }'
