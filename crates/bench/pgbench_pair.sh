# Shared by the benchmarks that set keyward against pgbench on the same PostgreSQL in the
# same run (metered.sh, holds.sh), sourced after common.sh from the repository root. The
# script sets SECONDS_PER_RUN, ROUNDS, KEYS, CREDITS, PORT, KEYWARD_DB (keyward's database)
# and PGBENCH_DB (pgbench's), then calls these.
PSQL=(psql -h 127.0.0.1 -U postgres -q)
SERVER=""

drop_databases() {
  [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null
  "${PSQL[@]}" -c "DROP DATABASE IF EXISTS $KEYWARD_DB WITH (FORCE)" -c "DROP DATABASE IF EXISTS $PGBENCH_DB WITH (FORCE)" 2>/dev/null
  rm -rf "$WORK"
}

fresh_databases() { # fresh_databases: both databases empty; on exit they are dropped and the server stopped
  trap drop_databases EXIT
  "${PSQL[@]}" -c "DROP DATABASE IF EXISTS $KEYWARD_DB WITH (FORCE)" -c "CREATE DATABASE $KEYWARD_DB" \
    -c "DROP DATABASE IF EXISTS $PGBENCH_DB WITH (FORCE)" -c "CREATE DATABASE $PGBENCH_DB"
}

serve_seeded() { # serve_seeded: keyward on KEYWARD_DB, with KEYS usage-limited keys of CREDITS each in
  # $WORK/keys.txt, and keyward's ledger table (as its migrations made it, indexes included) in PGBENCH_DB
  KEYWARD_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$KEYWARD_DB" KEYWARD_DATA_DIR="$WORK/data" \
    KEYWARD_GRPC_ADDR="127.0.0.1:$PORT" KEYWARD_HTTP_ADDR=127.0.0.1:0 KEYWARD_HASH_SECRET=bench \
    KEYWARD_MASTER_KEY="$MASTER_KEY" KEYWARD_BOOTSTRAP_ADMIN_KEY="$ADMIN" \
    KEYWARD_ENVIRONMENTS=production:kw_live:20000 KEYWARD_LOG=warn "$BIN/keyward" serve &
  SERVER=$!
  wait_ready "$PORT"
  "$BIN/keyward-bench" seed --addr "127.0.0.1:$PORT" --auth "$ADMIN" --count "$KEYS" --credits "$CREDITS" \
    --out "$WORK/keys.txt"
  pg_dump -h 127.0.0.1 -U postgres --schema-only --no-owner -t credit_transactions "$KEYWARD_DB" |
    "${PSQL[@]}" -v ON_ERROR_STOP=1 -d "$PGBENCH_DB" >/dev/null
}

pgbench_rate() { # pgbench_rate <script>: transactions per second, 64 clients
  pgbench -h 127.0.0.1 -U postgres -n -M prepared -c 64 -j 2 -T "$SECONDS_PER_RUN" -f "$1" "$PGBENCH_DB" 2>/dev/null \
    | awk '/^tps = / {print $3}'
}

keyward_rate() { # keyward_rate <target> <keys file>: calls per second, 64 in flight; fails unless every
  # call answered OK and VALID (a refusal costs less and would flatter the figure)
  "$BIN/keyward-bench" run --addr "127.0.0.1:$PORT" --auth "$ADMIN" --concurrency 64 --connections 4 \
    --duration "${SECONDS_PER_RUN}s" --warmup 1s --target "$1" --keys-file "$2" --cost 1 \
    --json "$WORK/run.json" >&2
  python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))[0]
assert r["verification_codes"].keys() == {"VERIFICATION_CODE_VALID"}, r
assert set(r["codes"]) == {"OK"}, r
print(r["rate"])' "$WORK/run.json"
}

compare() { # compare <label> <pgbench script> <target> <keys file>: ROUNDS alternating rounds, then the ratio
  local pg=() kw=() round
  for round in $(seq 1 "$ROUNDS"); do
    pg+=("$(pgbench_rate "$2")")
    kw+=("$(keyward_rate "$3" "$4")")
    echo "round $round, $1: pgbench ${pg[-1]}/s, keyward ${kw[-1]}/s" >&2
  done
  python3 - "$1" "${pg[*]}" "${kw[*]}" <<'PY'
import sys
label, pg, kw = sys.argv[1], [float(x) for x in sys.argv[2].split()], [float(x) for x in sys.argv[3].split()]
pg_rate, kw_rate = sum(pg) / len(pg), sum(kw) / len(kw)
print(f"== {label}, 64 in flight: pgbench {pg_rate:.0f}/s, keyward {kw_rate:.0f}/s, ratio {kw_rate / pg_rate:.2f}")
PY
}
