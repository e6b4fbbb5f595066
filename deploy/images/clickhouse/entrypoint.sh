#!/bin/bash
set -euo pipefail
if [[ -n ${CLICKHOUSE_PASSWORD:-} || ${CLICKHOUSE_USER:-default} != default ]]; then
  echo "clickhouse (chdb test image): only user 'default' without a password is supported;" \
    "unset CLICKHOUSE_PASSWORD / CLICKHOUSE_USER or use the official image" >&2
  exit 2
fi
exec /opt/chdb/bin/python /opt/chdb/clickhouse_server.py --data /var/lib/clickhouse \
  --host 0.0.0.0 --http-port 8123 --tcp-port 9000 --token "container_keepalive_$$"
