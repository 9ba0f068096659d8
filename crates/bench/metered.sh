#!/usr/bin/env bash
# The metered-verification benchmark behind README's Performance section: VerifyApiKey
# with a cost of 1 on usage-limited keys (PostgreSQL), against pgbench running the
# equivalent single-row conditional UPDATE (`balance = balance - 1 WHERE balance >= 1`)
# with 64 clients, on the same PostgreSQL in the same run. Three cases: 1,000 keys
# (rows); one key (row); and 1,000 keys against pgbench doing what a charge does, the
# conditional debit with its ledger entry (keyward's own `credit_transactions` table,
# indexes included) in one statement and one commit. The two tools alternate over 3
# rounds; rates are averaged.
#   bash crates/bench/metered.sh [seconds per run, default 5]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
SECONDS_PER_RUN="${1:-5}"
ROUNDS=3
KEYS=1000
CREDITS=1000000000000
source crates/bench/common.sh
PORT=50552
SERVER=""
PSQL=(psql -h 127.0.0.1 -U postgres -q)
cleanup() {
  [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null
  "${PSQL[@]}" -c "DROP DATABASE IF EXISTS keyward_metered WITH (FORCE)" -c "DROP DATABASE IF EXISTS keyward_pgbench WITH (FORCE)" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

"${PSQL[@]}" -c "DROP DATABASE IF EXISTS keyward_metered WITH (FORCE)" -c "CREATE DATABASE keyward_metered" \
  -c "DROP DATABASE IF EXISTS keyward_pgbench WITH (FORCE)" -c "CREATE DATABASE keyward_pgbench"
"${PSQL[@]}" -d keyward_pgbench -c "CREATE TABLE balances (id integer PRIMARY KEY, balance bigint NOT NULL)" \
  -c "INSERT INTO balances SELECT id, $CREDITS FROM generate_series(1, $KEYS) AS id"
cat > "$WORK/many.sql" <<SQL
\set id random(1, $KEYS)
UPDATE balances SET balance = balance - 1 WHERE id = :id AND balance >= 1;
SQL
cat > "$WORK/one.sql" <<SQL
UPDATE balances SET balance = balance - 1 WHERE id = 1 AND balance >= 1;
SQL

KEYWARD_DATABASE_URL=postgres://postgres@127.0.0.1:5432/keyward_metered KEYWARD_DATA_DIR="$WORK/data" \
  KEYWARD_GRPC_ADDR="127.0.0.1:$PORT" KEYWARD_HTTP_ADDR=127.0.0.1:0 KEYWARD_HASH_SECRET=bench \
  KEYWARD_MASTER_KEY="$MASTER_KEY" KEYWARD_BOOTSTRAP_ADMIN_KEY="$ADMIN" \
  KEYWARD_ENVIRONMENTS=production:kw_live:20000 KEYWARD_LOG=warn "$BIN/keyward" serve &
SERVER=$!
wait_ready "$PORT"
"$BIN/keyward-bench" seed --addr "127.0.0.1:$PORT" --auth "$ADMIN" --count "$KEYS" --credits "$CREDITS" --out "$WORK/keys.txt"
head -1 "$WORK/keys.txt" > "$WORK/key.txt"
# keyward's ledger table as its migrations made it, indexes included.
pg_dump -h 127.0.0.1 -U postgres --schema-only --no-owner -t credit_transactions keyward_metered |
  "${PSQL[@]}" -v ON_ERROR_STOP=1 -d keyward_pgbench >/dev/null
# The entry's key id is one of $KEYS, as keyward's are, so the ledger's (key_id, id) index
# grows the way keyward's does rather than at random places.
cat > "$WORK/ledger.sql" <<SQL
\\set id random(1, $KEYS)
WITH debited AS (UPDATE balances SET balance = balance - 1 WHERE id = :id AND balance >= 1 RETURNING balance)
  INSERT INTO credit_transactions (key_id, unit, delta, balance_after, reason, request_id, actor, created_at)
  SELECT md5(:id::text)::uuid, '', -1, balance, 'verify', NULL, 'pgbench', now() FROM debited;
SQL

pgbench_rate() { # pgbench_rate <script>
  pgbench -h 127.0.0.1 -U postgres -n -M prepared -c 64 -j 2 -T "$SECONDS_PER_RUN" -f "$1" keyward_pgbench 2>/dev/null \
    | awk '/^tps = / {print $3}'
}
keyward_rate() { # keyward_rate <keys file>
  "$BIN/keyward-bench" run --addr "127.0.0.1:$PORT" --auth "$ADMIN" --concurrency 64 --connections 4 \
    --duration "${SECONDS_PER_RUN}s" --warmup 1s --target verify-keys --keys-file "$1" --cost 1 \
    --json "$WORK/run.json" >&2
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))[0]; assert r["verification_codes"].keys() == {"VERIFICATION_CODE_VALID"}, r; print(r["rate"])' "$WORK/run.json"
}

echo "machine: $(machine), $(pgbench --version)"
for CASE in many one ledger; do
  case "$CASE" in
    many) KEYS_FILE="$WORK/keys.txt"; LABEL="$KEYS keys" ;;
    one) KEYS_FILE="$WORK/key.txt"; LABEL="one key" ;;
    ledger) KEYS_FILE="$WORK/keys.txt"; LABEL="$KEYS keys, pgbench writing the ledger entry too" ;;
  esac
  PG=(); KW=()
  for round in $(seq 1 $ROUNDS); do
    PG+=("$(pgbench_rate "$WORK/$CASE.sql")")
    KW+=("$(keyward_rate "$KEYS_FILE")")
    echo "round $round, $LABEL: pgbench ${PG[-1]} tps, keyward ${KW[-1]} charges/s" >&2
  done
  python3 - "$LABEL" "${PG[*]}" "${KW[*]}" <<'PY'
import sys
label, pg, kw = sys.argv[1], [float(x) for x in sys.argv[2].split()], [float(x) for x in sys.argv[3].split()]
pg_rate, kw_rate = sum(pg) / len(pg), sum(kw) / len(kw)
print(f"== {label}, 64 in flight: pgbench {pg_rate:.0f} tps, keyward metered VerifyApiKey {kw_rate:.0f}/s, ratio {kw_rate / pg_rate:.2f}")
PY
done
