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
KEYWARD_DB=keyward_holds
PGBENCH_DB=keyward_pgholds
source crates/bench/pgbench_pair.sh

fresh_databases
"${PSQL[@]}" -d "$PGBENCH_DB" \
  -c "CREATE TABLE balances (id integer PRIMARY KEY, balance bigint NOT NULL, held bigint NOT NULL DEFAULT 0)" \
  -c "INSERT INTO balances SELECT id, $CREDITS, 0 FROM generate_series(1, $KEYS) AS id" \
  -c "CREATE TABLE holds (id uuid PRIMARY KEY, key_id integer NOT NULL, state varchar NOT NULL, created_at timestamptz NOT NULL, expires_at timestamptz NOT NULL, settled_at timestamptz)" \
  -c "CREATE INDEX holds_live ON holds (expires_at) WHERE state = 'live'" \
  -c "CREATE TABLE hold_amounts (hold_id uuid NOT NULL REFERENCES holds (id), unit varchar NOT NULL, amount bigint NOT NULL, captured bigint, PRIMARY KEY (hold_id, unit))"
serve_seeded

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

echo "machine: $(machine), $(pgbench --version)"
compare "hold (VerifyApiKey with hold: 1), $KEYS keys" "$WORK/hold.sql" hold "$WORK/keys.txt"
compare "hold then capture, $KEYS keys" "$WORK/pair.sql" hold-capture "$WORK/keys.txt"
