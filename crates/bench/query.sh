#!/usr/bin/env bash
# A cached VerifyApiKey with a 10-scope query, against a plain cached VerifyApiKey and
# grpc.health.v1.Health/Check (tonic's floor), on the same server in the same run, with
# h2load (4 connections × 16 streams, 1 s warm-up). Each round runs health, plain, query,
# query, plain, health, half a run each, so the machine's drift weighs on all three. SQLite;
# the store plays no part once the key is cached.
#   bash crates/bench/query.sh [seconds per target and round, default 4] [rounds, default 3]
# Needs h2load (`bash tests/tools.sh bench`) and curl.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
SECONDS_PER_RUN="${1:-4}"
HALF_RUN=$(( (SECONDS_PER_RUN + 1) / 2 ))
ROUNDS="${2:-3}"
command -v h2load >/dev/null || { echo "h2load is missing: bash tests/tools.sh bench" >&2; exit 1; }
source crates/bench/common.sh
PORT=50554
HTTP_PORT=50555
SERVER=""
trap '[ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; rm -rf "$WORK"' EXIT
# Ten scopes: ANDs, ORs whose first branch fails, parentheses, and wildcard grants.
QUERY='orders.read AND (orders.write OR orders.admin) AND billing.view AND (docs.read OR docs.edit OR docs.all) AND team.lead AND reports.daily AND audit.read'
SCOPES='["orders.read","orders.admin","billing.*","docs.all","team.lead","reports.*","audit.read","x1","x2","x3"]'

frame() { # frame <file> <key> [query]: a gRPC frame of a VerifyApiKeyRequest (key = 1, scope_query = 7)
  python3 - "$@" <<'PY'
import struct, sys
def field(tag, text):
    data = text.encode()
    out, n = bytearray([tag << 3 | 2]), len(data)
    while True:
        out.append((n & 0x7f) | (0x80 if n > 0x7f else 0))
        n >>= 7
        if not n: break
    return bytes(out) + data
message = field(1, sys.argv[2]) + (field(7, sys.argv[3]) if len(sys.argv) > 3 else b"")
open(sys.argv[1], "wb").write(b"\0" + struct.pack(">I", len(message)) + message)
PY
}

h2rate() { # h2rate <path> <body file> [header…]: calls per second; fails unless every call answered 200
  local out
  out="$(h2load -c 4 -m 16 -t 1 -D "$HALF_RUN" --warm-up-time 1 -H 'content-type: application/grpc' \
    -H 'te: trailers' "${@:3}" -d "$2" "http://127.0.0.1:$PORT$1" 2>&1)"
  if ! grep -q 'status codes: [0-9]* 2xx, 0 3xx, 0 4xx, 0 5xx' <<<"$out" || ! grep -q ' 0 failed' <<<"$out"; then
    echo "$out" >&2; echo "h2load saw failures" >&2; exit 1
  fi
  awk '/^finished in/ { gsub(",", "", $4); print $4 }' <<<"$out"
}

mkdir -p "$WORK/data"
KEYWARD_DATABASE_URL="sqlite://$WORK/data/keyward.db" KEYWARD_DATA_DIR="$WORK/data" \
  KEYWARD_GRPC_ADDR="127.0.0.1:$PORT" KEYWARD_HTTP_ADDR="127.0.0.1:$HTTP_PORT" KEYWARD_HASH_SECRET=bench \
  KEYWARD_MASTER_KEY="$MASTER_KEY" KEYWARD_BOOTSTRAP_ADMIN_KEY="$ADMIN" KEYWARD_LOG=warn "$BIN/keyward" serve &
SERVER=$!
wait_ready "$PORT"
KEY="$(curl -sf -H "authorization: Bearer $ADMIN" -H 'content-type: application/json' \
  -d "{\"apiKey\":{\"name\":\"bench\",\"scopes\":$SCOPES}}" "http://127.0.0.1:$HTTP_PORT/v1/apiKeys" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["secret"])')"
# Both verifications must be valid: a refusal costs less and would flatter the figure.
CHECK="$(curl -sf -H "authorization: Bearer $ADMIN" -H 'content-type: application/json' \
  -d "$(python3 -c 'import json,sys; print(json.dumps({"key": sys.argv[1], "scopeQuery": sys.argv[2]}))' "$KEY" "$QUERY")" \
  "http://127.0.0.1:$HTTP_PORT/v1/apiKeys:verify")"
grep -q '"VERIFICATION_CODE_VALID"' <<<"$CHECK" || { echo "the query does not verify: $CHECK" >&2; exit 1; }
printf '\x00\x00\x00\x00\x00' >"$WORK/health.bin"
frame "$WORK/plain.bin" "$KEY"
frame "$WORK/query.bin" "$KEY" "$QUERY"
AUTH=(-H "authorization: Bearer $ADMIN")
VERIFY=/keyward.v1.ApiKeyService/VerifyApiKey
echo "machine: $(machine); $(h2load --version | head -1)"
echo "query: $QUERY"
for round in $(seq 1 "$ROUNDS"); do
  h1="$(h2rate /grpc.health.v1.Health/Check "$WORK/health.bin")"
  p1="$(h2rate "$VERIFY" "$WORK/plain.bin" "${AUTH[@]}")"
  q1="$(h2rate "$VERIFY" "$WORK/query.bin" "${AUTH[@]}")"
  q2="$(h2rate "$VERIFY" "$WORK/query.bin" "${AUTH[@]}")"
  p2="$(h2rate "$VERIFY" "$WORK/plain.bin" "${AUTH[@]}")"
  h2="$(h2rate /grpc.health.v1.Health/Check "$WORK/health.bin")"
  awk -v r="$round" -v h="$h1 $h2" -v p="$p1 $p2" -v q="$q1 $q2" 'BEGIN { split(h, H); split(p, P); split(q, Q)
    h = (H[1] + H[2]) / 2; p = (P[1] + P[2]) / 2; q = (Q[1] + Q[2]) / 2
    printf "round %d: health %7.0f/s  plain verify %7.0f/s  query verify %7.0f/s  query/plain %.3f  plain/health %.3f  query/health %.3f\n",
      r, h, p, q, q / p, p / h, q / h }'
done
