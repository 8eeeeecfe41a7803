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
source bench/lib.sh
ports_free 28080 28081 28082
cargo build --release --locked --quiet -p stack
dir=$(mktemp -d)
trap 'kill $stack_pid 2>/dev/null; wait $stack_pid 2>/dev/null; rm -rf "$dir"' EXIT
start_stack "$dir"
bench_user >/dev/null
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
  read -r rps p50 p99 bad < <(wrk_figures "$dir/wrk.txt")
  if [ "$bad" != 0 ] || grep -q 'Socket errors' "$dir/wrk.txt"; then
    echo "errors in round $round:" >&2; cat "$dir/wrk.txt" >&2; exit 1
  fi
  printf 'round %s: %8.1f logins/s (%5.1f per core)   p50 %s   p99 %s\n' "$round" "$rps" \
    "$(awk -v r="$rps" -v c="$cores" 'BEGIN {print r / c}')" "$p50" "$p99"
done
echo "Keycloak's sizing guide: 15 password logins/s per vCPU"
