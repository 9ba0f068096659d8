#!/usr/bin/env bash
# keyward at size (docs/scale.md), from a release build on this machine. Not run by CI.
#   owner   CreateApiKey, a ListApiKeys page and a ListAuditEvents page (in an owner's
#           reach) for an owner holding OWNER_KEYS keys (default 100,000, each with an
#           audit event) against a new owner, p50 at one call in flight; both stores
#   many    VerifyApiKey rotating through MANY_KEYS cached keys (default 100,000) against
#           one cached key, with `keyward-bench --raw`, server on one core and client on
#           the other; the tool checked against h2load on the one-key case and on health,
#           and the client's CPU use printed (below 100% of its core: it has headroom)
#   memory  RSS with MEMORY_KEYS cached keys (default 1,000,000): bytes per cached key
#   all     the three (floor.sh and miss.sh measure the cached verify and the miss path)
#   bash crates/bench/scale.sh [owner|many|memory|all] [stores, default "sqlite postgres"]
# Keys are seeded straight into the database (seed_direct.py), not through the API.
# SKIP_BUILD=1 measures the binaries already under ${CARGO_TARGET_DIR:-target}/release.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PARTS="${1:-all}"
STORES="${2:-sqlite postgres}"
OWNER_KEYS="${OWNER_KEYS:-100000}"
MANY_KEYS="${MANY_KEYS:-100000}"
MEMORY_KEYS="${MEMORY_KEYS:-1000000}"
source crates/bench/common.sh
GRPC_PORT=50751
HTTP_PORT=58780
DATABASE=keyward_scale
SERVER=""
SERVER_PIN=(taskset -c 0)
CLIENT_PIN=(taskset -c 1)
PSQL=(psql -h 127.0.0.1 -U postgres -qAt)
trap '[ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; "${PSQL[@]}" -c "DROP DATABASE IF EXISTS $DATABASE WITH (FORCE)" 2>/dev/null; rm -rf "$WORK"' EXIT

fresh() { # fresh <store>: an empty database; sets URL and SEED_DB
  rm -rf "$WORK/data"
  if [ "$1" = sqlite ]; then
    URL="sqlite://$WORK/data/keyward.db"; SEED_DB="$WORK/data/keyward.db"
  else
    "${PSQL[@]}" -c "DROP DATABASE IF EXISTS $DATABASE WITH (FORCE)" -c "CREATE DATABASE $DATABASE"
    URL="postgres://postgres@127.0.0.1:5432/$DATABASE"; SEED_DB="$DATABASE"
  fi
}
serve() { # serve [env assignments...]: keyward on core 0
  env KEYWARD_DATABASE_URL="$URL" KEYWARD_DATA_DIR="$WORK/data" KEYWARD_ENVIRONMENTS=production:kw_live:10000000 "$@" \
    KEYWARD_GRPC_ADDR="127.0.0.1:$GRPC_PORT" KEYWARD_HTTP_ADDR="127.0.0.1:$HTTP_PORT" KEYWARD_HASH_SECRET=bench \
    KEYWARD_MASTER_KEY="$MASTER_KEY" KEYWARD_BOOTSTRAP_ADMIN_KEY="$ADMIN" KEYWARD_LOG=warn \
    "${SERVER_PIN[@]}" "$BIN/keyward" serve &
  SERVER=$!
  wait_ready "$GRPC_PORT"
}
stop() { kill "$SERVER"; wait "$SERVER" || true; SERVER=""; }
bench() { "${CLIENT_PIN[@]}" "$BIN/keyward-bench" "$@"; }
seed_api() { # seed_api <owner> <out> [scopes]: one key through CreateApiKey
  bench seed --addr "127.0.0.1:$GRPC_PORT" --auth "$ADMIN" --count 1 --owner "$1" --out "$2" ${3:+--scopes "$3"} >/dev/null
}
field() { # field <json file> <index> <field>
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[int(sys.argv[2])][sys.argv[3]])' "$@"
}
all_ok() { # all_ok <json file>: every call answered OK (and every verification VALID)
  python3 -c 'import json,sys
for r in json.load(open(sys.argv[1])):
    assert set(r["codes"]) == {"OK"}, r
    assert set(r["verification_codes"]) <= {"VERIFICATION_CODE_VALID"}, r' "$1"
}
rss() { awk -v f="$1" '$1 == f":" {printf "%.1f", $2/1024}' "/proc/$SERVER/status"; }
cached_keys() { curl -s "127.0.0.1:$HTTP_PORT/metrics" | awk '/^keyward_cache_keys / {print $2}'; }

echo "machine: $(machine)"
echo "server pinned to core 0 (${SERVER_PIN[*]}), load generators to core 1 (${CLIENT_PIN[*]})"

if [ "$PARTS" = owner ] || [ "$PARTS" = all ]; then
  for STORE in $STORES; do
    echo "== $STORE: owner 'big' with $OWNER_KEYS keys (and as many audit events) against a new owner; p50 at 1 in flight"
    fresh "$STORE"
    serve
    for owner in big small; do
      seed_api "$owner" "$WORK/$owner-template.txt"
      seed_api "$owner" "$WORK/$owner-reader.txt" keys:read
    done
    python3 crates/bench/seed_direct.py "$SEED_DB" big "$OWNER_KEYS" bench --audit
    python3 crates/bench/seed_direct.py "$SEED_DB" small 20 bench --audit
    # op <label> <owner big|small> <keyward-bench args…>: p50 and rate of one measurement
    op() {
      bench run --addr "127.0.0.1:$GRPC_PORT" --concurrency 1 --connections 1 --json "$WORK/op.json" "${@:3}" >/dev/null
      all_ok "$WORK/op.json"
      echo "$1 $2 $(field "$WORK/op.json" 0 p50_ms) $(field "$WORK/op.json" 0 rate)" >>"$WORK/owner.txt"
    }
    : >"$WORK/owner.txt"
    for round in 1 2 3; do
      for owner in big small; do
        # A new owner for each round of creates: "small" stands for any owner with few keys.
        create_owner="$owner"; [ "$owner" = small ] && create_owner="new$round"
        op create "$owner" --auth "$ADMIN" --target create --owner "$create_owner" --requests 300 --warmup 0s
        op list "$owner" --auth "$ADMIN" --target list-keys --list-owner "$owner" --duration 3s --warmup 1s
        op audit "$owner" --auth "$(cat "$WORK/$owner-reader.txt")" --target list-audit --duration 3s --warmup 1s
      done
    done
    python3 - "$WORK/owner.txt" "$STORE" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
for op in ("create", "list", "audit"):
    p50 = {o: [float(r[2]) for r in rows if r[0] == op and r[1] == o] for o in ("big", "small")}
    rate = {o: [float(r[3]) for r in rows if r[0] == op and r[1] == o] for o in ("big", "small")}
    big, small = statistics.median(p50["big"]), statistics.median(p50["small"])
    print(f"{sys.argv[2]:8} {op:6} p50 big {big:.3f} ms  new {small:.3f} ms  ratio {big / small:.2f}   "
          f"rate big {statistics.mean(rate['big']):.0f}/s  new {statistics.mean(rate['small']):.0f}/s   "
          f"(per-round p50s big {p50['big']} new {p50['small']})")
PY
    stop
  done
fi

if [ "$PARTS" = many ] || [ "$PARTS" = all ]; then
  command -v h2load >/dev/null || { echo "h2load is missing: bash tests/tools.sh bench" >&2; exit 1; }
  for STORE in $STORES; do
    echo "== $STORE: $MANY_KEYS cached keys against one, keyward-bench --raw; h2load beside it on one key and on health"
    fresh "$STORE"
    # TTL raised: the rounds leave the many keys untouched for longer than the default
    # 30 s, after which an unused key expires and its next call is a miss, not a cache read.
    serve KEYWARD_CACHE_CAPACITY=$((MANY_KEYS + 1000)) KEYWARD_CACHE_TTL=10m
    seed_api many "$WORK/one.txt"
    python3 crates/bench/seed_direct.py "$SEED_DB" many "$MANY_KEYS" bench --secrets "$WORK/many.txt"
    ONE="$(cat "$WORK/one.txt")"
    # Fill the cache: every key read once.
    bench run --addr "127.0.0.1:$GRPC_PORT" --auth "$ADMIN" --raw --target verify-keys --keys-file "$WORK/many.txt" \
      --requests "$MANY_KEYS" --warmup 0s --json "$WORK/fill.json" >/dev/null
    all_ok "$WORK/fill.json"
    echo "cached keys: $(cached_keys)"
    printf '\x00\x00\x00\x00\x00' >"$WORK/health.bin"
    printf "\\x00\\x00\\x00\\x00\\x$(printf %02x $((${#ONE} + 2)))\\x0a\\x$(printf %02x "${#ONE}")%s" "$ONE" >"$WORK/verify.bin"
    h2() { # h2 <path> <body> [header…]: calls per second
      local out
      out="$("${CLIENT_PIN[@]}" h2load -c 4 -m 16 -t 1 -D 4 --warm-up-time 1 -H 'content-type: application/grpc' \
        -H 'te: trailers' "${@:3}" -d "$2" "http://127.0.0.1:$GRPC_PORT$1" 2>&1)"
      grep -q ' 0 failed' <<<"$out" || { echo "$out" >&2; exit 1; }
      awk '/^finished in/ { gsub(",", "", $4); print $4 }' <<<"$out"
    }
    raw() { # raw <target args…>: rate, and the client's CPU over the run as a share of its core
      local start end ticks
      # taskset execs keyward-bench, so $! is the client whose CPU time is read.
      "${CLIENT_PIN[@]}" "$BIN/keyward-bench" run --addr "127.0.0.1:$GRPC_PORT" --auth "$ADMIN" --raw --concurrency 64 \
        --connections 4 --duration 4s --warmup 1s --json "$WORK/raw.json" "$@" >/dev/null &
      local pid=$!
      sleep 1.2
      start="$(cpu_ticks "$pid")"
      sleep 3
      end="$(cpu_ticks "$pid")"
      wait "$pid"
      all_ok "$WORK/raw.json"
      ticks="$(getconf CLK_TCK)"
      echo "$(field "$WORK/raw.json" 0 rate) $(awk -v a="$start" -v b="$end" -v t="$ticks" 'BEGIN {printf "%.2f", (b - a) / t / 3}')"
    }
    for round in 1 2 3; do
      h2_health="$(h2 /grpc.health.v1.Health/Check "$WORK/health.bin")"
      h2_one="$(h2 /keyward.v1.ApiKeyService/VerifyApiKey "$WORK/verify.bin" -H "authorization: Bearer $ADMIN")"
      read -r raw_health cpu_health <<<"$(raw --target health)"
      read -r raw_one cpu_one <<<"$(raw --target verify --key "$ONE")"
      read -r raw_many cpu_many <<<"$(raw --target verify-keys --keys-file "$WORK/many.txt")"
      awk -v s="$STORE" -v r="$round" -v hh="$h2_health" -v ho="$h2_one" -v rh="$raw_health" -v ro="$raw_one" \
        -v rm="$raw_many" -v ch="$cpu_health" -v co="$cpu_one" -v cm="$cpu_many" 'BEGIN {
        printf "%-8s round %d  many/one %.3f (raw: %.0f/s vs %.0f/s)   one key: raw %.0f/s h2load %.0f/s (raw/h2load %.2f)   health: raw %.0f/s h2load %.0f/s (%.2f)   client CPU (cores): health %.2f one %.2f many %.2f\n",
          s, r, rm / ro, rm, ro, ro, ho, ro / ho, rh, hh, rh / hh, ch, co, cm }'
    done
    echo "cached keys: $(cached_keys); lookups: $(curl -s "127.0.0.1:$HTTP_PORT/metrics" | grep "^keyward_cache_lookups_total" | tr "\n" " ")"
    stop
  done
fi

if [ "$PARTS" = memory ] || [ "$PARTS" = all ]; then
  echo "== SQLite: RSS with $MEMORY_KEYS cached keys (TTL raised so that none expires while measured)"
  fresh sqlite
  serve KEYWARD_CACHE_CAPACITY=$((MEMORY_KEYS + 1000)) KEYWARD_CACHE_TTL=30m
  seed_api memory "$WORK/one.txt"
  python3 crates/bench/seed_direct.py "$SEED_DB" memory "$MEMORY_KEYS" bench --secrets "$WORK/keys.txt"
  stop
  # A fresh process, so the seeding's allocations do not count.
  serve KEYWARD_CACHE_CAPACITY=$((MEMORY_KEYS + 1000)) KEYWARD_CACHE_TTL=30m
  head -1000 "$WORK/keys.txt" >"$WORK/warm.txt"
  bench run --addr "127.0.0.1:$GRPC_PORT" --auth "$ADMIN" --raw --target verify-keys --keys-file "$WORK/warm.txt" \
    --requests 1000 --warmup 0s --concurrency 16 >/dev/null
  before="$(rss VmRSS)"; keys_before="$(cached_keys)"
  bench run --addr "127.0.0.1:$GRPC_PORT" --auth "$ADMIN" --raw --target verify-keys --keys-file "$WORK/keys.txt" \
    --requests "$MEMORY_KEYS" --warmup 0s --concurrency 64 --json "$WORK/fill.json" >/dev/null
  all_ok "$WORK/fill.json"
  sleep 2
  after="$(rss VmRSS)"; peak="$(rss VmHWM)"; keys_after="$(cached_keys)"
  echo "RSS ${before} MiB with ${keys_before} cached keys, ${after} MiB with ${keys_after} (peak ${peak} MiB); filled at $(field "$WORK/fill.json" 0 rate)/s"
  awk -v b="$before" -v a="$after" -v kb="$keys_before" -v ka="$keys_after" \
    'BEGIN {printf "per cached key: %.0f bytes\n", (a - b) * 1048576 / (ka - kb)}'
  stop
fi
