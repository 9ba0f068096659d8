#!/usr/bin/env bash
# The hot-path benchmark behind README's Performance section: VerifyApiKey against
# grpc.health.v1.Health/Check (tonic's floor) on the same server in the same run, on
# SQLite and on PostgreSQL, with one cached key, 10,000 cached keys, and 10,000 keys
# through a 100-entry cache (mostly the database path). Targets alternate over 3 rounds.
# Then the REST gateway: the PSP list route against gRPC ListApiKeys and
# GET /api/v1/api-key-status against GetCallerApiKey, 64 in flight, in the same run.
#   bash crates/bench/bench.sh [seconds per target and round, default 5] [all|verify|rest, default all]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
SECONDS_PER_TARGET="${1:-5}"
PARTS="${2:-all}"
source crates/bench/common.sh
PORT=50551
SERVER=""
trap '[ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS keyward_bench WITH (FORCE)" 2>/dev/null; rm -rf "$WORK"' EXIT

serve() { # serve <database url> <cache capacity>
  KEYWARD_DATABASE_URL="$1" KEYWARD_CACHE_CAPACITY="$2" KEYWARD_DATA_DIR="$WORK/data" \
    KEYWARD_GRPC_ADDR="127.0.0.1:$PORT" KEYWARD_HTTP_ADDR=127.0.0.1:0 KEYWARD_HASH_SECRET=bench KEYWARD_MASTER_KEY="$MASTER_KEY" KEYWARD_BOOTSTRAP_ADMIN_KEY="$ADMIN" \
    KEYWARD_ENVIRONMENTS=production:kw_live:20000 KEYWARD_LOG=warn "$BIN/keyward" serve &
  SERVER=$!
  wait_ready "$PORT"
}
stop() { kill "$SERVER"; wait "$SERVER" || true; SERVER=""; }
compare() { # compare <label> <target args...>
  echo "== $STORE: $1"
  "$BIN/keyward-bench" run --addr "127.0.0.1:$PORT" --auth "$ADMIN" --concurrency 64 --connections 4 \
    --duration "${SECONDS_PER_TARGET}s" --rounds 3 --warmup 1s "${@:2}" --target health --json "$WORK/$STORE-${1// /-}.json"
}

rest() { # REST routes vs the gRPC calls behind them, 64 in flight, same run, on SQLite
  STORE=rest
  rm -rf "$WORK/data"
  HTTP_PORT=58580
  KEYWARD_DATA_DIR="$WORK/data" KEYWARD_GRPC_ADDR="127.0.0.1:$PORT" KEYWARD_HTTP_ADDR="127.0.0.1:$HTTP_PORT" \
    KEYWARD_HASH_SECRET=bench KEYWARD_MASTER_KEY="$MASTER_KEY" KEYWARD_BOOTSTRAP_ADMIN_KEY="$ADMIN" KEYWARD_LOG=warn \
    "$BIN/keyward" serve &
  SERVER=$!
  wait_ready "$PORT"
  for pair in "rest-psp-list list-keys" "rest-key-status caller-key"; do
    set -- $pair
    echo "== REST $1 vs gRPC $2"
    "$BIN/keyward-bench" run --addr "127.0.0.1:$PORT" --http-addr "127.0.0.1:$HTTP_PORT" --auth "$ADMIN" \
      --concurrency 64 --connections 4 --duration "${SECONDS_PER_TARGET}s" --rounds 3 --warmup 1s \
      --target "$1" --target "$2" --json "$WORK/rest-$1.json"
  done
  stop
}

echo "machine: $(machine)"
for STORE in sqlite postgres; do
  [ "$PARTS" = rest ] && break
  rm -rf "$WORK/data"
  if [ "$STORE" = sqlite ]; then URL="sqlite://$WORK/data/keyward.db"; else
    psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS keyward_bench WITH (FORCE)" -c "CREATE DATABASE keyward_bench"
    URL="postgres://postgres@127.0.0.1:5432/keyward_bench"
  fi
  serve "$URL" 100000
  "$BIN/keyward-bench" seed --addr "127.0.0.1:$PORT" --auth "$ADMIN" --count 10000 --out "$WORK/keys.txt"
  compare "one cached key" --target verify --key "$(head -1 "$WORK/keys.txt")"
  compare "10000 keys, all cached" --target verify-keys --keys-file "$WORK/keys.txt"
  stop
  serve "$URL" 100
  compare "10000 keys, 100-entry cache" --target verify-keys --keys-file "$WORK/keys.txt"
  stop
done
[ "$PARTS" = verify ] || rest # the REST gateway against the native gRPC calls it makes
