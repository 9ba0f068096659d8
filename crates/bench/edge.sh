#!/usr/bin/env bash
# The edge's cost, in two same-run ratios (SQLite; the key is cached after its first call):
#   1. nginx + forward-auth (docs/edge-nginx.conf, verbatim) against the same nginx proxying
#      to the same upstream with no auth, with wrk (2 threads, 32 connections). The upstream
#      is a third nginx server block answering a fixed 200, so the ratio is what auth_request
#      adds to a proxied call. Target: forward-auth ≥ 0.5 of no auth.
#   2. envoy.service.auth.v3.Authorization/Check (the CheckRequest Envoy's ext_authz sends,
#      built with Envoy's own stubs from xds-protos) against grpc.health.v1.Health/Check and
#      a plain VerifyApiKey, with h2load (4 connections × 16 streams). Target: Check ≥ 0.8 of health.
# Each round runs baseline, edge, edge, baseline (half a run each), so drift weighs on both.
# SERVER_PIN and CLIENT_PIN prefix keyward's and h2load's commands, as in floor.sh, e.g.
# SERVER_PIN="taskset -c 0" CLIENT_PIN="taskset -c 1", so the gRPC ratios are the server's
# and not h2load's share of the cores (nginx and wrk are not pinned).
#   bash crates/bench/edge.sh [seconds per target and round, default 4] [rounds, default 3]
# Needs `bash tests/tools.sh bench` (h2load, wrk, nginx, the venv with xds-protos) and curl.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
SECONDS_PER_RUN="${1:-4}"
HALF_RUN=$(( (SECONDS_PER_RUN + 1) / 2 ))
ROUNDS="${2:-3}"
for tool in h2load wrk; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: bash tests/tools.sh bench" >&2; exit 1; }
done
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
[ -x "$NGINX" ] || { echo "nginx is missing: bash tests/tools.sh" >&2; exit 1; }
source crates/bench/common.sh
"$PY" -c 'import envoy.service.auth.v3.external_auth_pb2' 2>/dev/null ||
  { echo "xds-protos is missing: bash tests/tools.sh" >&2; exit 1; }
PORT=50564
HTTP_PORT=50565
AUTH_PORT=50566   # nginx with auth_request
OPEN_PORT=50567   # nginx proxying with no auth
APP_PORT=50568    # the upstream
SERVER=""
NGINX_PID=""
trap '[ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; [ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null; rm -rf "$WORK"' EXIT

cat >"$WORK/routes.toml" <<'TOML'
[[routes]]
path = "/*"
scopes = ["api"]
TOML
mkdir -p "$WORK/data"
KEYWARD_DATABASE_URL="sqlite://$WORK/data/keyward.db" KEYWARD_DATA_DIR="$WORK/data" \
  KEYWARD_GRPC_ADDR="127.0.0.1:$PORT" KEYWARD_HTTP_ADDR="127.0.0.1:$HTTP_PORT" KEYWARD_HASH_SECRET=bench \
  KEYWARD_MASTER_KEY="$MASTER_KEY" KEYWARD_BOOTSTRAP_ADMIN_KEY="$ADMIN" KEYWARD_EDGE_ROUTES="$WORK/routes.toml" \
  KEYWARD_LOG=warn ${SERVER_PIN:-} "$BIN/keyward" serve &
SERVER=$!
wait_ready "$PORT"
KEY="$(curl -sf -H "authorization: Bearer $ADMIN" -H 'content-type: application/json' \
  -d '{"apiKey":{"name":"edge-bench","scopes":["api"]}}' "http://127.0.0.1:$HTTP_PORT/v1/apiKeys" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["secret"])')"

cat >"$WORK/nginx.conf" <<NGINX
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $WORK/body; proxy_temp_path $WORK/proxy;
    fastcgi_temp_path $WORK/fastcgi; uwsgi_temp_path $WORK/uwsgi; scgi_temp_path $WORK/scgi;
    upstream keyward { server 127.0.0.1:$HTTP_PORT; keepalive 32; }
    upstream app { server 127.0.0.1:$APP_PORT; }
    server { listen 127.0.0.1:$APP_PORT; location / { return 200 "upstream\n"; } }
    server { listen 127.0.0.1:$OPEN_PORT; location / { proxy_set_header Host \$host; proxy_pass http://app; } }
    server {
        listen 127.0.0.1:$AUTH_PORT;
$(cat docs/edge-nginx.conf)
    }
}
NGINX
"$NGINX" -p "$WORK" -c "$WORK/nginx.conf" -g 'daemon off;' &
NGINX_PID=$!
for _ in $(seq 1 50); do curl -s -o /dev/null "http://127.0.0.1:$OPEN_PORT/" && break; sleep 0.1; done
# Both paths must answer 200: a refusal costs less and would flatter the figure.
for port in "$OPEN_PORT" "$AUTH_PORT"; do
  status="$(curl -s -o /dev/null -w '%{http_code}' -H "authorization: Bearer $KEY" "http://127.0.0.1:$port/v1/things")"
  [ "$status" = 200 ] || { echo "nginx on $port answered $status" >&2; cat "$WORK/error.log" >&2; exit 1; }
done

wrkrate() { # wrkrate <port>: requests per second; fails on any non-2xx answer or socket error
  local out
  out="$(wrk -t 2 -c 32 -d "${HALF_RUN}s" -H "authorization: Bearer $KEY" "http://127.0.0.1:$1/v1/things" 2>&1)"
  if grep -q 'Non-2xx\|Socket errors' <<<"$out"; then echo "$out" >&2; echo "wrk saw failures" >&2; exit 1; fi
  awk '/^Requests\/sec:/ { print $2 }' <<<"$out"
}

h2rate() { # h2rate <path> <body file> [header…]: calls per second, and the cores keyward used over
  # the run, warm-up included (its CPU time over the run's wall time): near 1 when pinned, the
  # server was the bound. Fails unless every call answered 200.
  local out start began
  start="$(cpu_ticks "$SERVER")"; began="$(date +%s.%N)"
  out="$(${CLIENT_PIN:-} h2load -c 4 -m 16 -t 1 -D "$HALF_RUN" --warm-up-time 1 -H 'content-type: application/grpc' \
    -H 'te: trailers' "${@:3}" -d "$2" "http://127.0.0.1:$PORT$1" 2>&1)"
  if ! grep -q 'status codes: [0-9]* 2xx, 0 3xx, 0 4xx, 0 5xx' <<<"$out" || ! grep -q ' 0 failed' <<<"$out"; then
    echo "$out" >&2; echo "h2load saw failures" >&2; exit 1
  fi
  awk -v ticks="$(( $(cpu_ticks "$SERVER") - start ))" -v hz="$(getconf CLK_TCK)" \
    -v began="$began" -v ended="$(date +%s.%N)" '/^finished in/ {
    rate = $4; gsub(",", "", rate); printf "%s %.2f\n", rate, ticks / hz / (ended - began) }' <<<"$out"
}

# gRPC frames: an empty HealthCheckRequest, a VerifyApiKeyRequest {key}, and the
# CheckRequest Envoy sends for `GET /v1/things` with the key as a bearer token.
printf '\x00\x00\x00\x00\x00' >"$WORK/health.bin"
"$PY" - "$WORK/verify.bin" "$KEY" <<'PY'
import struct, sys
key = sys.argv[2].encode()
message = b"\x0a" + bytes([len(key)]) + key  # keyward keys are shorter than 128 bytes
open(sys.argv[1], "wb").write(b"\0" + struct.pack(">I", len(message)) + message)
PY
check_frame "$WORK/check.bin" "$KEY"
check_admits "127.0.0.1:$PORT" "$WORK/check.bin"

AUTH=(-H "authorization: Bearer $ADMIN")
echo "server: ${SERVER_PIN:-any core}; h2load: ${CLIENT_PIN:-any core}"
echo "machine: $(machine); $(h2load --version | head -1); $(wrk --version 2>&1 | head -1); $("$NGINX" -v 2>&1)"
for round in $(seq 1 "$ROUNDS"); do
  o1="$(wrkrate "$OPEN_PORT")"; a1="$(wrkrate "$AUTH_PORT")"; a2="$(wrkrate "$AUTH_PORT")"; o2="$(wrkrate "$OPEN_PORT")"
  h1="$(h2rate /grpc.health.v1.Health/Check "$WORK/health.bin")"
  c1="$(h2rate /envoy.service.auth.v3.Authorization/Check "$WORK/check.bin")"
  v1="$(h2rate /keyward.v1.ApiKeyService/VerifyApiKey "$WORK/verify.bin" "${AUTH[@]}")"
  v2="$(h2rate /keyward.v1.ApiKeyService/VerifyApiKey "$WORK/verify.bin" "${AUTH[@]}")"
  c2="$(h2rate /envoy.service.auth.v3.Authorization/Check "$WORK/check.bin")"
  h2="$(h2rate /grpc.health.v1.Health/Check "$WORK/health.bin")"
  awk -v r="$round" -v o="$o1 $o2" -v a="$a1 $a2" -v h="$h1 $h2" -v c="$c1 $c2" -v v="$v1 $v2" 'BEGIN {
    split(o, O); split(a, A); split(h, H); split(c, C); split(v, V)
    o = (O[1] + O[2]) / 2; a = (A[1] + A[2]) / 2; h = (H[1] + H[3]) / 2; c = (C[1] + C[3]) / 2; v = (V[1] + V[3]) / 2
    printf "round %d: nginx no auth %6.0f/s  forward-auth %6.0f/s  ratio %.3f | health %6.0f/s  Check %6.0f/s  verify %6.0f/s  Check/health %.3f  verify/health %.3f | keyward cores: health %.2f  Check %.2f  verify %.2f\n",
      r, o, a, a / o, h, c, v, c / h, v / h, (H[2] + H[4]) / 2, (C[2] + C[4]) / 2, (V[2] + V[4]) / 2 }'
done
