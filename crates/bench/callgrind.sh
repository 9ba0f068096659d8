#!/usr/bin/env bash
# Instructions per call, which the machine's noise does not move: `keyward serve`
# (release build, SQLite) under valgrind's callgrind, instrumented only while h2load
# sends N calls (4 connections × 16 streams) of each target in turn: Health/Check, a
# cached VerifyApiKey, and a VerifyApiKey of a key over its rate limit (refused from
# memory), and envoy.service.auth.v3.Authorization/Check (ext_authz) of the cached key
# through a one-rule routes file. Prints instructions per call and leaves the profiles in OUT for
# `callgrind_annotate`. valgrind runs SHA-256 in software (no SHA-NI), so the two keyed
# hashes weigh more here than on the machine.
#   bash crates/bench/callgrind.sh [calls per target, default 20000] [OUT, default target/callgrind]
# Needs valgrind (Debian's `valgrind`), h2load (`bash tests/tools.sh bench`) and grpcurl
# and xds-protos (`bash tests/tools.sh`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
CALLS="${1:-20000}"
OUT="${2:-target/callgrind}"
command -v valgrind >/dev/null || { echo "valgrind is missing: apt-get install valgrind" >&2; exit 1; }
command -v h2load >/dev/null || { echo "h2load is missing: bash tests/tools.sh bench" >&2; exit 1; }
GRPCURL="$PWD/target/tools/bin/grpcurl"
[ -x "$GRPCURL" ] || { echo "grpcurl is missing: bash tests/tools.sh" >&2; exit 1; }
source crates/bench/common.sh
PORT=50620
rm -rf "$OUT"; mkdir -p "$OUT"
printf '[[routes]]\npath = "/*"\n' >"$WORK/routes.toml"
KEYWARD_DATABASE_URL="sqlite://$WORK/keyward.db" KEYWARD_DATA_DIR="$WORK" KEYWARD_GRPC_ADDR="127.0.0.1:$PORT" \
  KEYWARD_HTTP_ADDR=127.0.0.1:0 KEYWARD_HASH_SECRET=bench KEYWARD_MASTER_KEY="$MASTER_KEY" \
  KEYWARD_BOOTSTRAP_ADMIN_KEY="$ADMIN" KEYWARD_EDGE_ROUTES="$WORK/routes.toml" KEYWARD_LOG=warn valgrind --tool=callgrind --instr-atstart=no \
  --callgrind-out-file="$OUT/callgrind.out.%p" "$BIN/keyward" serve 2>"$OUT/valgrind.log" &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null; rm -rf "$WORK"' EXIT
# Under valgrind the server starts in seconds, not milliseconds.
for _ in $(seq 1 300); do
  "$BIN/keyward-bench" run --addr "127.0.0.1:$PORT" --target health --requests 1 --warmup 0s >/dev/null 2>&1 && break
  sleep 0.2
done

frame() { # frame <file> [key]: a gRPC frame holding VerifyApiKeyRequest{key}, or an empty message
  if [ -z "${2:-}" ]; then printf '\x00\x00\x00\x00\x00' >"$1"; return; fi
  printf "\\x00\\x00\\x00\\x00\\x$(printf %02x $((${#2} + 2)))\\x0a\\x$(printf %02x "${#2}")%s" "$2" >"$1"
}
"$BIN/keyward-bench" seed --addr "127.0.0.1:$PORT" --auth "$ADMIN" --count 1 --out "$WORK/keys.txt" >/dev/null
frame "$WORK/health.bin"
frame "$WORK/verify.bin" "$(head -1 "$WORK/keys.txt")"
check_frame "$WORK/edge.bin" "$(head -1 "$WORK/keys.txt")"
check_admits "127.0.0.1:$PORT" "$WORK/edge.bin"
frame "$WORK/hot.bin" "$("$GRPCURL" -plaintext -H "authorization: Bearer $ADMIN" \
  -d '{"api_key": {"name": "hot", "owner": "bench", "rate_limits": [{"name": "hot", "limit": "10", "period": "1s", "burst": "10", "auto_apply": true}]}}' \
  "127.0.0.1:$PORT" keyward.v1.ApiKeyService/CreateApiKey | python3 -c 'import json, sys; print(json.load(sys.stdin)["secret"])')"

load() { # load <path> <body> [header…]: CALLS calls; fails unless every one answered 200
  h2load -c 4 -m 16 -t 1 -n "$CALLS" -H 'content-type: application/grpc' -H 'te: trailers' "${@:3}" -d "$2" \
    "http://127.0.0.1:$PORT$1" | grep -q "status codes: $CALLS 2xx" || { echo "h2load saw failures" >&2; exit 1; }
}
VERIFY=/keyward.v1.ApiKeyService/VerifyApiKey
# A first pass fills the caches and h2's tables before anything is counted.
load /grpc.health.v1.Health/Check "$WORK/health.bin"
load "$VERIFY" "$WORK/verify.bin" -H "authorization: Bearer $ADMIN"
load "$VERIFY" "$WORK/hot.bin" -H "authorization: Bearer $ADMIN"
load /envoy.service.auth.v3.Authorization/Check "$WORK/edge.bin"
callgrind_control -i on "$SERVER" >/dev/null
echo "machine: $(machine); $(valgrind --version); $CALLS calls per target"
for target in health verify hot edge; do
  case "$target" in
    health) path=/grpc.health.v1.Health/Check; headers=() ;;
    edge) path=/envoy.service.auth.v3.Authorization/Check; headers=() ;;
    *) path="$VERIFY"; headers=(-H "authorization: Bearer $ADMIN") ;;
  esac
  callgrind_control -z "$SERVER" >/dev/null
  load "$path" "$WORK/$target.bin" "${headers[@]}"
  callgrind_control -d "$target" "$SERVER" >/dev/null
  dump="$(grep -l "^desc: Trigger: dump $target" "$OUT"/callgrind.out.* | head -1)"
  total="$(awk '/^totals:/ { print $2 }' "$dump")"
  echo "$target: $((total / CALLS)) instructions per call ($dump)"
done
