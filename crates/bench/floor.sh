#!/usr/bin/env bash
# The hot path against the transport's floor, measured by a tool we did not write:
# h2load (nghttp2) and the project's keyward-bench, on the same server in the same run,
# each calling a cached VerifyApiKey and grpc.health.v1.Health/Check, with 4 connections
# × 16 streams (64 in flight). A round runs each target twice for half its seconds
# (h2load: health, verify, verify, health; keyward-bench: alternating), so a slow spell
# of the machine weighs on both. Prints every round's ratio, for each tool, with the
# machine's description, and each run's ratio of its mean rates. On SQLite and on PostgreSQL.
#   bash crates/bench/floor.sh [seconds per target and round, default 5] [rounds, default 3]
# h2load sends one fixed body, so it measures one key; 10,000 keys are keyward-bench's
# (bench.sh). Needs h2load: `bash tests/tools.sh bench`.
# SERVER_PIN and CLIENT_PIN prefix the server's and the load generators' commands, e.g.
# SERVER_PIN="taskset -c 0" CLIENT_PIN="taskset -c 1": each on a core of its own.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
SECONDS_PER_RUN="${1:-5}"
HALF_RUN=$(( (SECONDS_PER_RUN + 1) / 2 ))
ROUNDS="${2:-3}"
command -v h2load >/dev/null || { echo "h2load is missing: bash tests/tools.sh bench" >&2; exit 1; }
source crates/bench/common.sh
PORT=50553
SERVER=""
trap '[ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS keyward_floor WITH (FORCE)" 2>/dev/null; rm -rf "$WORK"' EXIT

# A gRPC frame (uncompressed flag, 4-byte length) holding a VerifyApiKeyRequest with
# only `key` (field 1), or an empty message without a key.
grpc_frame() { # grpc_frame <file> [key]
  local key="${2:-}"
  if [ -z "$key" ]; then printf '\x00\x00\x00\x00\x00' >"$1"; return; fi
  [ "${#key}" -lt 126 ] || { echo "key too long for this one-byte-length encoder" >&2; exit 1; }
  printf "\\x00\\x00\\x00\\x00\\x$(printf %02x $((${#key} + 2)))\\x0a\\x$(printf %02x "${#key}")%s" "$key" >"$1"
}

h2rate() { # h2rate <path> <body file> [header…]: calls per second; fails unless every call answered 200
  local out
  out="$(${CLIENT_PIN:-} h2load -c 4 -m 16 -t 1 -D "$HALF_RUN" --warm-up-time 1 -H 'content-type: application/grpc' \
    -H 'te: trailers' "${@:3}" -d "$2" "http://127.0.0.1:$PORT$1" 2>&1)"
  if ! grep -q 'status codes: [0-9]* 2xx, 0 3xx, 0 4xx, 0 5xx' <<<"$out" || ! grep -q ' 0 failed' <<<"$out"; then
    echo "$out" >&2; echo "h2load saw failures" >&2; exit 1
  fi
  awk '/^finished in/ { gsub(",", "", $4); print $4 }' <<<"$out"
}

report() { # report <label> <h2load verify> <h2load health> <keyward-bench verify> <keyward-bench health>
  awk -v s="$STORE" -v l="$1" -v hv="$2" -v hh="$3" -v tv="$4" -v th="$5" 'BEGIN {
    printf "%-8s %-8s h2load: verify %7.0f/s health %7.0f/s ratio %.3f   keyward-bench: verify %7.0f/s health %7.0f/s ratio %.3f\n",
      s, l, hv, hh, hv / hh, tv, th, tv / th }'
}

serve() { # serve <database url>
  KEYWARD_DATABASE_URL="$1" KEYWARD_DATA_DIR="$WORK/data" KEYWARD_GRPC_ADDR="127.0.0.1:$PORT" \
    KEYWARD_HTTP_ADDR=127.0.0.1:0 KEYWARD_HASH_SECRET=bench KEYWARD_MASTER_KEY="$MASTER_KEY" \
    KEYWARD_BOOTSTRAP_ADMIN_KEY="$ADMIN" KEYWARD_LOG=warn ${SERVER_PIN:-} "$BIN/keyward" serve &
  SERVER=$!
  wait_ready "$PORT"
}

echo "machine: $(machine); $(h2load --version | head -1)"
echo "server: ${SERVER_PIN:-any core}; clients: ${CLIENT_PIN:-any core}; 64 calls in flight over 4 connections; per round each target twice for ${HALF_RUN} s after a 1 s warm-up"
for STORE in sqlite postgres; do
  rm -rf "$WORK/data"
  if [ "$STORE" = sqlite ]; then URL="sqlite://$WORK/data/keyward.db"; else
    psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS keyward_floor WITH (FORCE)" -c "CREATE DATABASE keyward_floor"
    URL="postgres://postgres@127.0.0.1:5432/keyward_floor"
  fi
  serve "$URL"
  "$BIN/keyward-bench" seed --addr "127.0.0.1:$PORT" --auth "$ADMIN" --count 1 --out "$WORK/keys.txt" >/dev/null
  KEY="$(head -1 "$WORK/keys.txt")"
  grpc_frame "$WORK/health.bin"
  grpc_frame "$WORK/verify.bin" "$KEY"
  # The key must verify: a refusal is as cheap as a health check and would flatter the ratio.
  "$BIN/keyward-bench" run --addr "127.0.0.1:$PORT" --auth "$ADMIN" --target verify --key "$KEY" --requests 1 \
    --warmup 0s --json "$WORK/check.json" >/dev/null
  grep -q '"VERIFICATION_CODE_VALID"' "$WORK/check.json" || { echo "the benchmark key does not verify" >&2; exit 1; }
  sums="0 0 0 0"
  for round in $(seq 1 "$ROUNDS"); do
    # Health, verify, verify, health (half a run each): the machine's drift within a round
    # weighs on both targets alike instead of on whichever ran while it lasted.
    health="$(h2rate /grpc.health.v1.Health/Check "$WORK/health.bin")"
    verify="$(h2rate /keyward.v1.ApiKeyService/VerifyApiKey "$WORK/verify.bin" -H "authorization: Bearer $ADMIN")"
    verify="$(echo "$verify $(h2rate /keyward.v1.ApiKeyService/VerifyApiKey "$WORK/verify.bin" -H "authorization: Bearer $ADMIN")" | awk '{ print ($1 + $2) / 2 }')"
    health="$(echo "$health $(h2rate /grpc.health.v1.Health/Check "$WORK/health.bin")" | awk '{ print ($1 + $2) / 2 }')"
    ${CLIENT_PIN:-} "$BIN/keyward-bench" run --addr "127.0.0.1:$PORT" --auth "$ADMIN" --concurrency 64 --connections 4 \
      --duration "${HALF_RUN}s" --rounds 2 --warmup 1s --target verify --key "$KEY" --target health \
      --json "$WORK/tool.json" >/dev/null
    tool="$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r[0]["rate"], r[1]["rate"])' "$WORK/tool.json")"
    read -r tool_verify tool_health <<<"$tool"
    report "round $round" "$verify" "$health" "$tool_verify" "$tool_health"
    sums="$(awk -v a="$sums" -v b="$verify $health $tool_verify $tool_health" 'BEGIN { split(a, x); split(b, y)
      printf "%.1f %.1f %.1f %.1f", x[1] + y[1], x[2] + y[2], x[3] + y[3], x[4] + y[4] }')"
  done
  # The run's mean rates (its rounds' sums over their count): the figure "in every one of
  # three runs" is about.
  report "run" $(awk -v n="$ROUNDS" -v a="$sums" 'BEGIN { split(a, x); printf "%.1f %.1f %.1f %.1f", x[1] / n, x[2] / n, x[3] / n, x[4] / n }')
  kill "$SERVER"; wait "$SERVER" || true; SERVER=""
done
