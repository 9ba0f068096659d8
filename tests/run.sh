#!/usr/bin/env bash
# The whole test suite, as README's second command and CI run it:
#   unit tests and the end-to-end binary (every store test on SQLite and PostgreSQL),
#   then the contract checks (buf lint, reflection, decoded error details), every shell block of
#   README.md against a server of its own (tests/readme.sh), the generated clients in Go,
#   TypeScript and Python against a server (tests/clients.sh),
#   a schemathesis run against the REST gateway's /openapi.json and a typed TypeScript client of it
#   (tests/rest_typescript.sh), and one schemathesis run against each of
#   Masumi's own contract documents (tests/contracts/), and the Dockerfile's build inputs
#   replayed offline (tests/dockerfile.sh), the Helm chart linted, rendered and schema-checked
#   (tests/helm.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash tests/postgres.sh
bash tests/tools.sh
# The end-to-end tests start the `keyward` binary as separate replicas, so build it first.
cargo build --workspace --locked --bins
cargo test --workspace --locked
bash tests/contract.sh
bash tests/readme.sh
bash tests/clients.sh
bash tests/schemathesis.sh
bash tests/rest_typescript.sh
bash tests/masumi_contracts.sh
bash tests/dockerfile.sh
bash tests/helm.sh
