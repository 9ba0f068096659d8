#!/usr/bin/env bash
# The rate-limit benchmark behind README's "Rate limits" figures, with h2load (4
# connections × 16 streams, 64 in flight) against keyward on the same machine:
#   (a) SQLite: a cached key with one auto-applied limit it never reaches, against a key
#       without limits, alternating rounds;
#   (b) SQLite: one hot key limited to 1,000/s (burst 100): answers per second (mostly
#       RATE_LIMITED) against the unlimited key, and the admitted rate, read from
#       keyward_verifications_total{outcome="VALID"};
#   (c) PostgreSQL, two replicas on one database: (b) with half of the load on each.
#   A (b) or (c) round in which any call was answered UNAVAILABLE is marked NOT COUNTED.
#   bash crates/bench/rate.sh [seconds per run, default 5] [rounds, default 3]
# Needs h2load (`bash tests/tools.sh bench`) and grpcurl (`bash tests/tools.sh`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
SECONDS_PER_RUN="${1:-5}"
ROUNDS="${2:-3}"
command -v h2load >/dev/null || { echo "h2load is missing: bash tests/tools.sh bench" >&2; exit 1; }
GRPCURL="$PWD/target/tools/bin/grpcurl"
[ -x "$GRPCURL" ] || { echo "grpcurl is missing: bash tests/tools.sh" >&2; exit 1; }
source crates/bench/common.sh
PORTS=(50561 50562)
HTTP_PORTS=(58561 58562)
SERVERS=()
stop_all() { for pid in "${SERVERS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done; SERVERS=(); }
trap 'stop_all; psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS keyward_rate WITH (FORCE)" 2>/dev/null; rm -rf "$WORK"' EXIT

serve() { # serve <replica index> <database url>
  KEYWARD_DATABASE_URL="$2" KEYWARD_DATA_DIR="$WORK/data" KEYWARD_GRPC_ADDR="127.0.0.1:${PORTS[$1]}" \
    KEYWARD_HTTP_ADDR="127.0.0.1:${HTTP_PORTS[$1]}" KEYWARD_HASH_SECRET=bench KEYWARD_MASTER_KEY="$MASTER_KEY" \
    KEYWARD_BOOTSTRAP_ADMIN_KEY="$ADMIN" KEYWARD_LOG=warn "$BIN/keyward" serve &
  SERVERS+=($!)
  wait_ready "${PORTS[$1]}"
}

create() { # create <name> <rate limits JSON>: prints the new key's secret
  "$GRPCURL" -plaintext -H "authorization: Bearer $ADMIN" \
    -d "{\"api_key\": {\"name\": \"$1\", \"owner\": \"bench-rate\", \"rate_limits\": $2}}" \
    "127.0.0.1:${PORTS[0]}" keyward.v1.ApiKeyService/CreateApiKey |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["secret"])'
}

frame() { # frame <file> <key>: a gRPC frame holding VerifyApiKeyRequest{key}
  printf "\\x00\\x00\\x00\\x00\\x$(printf %02x $((${#2} + 2)))\\x0a\\x$(printf %02x "${#2}")%s" "$2" >"$1"
}

counted() { # counted <series regex>: the sum of the matching series over every running replica
  local total=0 n
  for index in "${!SERVERS[@]}"; do
    n="$(curl -s "http://127.0.0.1:${HTTP_PORTS[$index]}/metrics" |
      awk -v series="$1" '$0 ~ "^" series { sum += $2 } END { printf "%d", sum }')"
    total=$((total + ${n:-0}))
  done
  echo "$total"
}
valid() { counted 'keyward_verifications_total[{]outcome="VALID"[}]'; } # VALID verifications so far
unavailable() { counted 'keyward_grpc_requests_total[{].*code="Unavailable"'; } # calls answered UNAVAILABLE so far

load() { # load <body file>: answers per second over every running replica, the load split evenly
  local connections=$((4 / ${#SERVERS[@]})) outs=() index
  for index in "${!SERVERS[@]}"; do
    outs+=("$WORK/h2load.$index")
    h2load -c "$connections" -m 16 -t 1 -D "$SECONDS_PER_RUN" --warm-up-time 1 -H 'content-type: application/grpc' \
      -H 'te: trailers' -H "authorization: Bearer $ADMIN" -d "$1" \
      "http://127.0.0.1:${PORTS[$index]}/keyward.v1.ApiKeyService/VerifyApiKey" >"${outs[-1]}" 2>&1 &
  done
  wait
  for out in "${outs[@]}"; do
    grep -q 'status codes: [0-9]* 2xx, 0 3xx, 0 4xx, 0 5xx' "$out" || { cat "$out" >&2; echo "h2load saw failures" >&2; exit 1; }
  done
  awk '/^finished in/ { gsub(",", "", $4); sum += $4 } END { print sum }' "${outs[@]}"
}

hot() { # hot <label>: (b)/(c) rounds: the limited hot key against the unlimited key
  local round plain limited before after outage
  for round in $(seq 1 "$ROUNDS"); do
    outage="$(unavailable)"
    plain="$(load "$WORK/plain.bin")"
    before="$(valid)"
    limited="$(load "$WORK/hot.bin")"
    after="$(valid)"
    outage=$(($(unavailable) - outage))
    # h2load's warm-up second is in the window between the two scrapes. An UNAVAILABLE
    # answer travels in an HTTP 200, which h2load counts as answered: a round with any is
    # marked, its ratio not a measure of the limiter.
    awk -v l="$1" -v r="$round" -v p="$plain" -v h="$limited" -v a="$((after - before))" -v s="$SECONDS_PER_RUN" -v u="$outage" 'BEGIN {
      t = s + 1; printf "%s round %d  unlimited %7.0f/s  hot key %7.0f/s  ratio %.3f  admitted %d in ~%d s = %.0f/s (bound %.0f/s)%s\n",
        l, r, p, h, h / p, a, t, a / t, (100 + 1000 * t) / t, u ? sprintf("  NOT COUNTED: %d answers UNAVAILABLE", u) : "" }'
  done
}

echo "machine: $(machine); $(h2load --version | head -1)"
echo "client and server share the machine; 64 calls in flight; ${SECONDS_PER_RUN} s per run after 1 s warm-up"

serve 0 "sqlite://$WORK/data/keyward.db"
"$BIN/keyward-bench" seed --addr "127.0.0.1:${PORTS[0]}" --auth "$ADMIN" --count 1 --owner bench-rate --out "$WORK/keys.txt" >/dev/null
frame "$WORK/plain.bin" "$(head -1 "$WORK/keys.txt")"
frame "$WORK/never.bin" "$(create never '[{"name": "never", "limit": "1000000000", "period": "1s", "auto_apply": true}]')"
frame "$WORK/hot.bin" "$(create hot '[{"name": "hot", "limit": "1000", "period": "1s", "burst": "100", "auto_apply": true}]')"
for round in $(seq 1 "$ROUNDS"); do
  plain="$(load "$WORK/plain.bin")"
  limited="$(load "$WORK/never.bin")"
  awk -v r="$round" -v p="$plain" -v l="$limited" 'BEGIN {
    printf "(a) sqlite round %d  no limits %7.0f/s  one limit never reached %7.0f/s  ratio %.3f\n", r, p, l, l / p }'
done
hot "(b) sqlite"
stop_all

psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS keyward_rate WITH (FORCE)" -c "CREATE DATABASE keyward_rate"
serve 0 postgres://postgres@127.0.0.1:5432/keyward_rate
serve 1 postgres://postgres@127.0.0.1:5432/keyward_rate
"$BIN/keyward-bench" seed --addr "127.0.0.1:${PORTS[0]}" --auth "$ADMIN" --count 1 --owner bench-rate --out "$WORK/keys.txt" >/dev/null
frame "$WORK/plain.bin" "$(head -1 "$WORK/keys.txt")"
frame "$WORK/hot.bin" "$(create hot '[{"name": "hot", "limit": "1000", "period": "1s", "burst": "100", "auto_apply": true}]')"
hot "(c) postgres, 2 replicas"
