#!/usr/bin/env bash
# Makes sure the local PostgreSQL the end-to-end tests use is up (127.0.0.1:5432, trust
# auth), and drops databases that earlier interrupted test runs left behind.
set -euo pipefail

if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  echo "postgres.sh: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
pg_isready -h 127.0.0.1 -p 5432

# Test databases are named kw_test_<pid>_…; drop those whose test process is gone.
psql -h 127.0.0.1 -U postgres -d postgres -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'kw\_test\_%'" |
  while read -r name; do
    pid="$(cut -d_ -f3 <<<"$name")"
    if ! kill -0 "$pid" 2>/dev/null; then
      psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS \"$name\" WITH (FORCE)"
    fi
  done
