#!/usr/bin/env bash
# GET /users/me requests per second (token verification + one user read), through the gateway
# and straight at accounts, on the release build with SQLite. Needs wrk (apt-get install wrk).
# Usage: bench/users_me.sh [seconds] [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
connections=${2:-32}
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }

cargo build --release --locked --quiet
dir=$(mktemp -d)
GATEWAY_ADDR=127.0.0.1:28080 ACCOUNTS_ADDR=127.0.0.1:28081 PAYMENTS_ADDR=127.0.0.1:28082 \
  RUST_LOG=warn GATEWAY_RATE_LIMIT_RPS=0 DATA_DIR="$dir/data" "${CARGO_TARGET_DIR:-target}/release/stack" >"$dir/log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 1 60); do curl -fs http://127.0.0.1:28080/readyz >/dev/null && break; sleep 0.5; done

curl -fs -X POST http://127.0.0.1:28080/accounts/v1/users -H 'content-type: application/json' \
  -d '{"email":"bench@example.com","password":"password-123"}' >/dev/null
token=$(curl -fs -X POST http://127.0.0.1:28080/accounts/v1/token \
  -d grant_type=password -d username=bench@example.com -d password=password-123 \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')

echo "GET /users/me, RS256 token, SQLite, ${connections} connections, ${seconds}s, $(nproc) cores"
for target in "gateway http://127.0.0.1:28080/accounts/users/me" "accounts http://127.0.0.1:28081/users/me"; do
  set -- $target
  wrk -t2 -c"$connections" -d"${seconds}s" --latency -H "Authorization: Bearer $token" "$2" >"$dir/wrk.txt"
  rps=$(awk '/Requests\/sec/ {print $2}' "$dir/wrk.txt")
  p50=$(awk '$1 == "50%" {print $2}' "$dir/wrk.txt")
  p99=$(awk '$1 == "99%" {print $2}' "$dir/wrk.txt")
  errors=$(grep -c 'Non-2xx' "$dir/wrk.txt" || true)
  printf '%-9s %10s req/s   p50 %8s   p99 %8s   non-2xx lines: %s\n' "$1" "$rps" "$p50" "$p99" "$errors"
done
