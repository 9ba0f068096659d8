#!/usr/bin/env bash
# The cache-miss benchmark behind README's Performance section: VerifyApiKey cycling
# through 10,000 keys with a 100-entry cache (so every call is one indexed read), against
# the database's own rate for that same read, on the same machine in the same run, in
# alternating rounds, on SQLite and on PostgreSQL.
#   PostgreSQL: pgbench, 64 clients, -M prepared, running the SELECT keyward issues on a
#   miss: 10 scripts, each binding a different seeded key's hash (pgbench cannot draw
#   strings at random). Each client prepares every script once and plans it afresh for
#   its first 5 runs, as each of keyward's connections does; with 100 scripts that
#   start-up cost alone halved pgbench's rate in a 4 s run, with 1 it was ~20% above 10.
#   SQLite: python's sqlite3 (the C library, statements cached), one process per
#   connection of keyward's pool (KEYWARD_DATABASE_MAX_CONNECTIONS, default 10), each
#   running the same SELECT with a random seeded hash in a loop, on the same WAL file.
# keyward-bench keeps 64 calls in flight over 4 connections; everything shares the cores.
#   bash crates/bench/miss.sh [seconds per run, default 4] [rounds, default 3]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
SECONDS_PER_RUN="${1:-4}"
ROUNDS="${2:-3}"
KEYS=10000
POOL="${KEYWARD_DATABASE_MAX_CONNECTIONS:-10}"
source crates/bench/common.sh
PORT=50554
SERVER=""
PSQL=(psql -h 127.0.0.1 -U postgres -qAt)
trap '[ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; "${PSQL[@]}" -c "DROP DATABASE IF EXISTS keyward_miss WITH (FORCE)" 2>/dev/null; rm -rf "$WORK"' EXIT

# The one-key read a lone miss runs (Read::KeyBySecret in crates/store/src/lookup.rs),
# each backend's text; `lookup::tests::the_miss_benchmark_runs_the_texts_a_miss_runs`
# fails when they differ from what keyward runs.
read -r -d '' SQLITE_SELECT <<'SQL' || true
SELECT "api_keys"."number", "api_keys"."id", "api_keys"."name", "api_keys"."mask", "api_keys"."owner", "api_keys"."creator", "api_keys"."organization_id", "api_keys"."organization_name", "api_keys"."environment", "api_keys"."scopes", "api_keys"."networks", "api_keys"."status", "api_keys"."usage_limited", "api_keys"."metadata", "api_keys"."created_at", "api_keys"."updated_at", "api_keys"."expires_at", "api_keys"."deleted_at", "api_keys"."last_used_at", "api_keys"."rate_limits", "api_keys"."credit_source", (SELECT json_group_array(json_array(r."name", json(r."scopes"))) FROM "api_key_roles" AS kr JOIN "roles" AS r ON r."id" = kr."role_id" WHERE kr."key_id" = "api_keys"."id") AS "role_data", "api_key_secrets"."secret_hash" AS "secret_hash", "api_key_secrets"."expires_at" AS "secret_expires_at" FROM "api_keys" INNER JOIN "api_key_secrets" ON "api_keys"."id" = "api_key_secrets"."key_id" WHERE "api_keys"."id" = (SELECT "key_id" FROM "api_key_secrets" WHERE "secret_hash" = ?)
SQL
read -r -d '' POSTGRES_SELECT <<'SQL' || true
SELECT "api_keys"."number", "api_keys"."id", "api_keys"."name", "api_keys"."mask", "api_keys"."owner", "api_keys"."creator", "api_keys"."organization_id", "api_keys"."organization_name", "api_keys"."environment", "api_keys"."scopes", "api_keys"."networks", "api_keys"."status", "api_keys"."usage_limited", "api_keys"."metadata", "api_keys"."created_at", "api_keys"."updated_at", "api_keys"."expires_at", "api_keys"."deleted_at", "api_keys"."last_used_at", "api_keys"."rate_limits", "api_keys"."credit_source", (SELECT COALESCE(CAST(json_agg(json_build_array(r."name", CAST(r."scopes" AS json))) AS text), '[]') FROM "api_key_roles" AS kr JOIN "roles" AS r ON r."id" = kr."role_id" WHERE kr."key_id" = "api_keys"."id") AS "role_data", "api_key_secrets"."secret_hash" AS "secret_hash", "api_key_secrets"."expires_at" AS "secret_expires_at" FROM "api_keys" INNER JOIN "api_key_secrets" ON "api_keys"."id" = "api_key_secrets"."key_id" WHERE "api_keys"."id" = (SELECT "key_id" FROM "api_key_secrets" WHERE "secret_hash" = $1)
SQL

serve() { # serve <database url>
  KEYWARD_DATABASE_URL="$1" KEYWARD_CACHE_CAPACITY=100 KEYWARD_DATABASE_MAX_CONNECTIONS="$POOL" \
    KEYWARD_DATA_DIR="$WORK/data" KEYWARD_GRPC_ADDR="127.0.0.1:$PORT" KEYWARD_HTTP_ADDR=127.0.0.1:0 \
    KEYWARD_HASH_SECRET=bench KEYWARD_MASTER_KEY="$MASTER_KEY" KEYWARD_BOOTSTRAP_ADMIN_KEY="$ADMIN" \
    KEYWARD_ENVIRONMENTS=production:kw_live:20000 KEYWARD_LOG=warn "$BIN/keyward" serve &
  SERVER=$!
  wait_ready "$PORT"
}

keyward_rate() { # every call must verify: a refusal would not be the read being measured
  "$BIN/keyward-bench" run --addr "127.0.0.1:$PORT" --auth "$ADMIN" --concurrency 64 --connections 4 \
    --duration "${SECONDS_PER_RUN}s" --warmup 1s --target verify-keys --keys-file "$WORK/keys.txt" \
    --json "$WORK/run.json" >/dev/null
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))[0]; assert r["verification_codes"].keys() == {"VERIFICATION_CODE_VALID"}, r; print(r["rate"])' "$WORK/run.json"
}

pgbench_rate() {
  pgbench -h 127.0.0.1 -U postgres -n -M prepared -c 64 -j 2 -T "$SECONDS_PER_RUN" "${PGBENCH_ARGS[@]}" keyward_miss \
    2>/dev/null | awk '/^tps = / {print $3}'
}

sqlite_rate() {
  python3 - "$WORK/data/keyward.db" "$POOL" "$SECONDS_PER_RUN" "$SQLITE_SELECT" <<'PY'
import multiprocessing, random, sqlite3, sys, time
path, workers, seconds, sql = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]

def run(hashes, start, out):
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    pick = random.Random().choice
    while time.monotonic() < start:
        db.execute(sql, (pick(hashes),)).fetchall()
    reads, end = 0, start + seconds
    while time.monotonic() < end:
        assert db.execute(sql, (pick(hashes),)).fetchall()
        reads += 1
    out.put(reads)

ctx = multiprocessing.get_context("fork")
hashes = [row[0] for row in sqlite3.connect(path).execute("SELECT secret_hash FROM api_key_secrets")]
out, start = ctx.Queue(), time.monotonic() + 1.0
procs = [ctx.Process(target=run, args=(hashes, start, out)) for _ in range(workers)]
for proc in procs:
    proc.start()
total = sum(out.get() for _ in procs)
for proc in procs:
    proc.join()
print(total / seconds)
PY
}

echo "machine: $(machine); $(pgbench --version); SQLite $(python3 -c 'import sqlite3; print(sqlite3.sqlite_version)') via python3"
echo "keyward: 10,000 keys through a 100-entry cache, 64 calls in flight over 4 connections, pool of $POOL; ${SECONDS_PER_RUN} s per run"
for STORE in sqlite postgres; do
  rm -rf "$WORK/data"
  if [ "$STORE" = sqlite ]; then URL="sqlite://$WORK/data/keyward.db"; DB=sqlite3; else
    "${PSQL[@]}" -c "DROP DATABASE IF EXISTS keyward_miss WITH (FORCE)" -c "CREATE DATABASE keyward_miss"
    URL="postgres://postgres@127.0.0.1:5432/keyward_miss"; DB=pgbench
  fi
  serve "$URL"
  "$BIN/keyward-bench" seed --addr "127.0.0.1:$PORT" --auth "$ADMIN" --count "$KEYS" --out "$WORK/keys.txt" >/dev/null
  if [ "$STORE" = postgres ]; then
    PGBENCH_ARGS=()
    n=0
    while read -r hash; do
      n=$((n + 1))
      printf '%s;\n' "${POSTGRES_SELECT//\$1/:h$n}" >"$WORK/select$n.sql"
      PGBENCH_ARGS+=(-D "h$n=$hash" -f "$WORK/select$n.sql")
    done < <("${PSQL[@]}" -d keyward_miss -c "SELECT secret_hash FROM api_key_secrets ORDER BY random() LIMIT 10")
  fi
  DBS=(); KWS=()
  for round in $(seq 1 "$ROUNDS"); do
    if [ "$STORE" = sqlite ]; then DBS+=("$(sqlite_rate)"); else DBS+=("$(pgbench_rate)"); fi
    KWS+=("$(keyward_rate)")
    awk -v s="$STORE" -v r="$round" -v d="$DB" -v db="${DBS[-1]}" -v kw="${KWS[-1]}" 'BEGIN {
      printf "%-8s round %d  %s same SELECT %8.0f/s   keyward miss path %7.0f/s   ratio %.3f\n", s, r, d, db, kw, kw / db }'
  done
  python3 - "$STORE" "${DBS[*]}" "${KWS[*]}" <<'PY'
import sys
store, db, kw = sys.argv[1], [float(x) for x in sys.argv[2].split()], [float(x) for x in sys.argv[3].split()]
db_rate, kw_rate = sum(db) / len(db), sum(kw) / len(kw)
print(f"== {store}: database {db_rate:.0f} reads/s, keyward miss path {kw_rate:.0f}/s, ratio {kw_rate / db_rate:.2f}")
PY
  kill "$SERVER"; wait "$SERVER" || true; SERVER=""
done
