#!/usr/bin/env bash
# The Helm chart: `helm lint --strict`, `helm template` of several value sets and the rendered
# manifests validated against the Kubernetes schemas, offline (tests/helm/check.py says how).
# Run from anywhere: bash tests/helm.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash tests/tools.sh >/dev/null
target/tools/venv/bin/python tests/helm/check.py
