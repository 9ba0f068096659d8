#!/usr/bin/env bash
# The packaged clients of clients/ (Go, TypeScript, Python) against a real `keyward serve`:
# each one's code is generated from proto/ with `buf generate` (local, pinned plugins) and built,
# its smoke test run (create, verify, revoke, verify -> REVOKED; a BadRequest naming a field;
# an ErrorInfo reason), then its README's example as written. The committed Go stubs must
# equal what generation writes.
# Offline after `bash tests/tools.sh`. Run after `cargo build --bin keyward`:
#   bash tests/clients.sh [go|typescript|python ...]   (default: all three)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
TOOLS="$ROOT/target/tools"
export PATH="$TOOLS/bin:$PATH"
step() { echo "clients: == $*"; }
die() { echo "clients: FAIL: $*" >&2; exit 1; }
# The first ```<lang> block of a client's README, with the test server's address.
readme_example() { awk -v fence="\`\`\`$2" '$0 == fence { on = 1; next } on && /^```/ { exit } on' "clients/$1/README.md" | sed "s/localhost:50051/$ADDR/"; }
# A README example must print that the key it created verified as valid (the line its comment shows).
check_example() { tee "$TMP/example.out"; grep -qx "$2" "$TMP/example.out" || die "$1: the README example did not print '$2'"; }

BIN="${CARGO_TARGET_DIR:-target}/debug/keyward"
[ -x "$BIN" ] || die "$BIN not found: run 'cargo build --bin keyward' first"
for tool in buf grpcurl go protoc-gen-go protoc-gen-go-grpc; do
  command -v "$tool" >/dev/null || die "$tool not found: run 'bash tests/tools.sh'"
done
[ -x clients/typescript/node_modules/.bin/protoc-gen-es ] || die "clients/typescript has no node_modules: run 'bash tests/tools.sh'"
[ -x "$TOOLS/pyclient/bin/python" ] || die "$TOOLS/pyclient missing: run 'bash tests/tools.sh'"
CLIENTS=("$@")
[ "${#CLIENTS[@]}" -gt 0 ] || CLIENTS=(go typescript python)

TMP="$(mktemp -d)"
ADMIN_KEY="kwadmin_$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
SERVER_PID=""
cleanup() {
  local rc=$?
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  if [ "$rc" -ne 0 ] && [ -f "$TMP/server.log" ]; then echo "clients: ---- server log (tail) ----" >&2; tail -n 30 "$TMP/server.log" >&2; fi
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT

# Port 0: the server binds free ports itself and logs them, so no port can be taken in between.
step "start $BIN serve"
KEYWARD_DATA_DIR="$TMP/data" KEYWARD_GRPC_ADDR=127.0.0.1:0 KEYWARD_HTTP_ADDR=127.0.0.1:0 \
  KEYWARD_BOOTSTRAP_ADMIN_KEY="$ADMIN_KEY" "$BIN" serve >"$TMP/server.log" 2>&1 &
SERVER_PID=$!
deadline=$((SECONDS + 30))
ADDR=""
until [ -n "$ADDR" ] && grpcurl -plaintext -max-time 2 "$ADDR" grpc.health.v1.Health/Check 2>/dev/null | grep -q '"SERVING"'; do
  kill -0 "$SERVER_PID" 2>/dev/null || die "server exited before serving"
  [ "$SECONDS" -lt "$deadline" ] || die "server not SERVING within 30s"
  sleep 0.3
  ADDR="$(grep -o 'grpc listening addr=[0-9.:]*' "$TMP/server.log" | head -1 | cut -d= -f2 || true)"
done
export KEYWARD_TEST_GRPC_ADDR="$ADDR" KEYWARD_TEST_ADMIN_KEY="$ADMIN_KEY" KEYWARD_ADMIN_KEY="$ADMIN_KEY"
echo "clients: server on $ADDR"

client_go() {
  step "go: generated stubs are up to date, gofmt"
  buf generate --template clients/go/buf.gen.yaml -o "$TMP/gen"
  diff -r "$TMP/gen/clients/go/keyward" clients/go/keyward ||
    die "clients/go/keyward differs from 'buf generate --template clients/go/buf.gen.yaml': regenerate and commit"
  local unformatted
  unformatted="$(gofmt -l clients/go)"
  [ -z "$unformatted" ] || die "not gofmt-formatted: $unformatted"
  step "go: vet and smoke test (GOPATH mode, Debian's grpc-go and genproto)"
  # GOPATH mode against Debian's Go sources (/usr/share/gocode): no module proxy is reachable.
  local gopath="$TMP/gopath" pkg="$TMP/gopath/src/github.com/keyward/keyward/clients/go"
  local -x GO111MODULE=off GOPATH="$gopath:/usr/share/gocode" GOCACHE="$TOOLS/go-cache" GOFLAGS=
  mkdir -p "$(dirname "$pkg")"
  cp -r clients/go "$pkg"
  (cd "$pkg" && go vet ./... && go test -count=1 -v ./...) | tee "$TMP/go.out"
  grep -q -- '--- PASS: TestSmoke' "$TMP/go.out" || die "go: TestSmoke did not pass (skipped?)"
  step "go: the README example"
  mkdir -p "$gopath/src/readme"
  { printf 'package main\n\nimport (\n'
    printf '\t"%s"\n' context fmt log os google.golang.org/grpc google.golang.org/grpc/metadata
    printf '\tkeyward "github.com/keyward/keyward/clients/go"\n\tkeywardv1 "github.com/keyward/keyward/clients/go/keyward/v1"\n)\n\nfunc main() {\n'
    readme_example go go
    printf '}\n'; } >"$gopath/src/readme/main.go"
  (cd "$gopath/src/readme" && go run .) | check_example go 'true VERIFICATION_CODE_VALID'
}

client_typescript() {
  step "typescript: generate, type-check (tsc --strict), smoke test"
  rm -rf clients/typescript/src/gen clients/typescript/dist
  (cd clients/typescript && npm run --silent generate && npm run --silent build && npm test) | tee "$TMP/ts.out"
  grep -q '^# pass 1$' "$TMP/ts.out" || die "typescript: the smoke test did not pass (skipped?)"
  step "typescript: the README example"
  # As a user's project sees the package: installed in node_modules (linked), beside its dependencies.
  local ts="$ROOT/clients/typescript" app="$TMP/ts-app"
  mkdir -p "$app/node_modules/@keyward"
  ln -s "$ts" "$app/node_modules/@keyward/client"
  ln -s "$ts/node_modules/@connectrpc" "$ts/node_modules/@bufbuild" "$ts/node_modules/@types" "$app/node_modules/"
  echo '{"type": "module"}' >"$app/package.json"
  readme_example typescript ts >"$app/example.ts"
  (cd "$app" && "$ts/node_modules/.bin/tsc" --strict --target es2022 --module nodenext --types node example.ts &&
    node example.js) | check_example typescript 'true VALID'
}

client_python() {
  step "python: generate, install the package, smoke test"
  # build/ is setuptools' copy of the last build: a module removed since would be shipped from it.
  rm -rf clients/python/src/keyward/v1 clients/python/build clients/python/src/*.egg-info
  PATH="$TOOLS/pyclient/bin:$PATH" buf generate --template clients/python/buf.gen.yaml
  # Installed as a user would (a wheel built from pyproject.toml), not run from the tree.
  "$TOOLS/pyclient/bin/pip" install --quiet --disable-pip-version-check --no-index --no-deps \
    --no-build-isolation --force-reinstall ./clients/python
  (cd "$TMP" && "$TOOLS/pyclient/bin/python" -m unittest discover -v -s "$ROOT/clients/python/tests" -t "$ROOT/clients/python/tests") 2>&1 |
    tee "$TMP/py.out"
  grep -q '^OK$' "$TMP/py.out" || die "python: the smoke tests did not pass (skipped?)"
  step "python: the README example"
  readme_example python python >"$TMP/example.py"
  (cd "$TMP" && "$TOOLS/pyclient/bin/python" example.py) | check_example python 'True VERIFICATION_CODE_VALID'
}

for client in "${CLIENTS[@]}"; do
  case "$client" in
    go | typescript | python) "client_$client" ;;
    *) die "unknown client '$client' (go, typescript, python)" ;;
  esac
done
echo "clients: ${CLIENTS[*]}: all smoke tests passed"
