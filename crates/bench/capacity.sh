#!/usr/bin/env bash
# The figures behind README's Failure modes and the Helm chart's memory settings, from a
# release build on this machine:
#   idle   RSS with 1,000 idle connections of each kind per port, and after they close
#   cache  RSS with CACHE_KEYS cached keys (default 100,000, the default capacity):
#          memory per cached key
#   quota  CreateApiKey p50 for an owner holding 46,600 live keys, then the same owner
#          with all but 100 of them revoked, against a fresh owner, on SQLite and PostgreSQL
#   bash crates/bench/capacity.sh [idle|cache|quota|all, default all]
# SKIP_BUILD=1 measures the binaries already under ${CARGO_TARGET_DIR:-target}/release;
# QUOTA_STORES=sqlite (or postgres) runs the quota part on one store.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PARTS="${1:-all}"
source crates/bench/common.sh
GRPC_PORT=50651
HTTP_PORT=58680
SERVER=""
trap '[ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS keyward_capacity WITH (FORCE)" 2>/dev/null; rm -rf "$WORK"' EXIT

serve() { # serve <database url> [extra env assignments...]
  env KEYWARD_DATABASE_URL="$1" KEYWARD_DATA_DIR="$WORK/data" "${@:2}" \
    KEYWARD_GRPC_ADDR="127.0.0.1:$GRPC_PORT" KEYWARD_HTTP_ADDR="127.0.0.1:$HTTP_PORT" KEYWARD_HASH_SECRET=bench \
    KEYWARD_MASTER_KEY="$MASTER_KEY" KEYWARD_BOOTSTRAP_ADMIN_KEY="$ADMIN" KEYWARD_LOG=warn "$BIN/keyward" serve &
  SERVER=$!
  wait_ready "$GRPC_PORT"
}
stop() { kill "$SERVER"; wait "$SERVER" || true; SERVER=""; }
rss() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$SERVER/status"; }
cached_keys() { curl -s "127.0.0.1:$HTTP_PORT/metrics" | awk '/^keyward_cache_keys / {print $2}'; }

echo "machine: $(machine)"

if [ "$PARTS" = idle ] || [ "$PARTS" = all ]; then
  echo "== idle connections (SQLite, default settings)"
  rm -rf "$WORK/data"
  serve "sqlite://$WORK/data/keyward.db"
  python3 crates/bench/idle.py "$SERVER" "$GRPC_PORT" "$HTTP_PORT" 1000
  stop
fi

if [ "$PARTS" = cache ] || [ "$PARTS" = all ]; then
  CACHE_KEYS="${CACHE_KEYS:-100000}"
  echo "== $CACHE_KEYS cached keys (SQLite; TTL raised so that none expires while measured)"
  rm -rf "$WORK/data"
  serve "sqlite://$WORK/data/keyward.db" KEYWARD_ENVIRONMENTS=production:kw_live:200000
  "$BIN/keyward-bench" seed --addr "127.0.0.1:$GRPC_PORT" --auth "$ADMIN" --count "$CACHE_KEYS" --out "$WORK/keys.txt"
  stop
  # A fresh process, so the seeding's allocations do not count.
  serve "sqlite://$WORK/data/keyward.db" KEYWARD_ENVIRONMENTS=production:kw_live:200000 KEYWARD_CACHE_TTL=10m
  # Warm the process up with the first 1,000 keys, then fill the cache with the rest.
  head -1000 "$WORK/keys.txt" > "$WORK/warm.txt"
  "$BIN/keyward-bench" run --addr "127.0.0.1:$GRPC_PORT" --auth "$ADMIN" --target verify-keys \
    --keys-file "$WORK/warm.txt" --requests 1000 --warmup 0s --concurrency 16 >/dev/null
  before="$(rss)"; keys_before="$(cached_keys)"
  "$BIN/keyward-bench" run --addr "127.0.0.1:$GRPC_PORT" --auth "$ADMIN" --target verify-keys \
    --keys-file "$WORK/keys.txt" --requests "$CACHE_KEYS" --warmup 0s --concurrency 16 >/dev/null
  sleep 2
  after="$(rss)"; keys_after="$(cached_keys)"
  echo "RSS ${before} MiB with ${keys_before} cached keys, ${after} MiB with ${keys_after}"
  awk -v b="$before" -v a="$after" -v kb="$keys_before" -v ka="$keys_after" \
    'BEGIN {printf "per cached key: %.2f KiB\n", (a - b) * 1024 / (ka - kb)}'
  stop
fi

if [ "$PARTS" = quota ] || [ "$PARTS" = all ]; then
  for STORE in ${QUOTA_STORES:-sqlite postgres}; do
    echo "== CreateApiKey, 46,600 keys of one owner against a fresh owner ($STORE)"
    rm -rf "$WORK/data"
    if [ "$STORE" = sqlite ]; then URL="sqlite://$WORK/data/keyward.db"; else
      psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS keyward_capacity WITH (FORCE)" -c "CREATE DATABASE keyward_capacity"
      URL="postgres://postgres@127.0.0.1:5432/keyward_capacity"
    fi
    serve "$URL" KEYWARD_ENVIRONMENTS=production:kw_live:100000
    "$BIN/keyward-bench" seed --addr "127.0.0.1:$GRPC_PORT" --auth "$ADMIN" --count 46600 --owner big --out "$WORK/big.txt"
    measure() { # measure <label>: big against a fresh owner, twice
      for round in 1 2; do
        for owner in big "fresh$1$round"; do
          echo "-- $1: owner $owner (round $round)"
          "$BIN/keyward-bench" run --addr "127.0.0.1:$GRPC_PORT" --auth "$ADMIN" --target create --owner "$owner" \
            --concurrency 1 --connections 1 --requests 300 --warmup 0s
        done
      done
    }
    measure live
    # What the quota is about: an owner with many keys it no longer holds. Revoked in the
    # database directly (46,600 calls would take minutes); 100 stay live.
    revoke="UPDATE api_keys SET status = 'revoked' WHERE owner = 'big' AND id NOT IN
      (SELECT id FROM api_keys WHERE owner = 'big' ORDER BY id LIMIT 100)"
    if [ "$STORE" = sqlite ]; then sqlite3 "$WORK/data/keyward.db" "$revoke"; else
      psql -h 127.0.0.1 -U postgres -d keyward_capacity -qc "$revoke"; fi
    measure revoked
    stop
  done
fi
