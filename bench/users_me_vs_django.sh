#!/usr/bin/env bash
# GET /users/me with a valid RS256 access token: the monolith's stack (Django 5.2 + Django REST
# framework + simplejwt under `gunicorn -w 2`, SQLite; bench/django) against ours on the release
# build with SQLite, straight at accounts and through the gateway, with the same load generator
# in one run: wrk, one thread, 32 connections, rounds taking turns (Django, accounts, gateway),
# the median of the rounds reported with its ratio to Django's.
#
# Each side verifies the token's signature and claims and reads the user from SQLite per
# request; each side's token is its own (simplejwt's AccessToken for Django, the password grant
# for ours). Needs wrk (apt-get install wrk), python3 with venv, and PyPI for bench/django's
# requirements (installed once into target/bench-venv).
#
# Usage: bench/users_me_vs_django.sh [seconds] [connections] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-5}
connections=${2:-32}
rounds=${3:-3}
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }
source bench/lib.sh
ports_free 28080 28081 28082 28090

venv="$(realpath -m "${BENCH_VENV:-target/bench-venv}")"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r bench/django/requirements.txt
cargo build --release --locked --quiet -p stack

dir=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}" ${stack_pid:-}; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}" ${stack_pid:-}; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT

# The monolith: its keys, its database with one user, its token, gunicorn with 2 workers.
mkdir -p "$dir/keys"
openssl genrsa -out "$dir/keys/private.pem" 2048 2>/dev/null
openssl rsa -in "$dir/keys/private.pem" -pubout -out "$dir/keys/public.pem" 2>/dev/null
export BENCH_DJANGO_DATABASE="$dir/django.sqlite3" BENCH_DJANGO_KEYS="$dir/keys"
(cd bench/django && DJANGO_SETTINGS_MODULE=settings "$venv/bin/python" -m django migrate -v 0)
django_token=$(cd bench/django && "$venv/bin/python" make_token.py)
(cd bench/django && exec "$venv/bin/gunicorn" -w 2 -b 127.0.0.1:28090 --log-level warning wsgi) \
  >"$dir/django.log" 2>&1 &
pids+=($!)

# Ours: the whole stack on SQLite, the rate limiter off (it would refuse a benchmark).
start_stack "$dir"
for _ in $(seq 1 120); do
  curl -fs -o /dev/null -H "Authorization: Bearer $django_token" http://127.0.0.1:28090/users/me && break
  sleep 0.5
done
token=$(bench_user)
for url in "http://127.0.0.1:28090/users/me $django_token" "http://127.0.0.1:28081/users/me $token"; do
  set -- $url
  code=$(curl -s -o "$dir/body" -w '%{http_code}' -H "Authorization: Bearer $2" "$1")
  [ "$code" = 200 ] || { echo "$1 answered $code: $(cat "$dir/body")" >&2; exit 1; }
done

targets=(
  "django http://127.0.0.1:28090/users/me $django_token"
  "accounts http://127.0.0.1:28081/users/me $token"
  "gateway http://127.0.0.1:28080/accounts/users/me $token"
)
echo "GET /users/me, RS256 token, SQLite, wrk -t1 -c${connections}, ${seconds}s rounds x ${rounds}, $(nproc) cores"
for round in $(seq 1 "$rounds"); do
  for target in "${targets[@]}"; do
    set -- $target
    wrk -t1 -c"$connections" -d"${seconds}s" --latency -H "Authorization: Bearer $3" "$2" >"$dir/wrk.txt"
    read -r rps p50 p99 bad < <(wrk_figures "$dir/wrk.txt")
    if [ "$bad" != 0 ] || grep -q 'Socket errors' "$dir/wrk.txt"; then
      echo "$1: errors in round $round:" >&2; cat "$dir/wrk.txt" >&2; exit 1
    fi
    echo "$1 $round $rps $p50 $p99" | tee -a "$dir/results"
  done
done
python3 - "$dir/results" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
by = {}
for name, _, rps, p50, p99 in rows:
    by.setdefault(name, []).append((float(rps), p50, p99))
median = {name: sorted(runs)[len(runs) // 2] for name, runs in by.items()}
base = median["django"][0]
print(f"{'':9} {'req/s (median)':>15} {'p50':>9} {'p99':>9} {'of Django':>10}   rounds")
for name in ("django", "accounts", "gateway"):
    rps, p50, p99 = median[name]
    rounds = ", ".join(f"{r:,.0f}" for r, _, _ in by[name])
    print(f"{name:9} {rps:>15,.0f} {p50:>9} {p99:>9} {rps / base:>9.1f}x   {rounds}")
PY
