#!/usr/bin/env bash
# Credit holds against PostgreSQL's own speed (issue #43): VerifyApiKey with a `hold` of 1,
# and a hold followed by CaptureCreditHold of it, on 1,000 usage-limited keys, beside
# pgbench doing the same writes on the same PostgreSQL in the same run, 64 in flight each.
# pgbench's hold is one statement (the conditional reservation `held = held + 1 WHERE
# balance - held >= 1`, the hold row and its amount row, as CTEs); its capture is a second
# statement (the hold's compare-and-set out of `live`, its captured amount, the balance and
# keyward's own ledger table, indexes included). keyward does more in each (idempotency,
# audit row, alert lines), which the ratio shows. The two tools alternate over 3 rounds.
#   bash crates/bench/holds.sh [seconds per run, default 5]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
SECONDS_PER_RUN="${1:-5}"
ROUNDS=3
KEYS=1000
CREDITS=1000000000000
source crates/bench/common.sh
PORT=50553
SERVER=""
PSQL=(psql -h 127.0.0.1 -U postgres -q)
cleanup() {
  [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null
  "${PSQL[@]}" -c "DROP DATABASE IF EXISTS keyward_holds WITH (FORCE)" -c "DROP DATABASE IF EXISTS keyward_pgholds WITH (FORCE)" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

"${PSQL[@]}" -c "DROP DATABASE IF EXISTS keyward_holds WITH (FORCE)" -c "CREATE DATABASE keyward_holds" \
  -c "DROP DATABASE IF EXISTS keyward_pgholds WITH (FORCE)" -c "CREATE DATABASE keyward_pgholds"
"${PSQL[@]}" -d keyward_pgholds \
  -c "CREATE TABLE balances (id integer PRIMARY KEY, balance bigint NOT NULL, held bigint NOT NULL DEFAULT 0)" \
  -c "INSERT INTO balances SELECT id, $CREDITS, 0 FROM generate_series(1, $KEYS) AS id" \
  -c "CREATE TABLE holds (id uuid PRIMARY KEY, key_id integer NOT NULL, state varchar NOT NULL, created_at timestamptz NOT NULL, expires_at timestamptz NOT NULL, settled_at timestamptz)" \
  -c "CREATE INDEX holds_live ON holds (expires_at) WHERE state = 'live'" \
  -c "CREATE TABLE hold_amounts (hold_id uuid NOT NULL REFERENCES holds (id), unit varchar NOT NULL, amount bigint NOT NULL, captured bigint, PRIMARY KEY (hold_id, unit))"

KEYWARD_DATABASE_URL=postgres://postgres@127.0.0.1:5432/keyward_holds KEYWARD_DATA_DIR="$WORK/data" \
  KEYWARD_GRPC_ADDR="127.0.0.1:$PORT" KEYWARD_HTTP_ADDR=127.0.0.1:0 KEYWARD_HASH_SECRET=bench \
  KEYWARD_MASTER_KEY="$MASTER_KEY" KEYWARD_BOOTSTRAP_ADMIN_KEY="$ADMIN" \
  KEYWARD_ENVIRONMENTS=production:kw_live:20000 KEYWARD_LOG=warn "$BIN/keyward" serve &
SERVER=$!
wait_ready "$PORT"
"$BIN/keyward-bench" seed --addr "127.0.0.1:$PORT" --auth "$ADMIN" --count "$KEYS" --credits "$CREDITS" --out "$WORK/keys.txt"
pg_dump -h 127.0.0.1 -U postgres --schema-only --no-owner -t credit_transactions keyward_holds |
  "${PSQL[@]}" -v ON_ERROR_STOP=1 -d keyward_pgholds >/dev/null

HOLD="WITH reserved AS (UPDATE balances SET held = held + 1 WHERE id = :id AND balance - held >= 1 RETURNING id),
  made AS (INSERT INTO holds (id, key_id, state, created_at, expires_at)
    SELECT gen_random_uuid(), id, 'live', now(), now() + interval '15 minutes' FROM reserved RETURNING id),
  amount AS (INSERT INTO hold_amounts (hold_id, unit, amount) SELECT id, '', 1 FROM made)
  SELECT id AS hold FROM made"
cat > "$WORK/hold.sql" <<SQL
\\set id random(1, $KEYS)
$HOLD;
SQL
cat > "$WORK/pair.sql" <<SQL
\\set id random(1, $KEYS)
$HOLD \\gset
WITH settled AS (UPDATE holds SET state = 'captured', settled_at = now() WHERE id = :hold AND state = 'live' RETURNING id, key_id),
  captured AS (UPDATE hold_amounts SET captured = 1 FROM settled WHERE hold_amounts.hold_id = settled.id RETURNING settled.key_id),
  charged AS (UPDATE balances SET balance = balance - 1, held = held - 1 FROM captured WHERE balances.id = captured.key_id RETURNING balance)
  INSERT INTO credit_transactions (key_id, unit, delta, balance_after, reason, request_id, actor, created_at)
  SELECT md5(:id::text)::uuid, '', -1, balance, 'capture', NULL, 'pgbench', now() FROM charged;
SQL

pgbench_rate() { # pgbench_rate <script>
  pgbench -h 127.0.0.1 -U postgres -n -M prepared -c 64 -j 2 -T "$SECONDS_PER_RUN" -f "$1" keyward_pgholds 2>/dev/null \
    | awk '/^tps = / {print $3}'
}
keyward_rate() { # keyward_rate <target>
  "$BIN/keyward-bench" run --addr "127.0.0.1:$PORT" --auth "$ADMIN" --concurrency 64 --connections 4 \
    --duration "${SECONDS_PER_RUN}s" --warmup 1s --target "$1" --keys-file "$WORK/keys.txt" --cost 1 \
    --json "$WORK/run.json" >&2
  python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))[0]
assert r["verification_codes"].keys() == {"VERIFICATION_CODE_VALID"}, r
assert set(r["codes"]) == {"OK"}, r
print(r["rate"])' "$WORK/run.json"
}

echo "machine: $(machine), $(pgbench --version)"
for CASE in hold pair; do
  case "$CASE" in
    hold) TARGET=hold; LABEL="hold (VerifyApiKey with hold: 1)" ;;
    pair) TARGET=hold-capture; LABEL="hold then capture" ;;
  esac
  PG=(); KW=()
  for round in $(seq 1 $ROUNDS); do
    PG+=("$(pgbench_rate "$WORK/$CASE.sql")")
    KW+=("$(keyward_rate "$TARGET")")
    echo "round $round, $LABEL: pgbench ${PG[-1]}/s, keyward ${KW[-1]}/s" >&2
  done
  python3 - "$LABEL" "${PG[*]}" "${KW[*]}" <<'PY'
import sys
label, pg, kw = sys.argv[1], [float(x) for x in sys.argv[2].split()], [float(x) for x in sys.argv[3].split()]
pg_rate, kw_rate = sum(pg) / len(pg), sum(kw) / len(kw)
print(f"== {label}, 1,000 keys, 64 in flight: pgbench {pg_rate:.0f}/s, keyward {kw_rate:.0f}/s, ratio {kw_rate / pg_rate:.2f}")
PY
done
