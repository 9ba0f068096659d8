#!/usr/bin/env bash
# Fuzzes the REST gateway of a real `keyward serve` from its own /openapi.json with
# schemathesis: no 5xx, and every answer fits the document (status, content type, schema).
# Credentials are real: an admin key as `authorization` and as `token`.
# Run after `cargo build --bin keyward` and `bash tests/tools.sh`: bash tests/schemathesis.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PATH="$PWD/target/tools/bin:$PATH"
: "${CARGO_TARGET_DIR:=target}"
BIN="$CARGO_TARGET_DIR/debug/keyward"
[ -x "$BIN" ] || BIN=target/debug/keyward
[ -x "$BIN" ] || { echo "schemathesis: keyward binary not found: run 'cargo build --bin keyward'" >&2; exit 1; }
command -v schemathesis >/dev/null || { echo "schemathesis: not installed: run 'bash tests/tools.sh'" >&2; exit 1; }

TMP="$(mktemp -d)"
ADMIN_KEY="kwtest_schemathesis_admin_key_0001"
LOG="$TMP/server.log"
cleanup() {
  rc=$?
  [ -n "${SERVER_PID:-}" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
  if [ "$rc" -ne 0 ]; then echo "schemathesis: ---- server log (tail) ----" >&2; tail -n 40 "$LOG" >&2; fi
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT

KEYWARD_DATA_DIR="$TMP/data" KEYWARD_GRPC_ADDR=127.0.0.1:0 KEYWARD_HTTP_ADDR=127.0.0.1:0 \
  KEYWARD_BOOTSTRAP_ADMIN_KEY="$ADMIN_KEY" KEYWARD_LOG=warn,keyward_server=info \
  "$BIN" serve >"$LOG" 2>&1 &
SERVER_PID=$!
deadline=$((SECONDS + 30))
until HTTP_ADDR="$(grep -o 'http listening addr=[0-9.:]*' "$LOG" | head -1 | cut -d= -f2)" && [ -n "$HTTP_ADDR" ]; do
  kill -0 "$SERVER_PID" 2>/dev/null || { echo "schemathesis: server exited" >&2; exit 1; }
  [ "$SECONDS" -lt "$deadline" ] || { echo "schemathesis: server not listening within 30s" >&2; exit 1; }
  sleep 0.2
done
BASE="http://$HTTP_ADDR"
echo "schemathesis: fuzzing $BASE/openapi.json"

# Bounded: a fixed number of examples per operation and a wall-clock cap.
timeout 240 schemathesis run "$BASE/openapi.json" \
  --url "$BASE" \
  --header "authorization: Bearer $ADMIN_KEY" \
  --header "token: $ADMIN_KEY" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --max-examples 25 \
  --phases examples,fuzzing \
  --no-color \
  --seed 1
