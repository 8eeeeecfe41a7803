#!/usr/bin/env bash
# Payments created and processed (the processor on, the sandbox provider), straight at
# payments on PostgreSQL: how many payments are accepted per second, how many of them were
# processed by the end, and how many transactions PostgreSQL committed or rolled back per
# payment over the load and the quiet after it (what the workers, the relay and the webhook
# deliverer cost the database beside the payment's own writes).
#
# PostgreSQL counts a backend's transactions when it reports its statistics, at the latest
# some 10 s after the backend goes idle: the count is read after a quiet 14 s.
# Needs wrk and psql, and PostgreSQL at $BENCH_PG (default postgres://postgres@127.0.0.1:5432).
# Usage: bench/payments_processed.sh [seconds] [connections] [workers]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
connections=${2:-2}
workers=${3:-16}
pg=${BENCH_PG:-postgres://postgres@127.0.0.1:5432}
for tool in wrk psql; do command -v $tool >/dev/null || { echo "$tool is not installed" >&2; exit 1; }; done
source bench/lib.sh
ports_free 28080 28081 28082
for db in bench_accounts bench_payments; do
  psql "$pg/postgres" -q -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
done
cargo build --release --locked --quiet -p stack
dir=$(mktemp -d) stack_pid=
trap 'kill $stack_pid 2>/dev/null; wait $stack_pid 2>/dev/null; rm -rf "$dir"' EXIT
start_stack "$dir" ACCOUNTS_DATABASE_URL="$pg/bench_accounts" PAYMENTS_DATABASE_URL="$pg/bench_payments" \
  PAYMENTS_DATABASE_MAX_CONNECTIONS=32 PAYMENTS_PROCESSOR_ENABLED=true PAYMENTS_WORKERS="$workers"
token=$(bench_user)
payments_lua "$dir/create.lua" /v1/payments "$token"
transactions() {
  psql "$pg/postgres" -Atc "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = 'bench_payments'"
}
sleep 14 # the sign-up's and start-up's statistics reported
before=$(transactions)
wrk -t1 -c"$connections" -d"${seconds}s" --latency -s "$dir/create.lua" http://127.0.0.1:28082 -- "$(date +%s%N)" >"$dir/wrk.txt"
read -r rps p50 p99 bad < <(wrk_figures "$dir/wrk.txt")
sleep 14
after=$(transactions)
payments=$(psql "$pg/bench_payments" -Atc "SELECT count(*) FROM payments")
echo "POST /v1/payments with the processor on: ${workers} workers, wrk ${connections} connections, ${seconds}s, $(nproc) cores"
printf 'accepted %s payments/s (p50 %s, p99 %s, non-2xx %s), %s payments\n' "$rps" "$p50" "$p99" "$bad" "$payments"
printf 'status   %s\n' "$(psql "$pg/bench_payments" -Atc "SELECT string_agg(status || ' ' || n, ', ') FROM (SELECT status, count(*) AS n FROM payments GROUP BY 1 ORDER BY 1) s")"
awk -v t=$((after - before)) -v p="$payments" 'BEGIN { printf "database %d transactions: %.2f per payment\n", t, t / p }'
