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
KEYWARD_DB=keyward_metered
PGBENCH_DB=keyward_pgbench
source crates/bench/pgbench_pair.sh

fresh_databases
"${PSQL[@]}" -d "$PGBENCH_DB" -c "CREATE TABLE balances (id integer PRIMARY KEY, balance bigint NOT NULL)" \
  -c "INSERT INTO balances SELECT id, $CREDITS FROM generate_series(1, $KEYS) AS id"
cat > "$WORK/many.sql" <<SQL
\set id random(1, $KEYS)
UPDATE balances SET balance = balance - 1 WHERE id = :id AND balance >= 1;
SQL
cat > "$WORK/one.sql" <<SQL
UPDATE balances SET balance = balance - 1 WHERE id = 1 AND balance >= 1;
SQL

serve_seeded
head -1 "$WORK/keys.txt" > "$WORK/key.txt"
# The entry's key id is one of $KEYS, as keyward's are, so the ledger's (key_id, id) index
# grows the way keyward's does rather than at random places.
cat > "$WORK/ledger.sql" <<SQL
\\set id random(1, $KEYS)
WITH debited AS (UPDATE balances SET balance = balance - 1 WHERE id = :id AND balance >= 1 RETURNING balance)
  INSERT INTO credit_transactions (key_id, unit, delta, balance_after, reason, request_id, actor, created_at)
  SELECT md5(:id::text)::uuid, '', -1, balance, 'verify', NULL, 'pgbench', now() FROM debited;
SQL

echo "machine: $(machine), $(pgbench --version)"
compare "$KEYS keys" "$WORK/many.sql" verify-keys "$WORK/keys.txt"
compare "one key" "$WORK/one.sql" verify-keys "$WORK/key.txt"
compare "$KEYS keys, pgbench writing the ledger entry too" "$WORK/ledger.sql" verify-keys "$WORK/keys.txt"
