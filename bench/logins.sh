#!/usr/bin/env bash
# Password logins per second (the token endpoint's password grant: the account read, the
# attempt counted, an Argon2id verification at the configured cost, 19 MiB and t=2, and an
# access and refresh token signed and stored), straight at accounts on the release build with
# SQLite, next to Keycloak's published sizing figure (15 password logins per second per vCPU,
# "Concepts for sizing CPU and memory resources", Keycloak 26). wrk, one thread, a few
# connections (more only queue for the hashing slots, one per core).
# Needs wrk (apt-get install wrk).
# Usage: bench/logins.sh [seconds] [connections] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
connections=${2:-4}
rounds=${3:-3}
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }
for port in 28080 28081 28082; do
  if ss -Hltn "sport = :$port" | grep -q .; then
    echo "port $port is already in use (a previous run still going?); stop that first" >&2
    exit 1
  fi
done
cargo build --release --locked --quiet -p stack
dir=$(mktemp -d)
GATEWAY_ADDR=127.0.0.1:28080 ACCOUNTS_ADDR=127.0.0.1:28081 PAYMENTS_ADDR=127.0.0.1:28082 \
  RUST_LOG=warn GATEWAY_RATE_LIMIT_RPS=0 DATA_DIR="$dir/data" "${CARGO_TARGET_DIR:-target}/release/stack" >"$dir/log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 1 60); do curl -fs http://127.0.0.1:28080/readyz >/dev/null && break; sleep 0.5; done
curl -fs -X POST http://127.0.0.1:28081/v1/users -H 'content-type: application/json' \
  -d '{"email":"bench@example.com","password":"password-123"}' >/dev/null
cat >"$dir/login.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.body = "grant_type=password&username=bench%40example.com&password=password-123"
LUA
curl -fs -o /dev/null -X POST http://127.0.0.1:28081/v1/token \
  -d grant_type=password -d username=bench@example.com -d password=password-123

cores=$(nproc)
echo "POST /v1/token (password grant), SQLite, wrk -t1 -c${connections}, ${seconds}s x ${rounds}, ${cores} cores"
for round in $(seq 1 "$rounds"); do
  wrk -t1 -c"$connections" -d"${seconds}s" --latency -s "$dir/login.lua" http://127.0.0.1:28081/v1/token >"$dir/wrk.txt"
  if grep -q 'Non-2xx\|Socket errors' "$dir/wrk.txt"; then
    echo "errors in round $round:" >&2; cat "$dir/wrk.txt" >&2; exit 1
  fi
  rps=$(awk '/Requests\/sec/ {print $2}' "$dir/wrk.txt")
  printf 'round %s: %8.1f logins/s (%5.1f per core)   p50 %s   p99 %s\n' "$round" "$rps" \
    "$(awk -v r="$rps" -v c="$cores" 'BEGIN {print r / c}')" "$(awk '$1 == "50%" {print $2}' "$dir/wrk.txt")" \
    "$(awk '$1 == "99%" {print $2}' "$dir/wrk.txt")"
done
echo "Keycloak's sizing guide: 15 password logins/s per vCPU"
