#!/usr/bin/env bash
# The whole test suite, as README's second command and CI run it:
#   unit tests and the end-to-end binary (every store test on SQLite and PostgreSQL),
#   then the contract checks (buf lint, reflection, a Python client, README's grpcurl examples).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash tests/postgres.sh
bash tests/tools.sh
cargo test --workspace --locked
cargo build --locked --bin keyward
bash tests/contract.sh
