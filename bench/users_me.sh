#!/usr/bin/env bash
# GET /users/me requests per second (token verification + one user read), through the gateway
# and straight at accounts, on the release build with SQLite. Needs wrk (apt-get install wrk).
# Usage: bench/users_me.sh [seconds] [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
connections=${2:-32}
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }
source bench/lib.sh
ports_free 28080 28081 28082

cargo build --release --locked --quiet
dir=$(mktemp -d)
trap 'kill $stack_pid 2>/dev/null; wait $stack_pid 2>/dev/null; rm -rf "$dir"' EXIT
start_stack "$dir"
token=$(bench_user)

echo "GET /users/me, RS256 token, SQLite, ${connections} connections, ${seconds}s, $(nproc) cores"
for target in "gateway http://127.0.0.1:28080/accounts/users/me" "accounts http://127.0.0.1:28081/users/me"; do
  set -- $target
  wrk -t2 -c"$connections" -d"${seconds}s" --latency -H "Authorization: Bearer $token" "$2" >"$dir/wrk.txt"
  read -r rps p50 p99 errors < <(wrk_figures "$dir/wrk.txt")
  printf '%-9s %10s req/s   p50 %8s   p99 %8s   non-2xx: %s\n' "$1" "$rps" "$p50" "$p99" "$errors"
done
