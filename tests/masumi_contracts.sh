#!/usr/bin/env bash
# Runs schemathesis against Masumi's own OpenAPI documents (tests/contracts/, copied from
# ../shared/contracts): both contract eras, served at the same paths by a real
# `keyward serve`, with Masumi's server prefix http://…/api/v1 and the `token` header.
# Checks (named in tests/contracts/schemathesis.toml): response-schema conformance, status-code conformance, positive-data acceptance
# (and no 5xx). Deliberate deviations (README, "Masumi contract deviations") are listed in
# tests/contracts/schemathesis.toml by operation and check, never by switching a check off.
# Run after `cargo build --bin keyward` and `bash tests/tools.sh`: bash tests/masumi_contracts.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PATH="$PWD/target/tools/bin:$PATH"
: "${CARGO_TARGET_DIR:=target}"
BIN="$CARGO_TARGET_DIR/debug/keyward"
[ -x "$BIN" ] || BIN=target/debug/keyward
[ -x "$BIN" ] || { echo "masumi_contracts: keyward binary not found: run 'cargo build --bin keyward'" >&2; exit 1; }
command -v schemathesis >/dev/null || { echo "masumi_contracts: not installed: run 'bash tests/tools.sh'" >&2; exit 1; }

TMP="$(mktemp -d)"
ADMIN_KEY="kwtest_masumi_contract_admin_0001"
LOG="$TMP/server.log"
cleanup() {
  rc=$?
  [ -n "${SERVER_PID:-}" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
  if [ "$rc" -ne 0 ]; then echo "masumi_contracts: ---- server log (tail) ----" >&2; tail -n 40 "$LOG" >&2; fi
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT

# A fresh server and database per era: one era's fuzzing (a PATCH or DELETE that reaches the
# admin key's own row) must not leave the next era calling with a disabled key.
start_server() {
  LOG="$TMP/server-$1.log"
  KEYWARD_DATA_DIR="$TMP/data-$1" KEYWARD_GRPC_ADDR=127.0.0.1:0 KEYWARD_HTTP_ADDR=127.0.0.1:0 \
    KEYWARD_BOOTSTRAP_ADMIN_KEY="$ADMIN_KEY" KEYWARD_LOG=warn,keyward_server=info \
    "$BIN" serve >"$LOG" 2>&1 &
  SERVER_PID=$!
  deadline=$((SECONDS + 30))
  until HTTP_ADDR="$(grep -o 'http listening addr=[0-9.:]*' "$LOG" | head -1 | cut -d= -f2)" && [ -n "$HTTP_ADDR" ]; do
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "masumi_contracts: server exited" >&2; exit 1; }
    [ "$SECONDS" -lt "$deadline" ] || { echo "masumi_contracts: server not listening within 30s" >&2; exit 1; }
    sleep 0.2
  done
}
stop_server() {
  kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}

for era in 2025-12 2026-07; do
  start_server "$era"
  echo "masumi_contracts: Masumi $era contract against http://$HTTP_ADDR/api/v1"
  timeout 300 schemathesis --config-file tests/contracts/schemathesis.toml run \
    "tests/contracts/masumi-api-keys-$era.openapi.json" \
    --url "http://$HTTP_ADDR/api/v1" \
    --header "token: $ADMIN_KEY" \
    --max-examples 30 \
    --phases examples,fuzzing \
    --no-color \
    --seed 1
  stop_server
done
