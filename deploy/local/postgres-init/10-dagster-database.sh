#!/bin/bash
# Runs once, when the bundled PostgreSQL initialises an empty data directory: the database
# that holds Dagster's runs, event logs and schedules (the registry database is POSTGRES_DB).
set -euo pipefail
db=${DAGSTER_POSTGRES_DB:-dagster}
if [[ $db != "$POSTGRES_DB" ]]; then
  psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d postgres -q \
    -c "CREATE DATABASE \"$db\" OWNER \"$POSTGRES_USER\""
fi
