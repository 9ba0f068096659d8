#!/usr/bin/env bash
# Non-Rust contract checks: buf lint, then against a real `keyward serve`: health, reflection,
# the error details grpcurl decodes. README's examples are tests/readme.sh's; the generated clients
# in Go, TypeScript and Python are tested by tests/clients.sh.
# Run from anywhere after `cargo build --bin keyward`: bash tests/contract.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash tests/tools.sh
export PATH="$PWD/target/tools/bin:$PATH"
step() { echo "contract: == $*"; }
die() { echo "contract: FAIL: $*" >&2; exit 1; }

step "buf lint"
buf lint

BIN="${CARGO_TARGET_DIR:-target}/debug/keyward"
[ -x "$BIN" ] || die "$BIN not found: run 'cargo build --bin keyward' first"

TMP="$(mktemp -d)"
LOG="$TMP/server.log"
free_port() { python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
ADDR="127.0.0.1:$(free_port)"
HTTP_ADDR="127.0.0.1:$(free_port)"
ADMIN_KEY="kwadmin_$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
SERVER_PID=""

cleanup() {
  local rc=$?
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  if [ "$rc" -ne 0 ] && [ -f "$LOG" ]; then echo "contract: ---- server log ----" >&2; cat "$LOG" >&2; fi
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT

step "start $BIN serve on $ADDR"
mkdir "$TMP/data"
KEYWARD_DATA_DIR="$TMP/data" KEYWARD_GRPC_ADDR="$ADDR" KEYWARD_HTTP_ADDR="$HTTP_ADDR" KEYWARD_BOOTSTRAP_ADMIN_KEY="$ADMIN_KEY" \
  "$BIN" serve >"$LOG" 2>&1 &
SERVER_PID=$!

step "wait for grpc.health.v1.Health/Check to answer SERVING"
deadline=$((SECONDS + 30))
until grpcurl -plaintext -max-time 2 "$ADDR" grpc.health.v1.Health/Check 2>/dev/null | grep '"SERVING"' >/dev/null; do
  kill -0 "$SERVER_PID" 2>/dev/null || die "server exited before serving"
  [ "$SECONDS" -lt "$deadline" ] || die "server not SERVING on $ADDR within 30s"
  sleep 0.5
done

step "reflection lists keyward.v1.ApiKeyService"
services="$(grpcurl -plaintext "$ADDR" list)"
echo "$services"
grep -qx 'keyward.v1.ApiKeyService' <<<"$services" || die "keyward.v1.ApiKeyService not listed by reflection"
grep -qx 'grpc.reflection.v1.ServerReflection' <<<"$services" || die "reflection v1 not listed by reflection"

step "grpcurl decodes the error details (ErrorInfo, BadRequest)"
invalid="$(grpcurl -plaintext -H "authorization: Bearer $ADMIN_KEY" -d '{"api_key":{"name":""}}' \
  "$ADDR" keyward.v1.ApiKeyService/CreateApiKey 2>&1 || true)"
echo "$invalid"
grep -q 'Code: InvalidArgument' <<<"$invalid" || die "a blank name did not answer INVALID_ARGUMENT"
grep -q '"@type":"type.googleapis.com/google.rpc.ErrorInfo","domain":"keyward.v1"' <<<"$invalid" ||
  die "grpcurl did not decode the ErrorInfo"
grep -q '"fieldViolations":\[{"field":"api_key.name"' <<<"$invalid" || die "grpcurl did not decode the BadRequest"
! grep -q 'is not recognized' <<<"$invalid" || die "an error detail's type is unknown to reflection"

echo "contract: all checks passed"
