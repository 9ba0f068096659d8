#!/usr/bin/env bash
# Fuzzes the native REST surface (/v1) of a real `keyward serve` from its own /openapi.json
# with schemathesis: every check (`--checks all`: no 5xx, answers that fit the document,
# requests the document calls valid accepted and invalid ones refused, 405s with `Allow`),
# through the examples, coverage and fuzzing phases, then the stateful phase (twice: API keys,
# then the rest), which follows the document's links from each create to the created
# resource's other operations.
# Credentials are real: an admin key as the bearer (tests/schemathesis.toml); the hooks
# (tests/schemathesis_hooks.py) keep the run from rotating, revoking or changing that key.
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

# The fuzzer registers webhook endpoints at made-up public hosts: the dispatcher's first
# poll is a day away, so nothing is ever posted to them.
KEYWARD_DATA_DIR="$TMP/data" KEYWARD_GRPC_ADDR=127.0.0.1:0 KEYWARD_HTTP_ADDR=127.0.0.1:0 \
  KEYWARD_BOOTSTRAP_ADMIN_KEY="$ADMIN_KEY" KEYWARD_LOG=warn,keyward_server=info \
  KEYWARD_WEBHOOK_POLL_INTERVAL=24h \
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

CALLER="$(curl -fsS -H "authorization: Bearer $ADMIN_KEY" "$BASE/v1/callerApiKey")"
export KEYWARD_RUN_KEY_ID="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["apiKey"]["id"])' <<<"$CALLER")"
export KEYWARD_RUN_KEY_NUMBER="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["apiKey"]["number"])' <<<"$CALLER")"
export KEYWARD_RUN_KEY="$ADMIN_KEY"
export PYTHONPATH="$PWD/tests${PYTHONPATH:+:$PYTHONPATH}" SCHEMATHESIS_HOOKS=schemathesis_hooks

# Bounded: a fixed number of examples per operation and a wall-clock cap per run.
run() {
  timeout 300 schemathesis --config-file tests/schemathesis.toml run "$BASE/openapi.json" \
    --url "$BASE" \
    --checks all \
    --no-color \
    --seed 1 \
    "$@"
}
run --phases examples,coverage,fuzzing --max-examples 25
# The stateful phase twice: schemathesis starts its walks only from the operations it finds
# "reliable" when there are any, and it counts CreateApiKey out (its `requestId` and
# `apiKey.organizationId` look like references to resources nothing creates). Alone with
# the operations on keys it starts there, and walks the links from CreateApiKey.
# DeleteApiKey revokes (a soft delete, AIP-164): the key stays readable as REVOKED with its
# balances, and UndeleteApiKey brings it back, so "deleted resource still available" is off.
run --phases stateful --max-examples 80 --include-tag ApiKeyService --include-tag CreditService \
  --exclude-checks use_after_free \
  --report har --report-har-path "$TMP/stateful-keys.har"
run --phases stateful --max-examples 80 --exclude-tag ApiKeyService --exclude-tag CreditService \
  --report har --report-har-path "$TMP/stateful-rest.har"
# What the stateful phase did to each collection's resources, from its own requests
# answered 2xx. Every collection it can create must have been walked through create, get,
# update and delete, API keys included.
python3 - "$TMP/stateful-keys.har" "$TMP/stateful-rest.har" <<'PY'
import collections, json, re, sys
counts = collections.defaultdict(collections.Counter)
verbs = {"POST": "created", "GET": "read", "PATCH": "updated", "DELETE": "deleted"}
entries = [entry for har in sys.argv[1:] for entry in json.load(open(har))["log"]["entries"]]
for entry in entries:
    method, status = entry["request"]["method"], entry["response"]["status"]
    path = re.sub(r"^https?://[^/]+", "", entry["request"]["url"]).split("?")[0]
    match = re.fullmatch(r"/v1/(\w+)(/[^/:]+)?", path)
    if not 200 <= status < 300 or not match or method not in verbs:
        continue
    one = match.group(2) is not None
    if (method == "POST") != one:
        counts[match.group(1)][verbs[method]] += 1
for collection in sorted(counts):
    print(f"schemathesis: stateful phase, {collection}: " + ", ".join(f"{verb} {counts[collection][verb]}" for verb in verbs.values()))
for collection in ("apiKeys", "rpcProviderKeys", "webhookEndpoints"):
    if not all(counts[collection][verb] for verb in verbs.values()):
        sys.exit(f"schemathesis: the stateful phase did not walk {collection} through create, get, update and delete")
PY
