#!/usr/bin/env bash
# The gateway against nginx (Debian's package) as the equivalent reverse proxy, and against no
# proxy at all, in front of one trivial upstream (nginx answering `200 ok` from memory), with the
# same load generator in one run. Release build. Needs nginx and wrk (apt-get install nginx wrk).
#
# Both proxies do the same work per request: keep-alive to the upstream (nginx: `keepalive 64`,
# HTTP/1.1), X-Forwarded-For/-Proto/-Host and a request id set, an access log line written to
# a file, hop-by-hop headers dropped. The gateway's rate limiter is measured both off and on
# (a limit high enough never to refuse), since nginx does not limit unless told to.
#
# With edge auth on (`gateway+auth`: a route with `auth = "required"`), every request carries an
# RS256 access token that the gateway verifies (signature, iss, aud, exp, typ) and turns into
# identity headers; Debian's nginx has no JWT module (auth_jwt is nginx Plus only), so it is
# compared with the gateway without auth and with nginx doing no check. The key and token are
# made here with openssl; the JWKS is served by the upstream nginx.
#
# Then POSTs with a 1 KiB and a 64 KiB body, to an upstream location that reads the whole body
# before it answers (nginx's echo module, `echo_read_request_body`, with a body buffer large
# enough to keep it in memory): nginx as the proxy streams the body as the gateway does
# (`proxy_request_buffering off`; by default it would first spool bodies over its 16 KiB
# buffer to a temporary file).
#
# With INSTRUCTIONS=1 (needs valgrind) it then counts the instructions per request each proxy
# runs in user space, under callgrind: the difference between a 2 s and a 10 s wrk run, so
# start-up is left out; nginx as one process (`master_process off`), the gateway as it runs.
#
# Usage: [INSTRUCTIONS=1] bench/gateway_vs_nginx.sh [seconds] [connections] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
connections=${2:-64}
rounds=${3:-3}
for tool in nginx wrk; do
  command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] \
    || { echo "$tool is not installed (apt-get install nginx wrk)" >&2; exit 1; }
done
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
echo_module=/usr/lib/nginx/modules/ngx_http_echo_module.so
[ -f "$echo_module" ] \
  || { echo "nginx's echo module is not installed (apt-get install libnginx-mod-http-echo)" >&2; exit 1; }

# Every listener here uses SO_REUSEPORT, so a leftover process on one of these ports would
# silently take part of the load: refuse to start instead.
source bench/lib.sh
ports_free 29001 29002 29003 29004 29005 29006 29007

cargo build --release --locked --quiet -p gateway
dir=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  "$nginx_bin" -p "$dir/upstream" -c nginx.conf -s quit 2>/dev/null || true
  "$nginx_bin" -p "$dir/proxy" -c nginx.conf -s quit 2>/dev/null || true
  sleep 0.5
  rm -rf "$dir"
}
trap cleanup EXIT

mkdir -p "$dir/upstream/logs" "$dir/proxy/logs"
# The trivial upstream: one worker, answers from memory, no log; /body reads the request's
# whole body (kept in memory) before it answers.
cat >"$dir/upstream/nginx.conf" <<CONF
load_module $echo_module;
worker_processes 1;
pid $dir/upstream/nginx.pid;
error_log $dir/upstream/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_buffer_size 128k;
  server {
    listen 127.0.0.1:29001 reuseport backlog=4096;
    location / { return 200 "ok\n"; }
    location = /body { echo_read_request_body; echo "ok"; }
    location = /jwks.json { default_type application/json; alias $dir/jwks.json; }
  }
}
CONF
# An RS256 key, its JWKS, and an access token signed with it (valid for a day).
openssl genrsa -out "$dir/key.pem" 2048 2>/dev/null
modulus=$(openssl rsa -in "$dir/key.pem" -noout -modulus | cut -d= -f2)
python3 - "$modulus" >"$dir/jwks.json" <<'PY'
import base64, json, sys
n = bytes.fromhex(sys.argv[1])
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
print(json.dumps({"keys": [{"kty": "RSA", "kid": "bench", "use": "sig", "alg": "RS256",
                            "n": b64(n), "e": b64(b"\x01\x00\x01")}]}))
PY
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
now=$(date +%s)
signing_input="$(printf '{"alg":"RS256","typ":"at+jwt","kid":"bench"}' | b64url).$(printf \
  '{"iss":"http://localhost:8080/accounts","sub":"bench-user","aud":["accounts"],"exp":%d,"iat":%d,"nbf":%d,"jti":"bench","client_id":"bench","scope":"profile","legacy_user_id":7}' \
  $((now + 86400)) "$now" "$now" | b64url)"
token="$signing_input.$(printf '%s' "$signing_input" | openssl dgst -sha256 -sign "$dir/key.pem" -binary | b64url)"
# nginx's workers (nobody, when started as root) read the key set.
chmod a+x "$dir" && chmod a+r "$dir/jwks.json"
cat >"$dir/routes.toml" <<TOML
[[routes]]
prefix = "/edge"
upstream = "http://127.0.0.1:29001"
auth = "required"
TOML
# nginx as the reverse proxy, one worker per core, like the gateway's one runtime thread per core.
cat >"$dir/proxy/nginx.conf" <<CONF
worker_processes auto;
pid $dir/proxy/nginx.pid;
error_log $dir/proxy/logs/error.log warn;
events { worker_connections 4096; }
http {
  log_format main '\$remote_addr "\$request" \$status \$body_bytes_sent \$request_time \$request_id';
  access_log $dir/proxy/logs/access.log main buffer=64k;
  keepalive_requests 1000000;
  upstream backend {
    server 127.0.0.1:29001;
    keepalive 64;
  }
  server {
    listen 127.0.0.1:29002 reuseport backlog=4096;
    location /accounts/ {
      proxy_pass http://backend/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_request_buffering off;
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Host \$host;
      proxy_set_header X-Request-ID \$request_id;
    }
  }
}
CONF
"$nginx_bin" -p "$dir/upstream" -c nginx.conf
"$nginx_bin" -p "$dir/proxy" -c nginx.conf

start_gateway() { # start_gateway <port> <rate limit rps> [routes file]
  GATEWAY_ADDR=127.0.0.1:$1 GATEWAY_ACCOUNTS_URL=http://127.0.0.1:29001 \
    GATEWAY_PAYMENTS_URL=http://127.0.0.1:29001 GATEWAY_RATE_LIMIT_RPS=$2 \
    GATEWAY_ROUTES_FILE=${3:-} GATEWAY_JWKS_URL=http://127.0.0.1:29001/jwks.json \
    "${CARGO_TARGET_DIR:-target}/release/gateway" >"$dir/gateway-$1.log" 2>&1 &
  pids+=($!)
}
start_gateway 29003 0
start_gateway 29004 100000000
start_gateway 29007 0 "$dir/routes.toml"
for port in 29001 29002 29003 29004; do
  for _ in $(seq 1 50); do curl -fs "http://127.0.0.1:$port/accounts/" >/dev/null && break; sleep 0.2; done
  curl -fs "http://127.0.0.1:$port/accounts/" >/dev/null || { echo "nothing answers on :$port" >&2; exit 1; }
done
for _ in $(seq 1 50); do curl -fs http://127.0.0.1:29007/healthz >/dev/null && break; sleep 0.2; done
curl -fs -H "Authorization: Bearer $token" http://127.0.0.1:29007/edge/ >/dev/null \
  || { echo "the gateway with edge auth refuses the bench token" >&2; exit 1; }
[ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:29007/edge/)" = 401 ] \
  || { echo "the gateway with edge auth lets a request without a token through" >&2; exit 1; }

targets=(
  "direct         http://127.0.0.1:29001/accounts/"
  "nginx          http://127.0.0.1:29002/accounts/"
  "gateway        http://127.0.0.1:29003/accounts/"
  "gateway+limit  http://127.0.0.1:29004/accounts/"
  "gateway+auth   http://127.0.0.1:29007/edge/"
)
echo "GET through each proxy to a trivial upstream: wrk -t2 -c${connections} -d${seconds}s, ${rounds} rounds"
echo "$(nproc) cores; $("$nginx_bin" -v 2>&1); $(wrk -v 2>&1 | head -n1 | cut -d' ' -f1-2)"
for round in $(seq 1 "$rounds"); do
  for target in "${targets[@]}"; do
    set -- $target
    # The token only where it is checked (the rate limiter would verify it too, to key on
    # its subject).
    auth=()
    [ "$1" = gateway+auth ] && auth=(-H "Authorization: Bearer $token")
    wrk -t2 -c"$connections" -d"${seconds}s" --latency "${auth[@]}" "$2" >"$dir/wrk.txt"
    read -r rps p50 p99 bad < <(wrk_figures "$dir/wrk.txt")
    printf 'round %s  %-14s %10s req/s   p50 %8s   p99 %8s   non-2xx %s\n' \
      "$round" "$1" "$rps" "$p50" "$p99" "$bad"
  done
done

for size in 1024 65536; do
  cat >"$dir/post-$size.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/octet-stream"
wrk.body = string.rep("x", $size)
LUA
  code=$(curl -s -o "$dir/body" -w '%{http_code}' --data-binary @<(head -c "$size" /dev/zero | tr '\0' x) \
    http://127.0.0.1:29003/accounts/body)
  [ "$code" = 200 ] || { echo "POST $size bytes through the gateway: $code $(cat "$dir/body")" >&2; exit 1; }
done
post_targets=(
  "direct   http://127.0.0.1:29001/body"
  "nginx    http://127.0.0.1:29002/accounts/body"
  "gateway  http://127.0.0.1:29003/accounts/body"
)
echo "POST with a body the upstream reads whole: wrk -t2 -c${connections} -d${seconds}s, ${rounds} rounds"
for round in $(seq 1 "$rounds"); do
  for size in 1024 65536; do
    for target in "${post_targets[@]}"; do
      set -- $target
      wrk -t2 -c"$connections" -d"${seconds}s" --latency -s "$dir/post-$size.lua" "$2" >"$dir/wrk.txt"
      read -r rps p50 p99 bad < <(wrk_figures "$dir/wrk.txt")
      printf 'round %s  POST %-5s %-8s %10s req/s   p50 %8s   p99 %8s   non-2xx %s\n' \
        "$round" "$((size / 1024))K" "$1" "$rps" "$p50" "$p99" "$bad"
    done
  done
done

[ "${INSTRUCTIONS:-0}" = 1 ] || exit 0
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
count() { # count <name> <port> <command...>: instructions of one wrk run of 2 s and one of 10 s
  local name=$1 port=$2; shift 2
  local runs=()
  for run_seconds in 2 10; do
    valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out" "$@" \
      >"$dir/$name.log" 2>"$dir/$name.valgrind" &
    local pid=$!
    for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$port/accounts/" >/dev/null && break; sleep 0.2; done
    local requests
    requests=$(wrk -t1 -c16 -d"${run_seconds}s" "http://127.0.0.1:$port/accounts/" | awk '/requests in/ {print $1}')
    kill -INT "$pid" 2>/dev/null || true
    kill -QUIT "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    runs+=("$requests" "$(grep -o 'Collected : [0-9]*' "$dir/$name.valgrind" | awk '{print $3}')")
  done
  printf '%-8s %6s instructions per request (user space)\n' "$name" \
    $(( (runs[3] - runs[1]) / (runs[2] - runs[0]) ))
}
sed -e 's/^worker_processes auto;/worker_processes 1; daemon off; master_process off;/' \
  -e 's/29002/29005/' -e 's/nginx.pid;/single.pid;/' "$dir/proxy/nginx.conf" >"$dir/proxy/single.conf"
echo "under callgrind, wrk -t1 -c16:"
count nginx 29005 "$nginx_bin" -p "$dir/proxy" -c single.conf
export GATEWAY_ADDR=127.0.0.1:29006 GATEWAY_ACCOUNTS_URL=http://127.0.0.1:29001 \
  GATEWAY_PAYMENTS_URL=http://127.0.0.1:29001 GATEWAY_RATE_LIMIT_RPS=0
count gateway 29006 "${CARGO_TARGET_DIR:-target}/release/gateway"
