# What the bench scripts share; sourced by them (`source bench/lib.sh` from the repository root).

# ports_free PORT...: refuses to go on when one of the ports is taken (a previous run still
# going would silently share the load: every listener here uses SO_REUSEPORT).
ports_free() {
  local port
  for port in "$@"; do
    if ss -Hltn "sport = :$port" | grep -q .; then
      echo "port $port is already in use (a previous run still going?); stop that first" >&2
      exit 1
    fi
  done
}

# start_stack DIR [NAME=VALUE...]: the release build of the whole stack (gateway :28080,
# accounts :28081, payments :28082, the rate limiter off, data and log under DIR, the extra
# environment given), in the background; waits until it is ready. Sets stack_pid. Run under
# the command in the array `pin`, if the script set one (`pin=(taskset -c 1)`).
start_stack() {
  local dir=$1; shift
  ${pin[@]+"${pin[@]}"} env GATEWAY_ADDR=127.0.0.1:28080 ACCOUNTS_ADDR=127.0.0.1:28081 PAYMENTS_ADDR=127.0.0.1:28082 \
    RUST_LOG=warn GATEWAY_RATE_LIMIT_RPS=0 DATA_DIR="$dir/data" "$@" \
    "${CARGO_TARGET_DIR:-target}/release/stack" >"$dir/stack.log" 2>&1 &
  stack_pid=$!
  for _ in $(seq 1 120); do
    curl -fs http://127.0.0.1:28080/readyz >/dev/null && return 0
    sleep 0.5
  done
  echo "the stack did not get ready: $(tail -n 5 "$dir/stack.log")" >&2
  exit 1
}

# bench_user: signs up bench@example.com (password-123) through the gateway and prints an
# access token for them (the password grant).
bench_user() {
  curl -fs -X POST http://127.0.0.1:28080/accounts/v1/users -H 'content-type: application/json' \
    -d '{"email":"bench@example.com","password":"password-123"}' >/dev/null
  curl -fs -X POST http://127.0.0.1:28080/accounts/v1/token \
    -d grant_type=password -d username=bench@example.com -d password=password-123 \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}

# wrk_figures FILE: "requests/s p50 p99 non-2xx" of a `wrk --latency` report.
wrk_figures() {
  awk '/Requests\/sec/ {rps = $2} $1 == "50%" {p50 = $2} $1 == "99%" {p99 = $2}
       /Non-2xx/ {bad = $NF} END {print rps, p50, p99, bad + 0}' "$1"
}

# payments_lua FILE PATH TOKEN: a wrk script that POSTs a payment to PATH with TOKEN, each
# request under an Idempotency-Key of its own. Lua's random numbers are not seeded (the same in
# every run): each run's keys begin with a prefix of its own, given as the script's argument
# (`wrk ... -- "$(date +%s%N)"`).
payments_lua() {
  cat >"$1" <<LUA
local counter = 0
local prefix
function init(args) prefix = args[1] end
function setup(thread) thread:set("id", tostring(math.random(1, 1e9))) end
request = function()
  counter = counter + 1
  return wrk.format("POST", "$2", {
    ["Authorization"] = "Bearer $3",
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = prefix .. "-" .. id .. "-" .. counter,
  }, '{"amount": 100.00, "currency": "USD", "description": "bench"}')
end
LUA
}
