#!/usr/bin/env bash
# POST /v1/payments/{id}/refunds with unique Idempotency-Keys, through the gateway, on
# PostgreSQL, spread over many succeeded payments; beside pgbench running the same writes
# (the key claim, then the conditional reservation on the payment + the refund + its event +
# the key's response in one transaction) at the same concurrency: the rate PostgreSQL itself
# commits them is the physical limit, and the ratio says how close the service comes to it.
# The method is bench/payments_create.sh's: the statements as the service sends them (the key
# claimed in one upsert; the event's webhook deliveries), prepared, and a pool as large as the
# concurrency.
# Needs wrk and pgbench, and PostgreSQL at $BENCH_PG (default postgres://postgres@127.0.0.1:5432).
# Usage: bench/refunds.sh [seconds] [connections] [payments]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
connections=${2:-32}
payments=${3:-2000}
pg=${BENCH_PG:-postgres://postgres@127.0.0.1:5432}
for tool in wrk pgbench psql; do command -v $tool >/dev/null || { echo "$tool is not installed" >&2; exit 1; }; done

for db in bench_accounts bench_payments; do
  psql "$pg/postgres" -q -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
done
cargo build --release --locked --quiet
dir=$(mktemp -d)
GATEWAY_ADDR=127.0.0.1:28080 ACCOUNTS_ADDR=127.0.0.1:28081 PAYMENTS_ADDR=127.0.0.1:28082 RUST_LOG=warn GATEWAY_RATE_LIMIT_RPS=0 \
  ACCOUNTS_DATABASE_URL="$pg/bench_accounts" PAYMENTS_DATABASE_URL="$pg/bench_payments" \
  PAYMENTS_DATABASE_MAX_CONNECTIONS="$connections" PAYMENTS_PROCESSOR_ENABLED=false DATA_DIR="$dir/data" "${CARGO_TARGET_DIR:-target}/release/stack" >"$dir/log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 1 60); do curl -fs http://127.0.0.1:28080/readyz >/dev/null && break; sleep 0.5; done

curl -fs -X POST http://127.0.0.1:28080/accounts/v1/users -H 'content-type: application/json' \
  -d '{"email":"bench@example.com","password":"password-123"}' >/dev/null
token=$(curl -fs -X POST http://127.0.0.1:28080/accounts/v1/token \
  -d grant_type=password -d username=bench@example.com -d password=password-123 \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
owner=$(python3 -c 'import base64,json,sys; p=sys.argv[1].split(".")[1]; print(json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))["sub"])' "$token")

# Succeeded payments of 1,000.00 to refund from, a cent at a time (the service's own
# schema; both the service and pgbench refund from them).
psql "$pg/bench_payments" -q -c "INSERT INTO payments (id, owner, status, amount_minor, currency, description, payment_method, attempts, created_at, updated_at, capture_method, amount_captured_minor) SELECT 'pay_bench_' || g, '$owner', 'succeeded', 100000, 'USD', 'bench', 'pm_card_visa', 1, now(), now(), 'automatic', 100000 FROM generate_series(1, $payments) g"

cat >"$dir/refund.lua" <<LUA
local counter = 0
-- Lua's random numbers are not seeded: the same in every run, so the run's own prefix.
local prefix = "$(date +%s%N)"
function setup(thread) thread:set("id", tostring(math.random(1, 1e9))) end
request = function()
  counter = counter + 1
  local payment = "pay_bench_" .. math.random(1, $payments)
  return wrk.format("POST", "/payments/v1/payments/" .. payment .. "/refunds", {
    ["Authorization"] = "Bearer $token",
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = prefix .. "-" .. id .. "-" .. counter,
  }, '{"amount": "0.01", "reason": "requested_by_customer"}')
end
LUA
echo "POST /v1/payments/{id}/refunds, unique keys, $payments payments, PostgreSQL, ${connections} connections, ${seconds}s, $(nproc) cores"
wrk -t2 -c"$connections" -d"${seconds}s" --latency -s "$dir/refund.lua" http://127.0.0.1:28080 >"$dir/wrk.txt"
service_rps=$(awk '/Requests\/sec/ {print $2}' "$dir/wrk.txt")
p50=$(awk '$1 == "50%" {print $2}' "$dir/wrk.txt")
p99=$(awk '$1 == "99%" {print $2}' "$dir/wrk.txt")
non2xx=$(awk '/Non-2xx/ {print $NF}' "$dir/wrk.txt")
created=$(psql "$pg/bench_payments" -Atc "SELECT count(*) FROM refunds")
consistent=$(psql "$pg/bench_payments" -Atc "SELECT count(*) = 0 FROM payments p WHERE amount_refunded_minor <> (SELECT COALESCE(SUM(amount_minor), 0) FROM refunds r WHERE r.payment_id = p.id)")

cat >"$dir/refund.sql" <<SQL
\set n random(1, 2000000000)
\set m random(1, 2000000000)
\set p random(1, $payments)
INSERT INTO idempotency_keys (principal, key, fingerprint, locked_at, created_at, expires_at) VALUES ('pgbench', :client_id || '-' || :n || '-' || :m, repeat('f', 64), to_timestamp(:m), now(), now() + interval '24 hours') ON CONFLICT (principal, key) DO UPDATE SET fingerprint = excluded.fingerprint, locked_at = excluded.locked_at, response_status = NULL, response_body = NULL, payment_id = NULL, created_at = excluded.created_at, expires_at = excluded.expires_at WHERE idempotency_keys.expires_at <= excluded.created_at;
BEGIN;
UPDATE payments SET amount_refunded_minor = amount_refunded_minor + 1, updated_at = now() WHERE id = 'pay_bench_' || :p AND status = 'succeeded' AND amount_refunded_minor + 1 <= amount_captured_minor RETURNING *;
INSERT INTO refunds (id, payment_id, owner, status, amount_minor, currency, reason, attempts, created_at, updated_at) VALUES ('re_pg_' || :client_id || '_' || :n || '_' || :m, 'pay_bench_' || :p, '$owner', 'pending', 1, 'USD', 'requested_by_customer', 0, now(), now());
INSERT INTO payment_events (id, payment_id, owner, type, event, created_at) VALUES ('evt_pg_' || :client_id || '_' || :n || '_' || :m, 'pay_bench_' || :p, '$owner', 'payments.refund.created', '{"specversion":"1.0","data":{"amount":"0.01"}}', now());
INSERT INTO webhook_deliveries (endpoint_id, event_id, event_type, status, attempts, next_attempt_at, created_at, updated_at) SELECT id, 'evt_pg_' || :client_id || '_' || :n || '_' || :m, 'payments.refund.created', 'pending', 0, now(), now(), now() FROM webhook_endpoints WHERE status = 'enabled' AND (enabled_events = '*' OR (' ' || enabled_events || ' ') LIKE '% payments.refund.created %' ESCAPE '\\');
UPDATE idempotency_keys SET response_status = 202, response_body = repeat('x', 300), payment_id = 're_pg_' || :client_id || '_' || :n || '_' || :m, locked_at = NULL WHERE principal = 'pgbench' AND key = :client_id || '-' || :n || '-' || :m AND locked_at = to_timestamp(:m) AND response_status IS NULL;
COMMIT;
SQL
pgbench "$pg/bench_payments" -n -M prepared -c "$connections" -j 2 -T "$seconds" -f "$dir/refund.sql" >"$dir/pgbench.txt" 2>&1
pg_tps=$(awk '/^tps/ {print $3; exit}' "$dir/pgbench.txt")
printf 'service  %10s refunds/s   p50 %8s   p99 %8s   non-2xx %s   rows %s   amounts consistent: %s\n' "$service_rps" "$p50" "$p99" "${non2xx:-0}" "$created" "$consistent"
printf 'pgbench  %10s refunds/s   (same writes, same concurrency)\n' "$pg_tps"
awk -v s="$service_rps" -v p="$pg_tps" 'BEGIN { printf "ratio    %.2f of what PostgreSQL commits\n", s / p }'
