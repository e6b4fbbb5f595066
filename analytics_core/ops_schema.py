"""The shared operations database in ClickHouse (router accounting), created idempotently.

It lives on the `default` target (the CLICKHOUSE_* server or cluster), whatever target a
client is placed on: the accounting covers Kafka offset ranges, which mix every client.
"""

from __future__ import annotations

from analytics_core import package_data
from analytics_core.clickhouse import create_database, http_client, run_ddl
from analytics_core.migrations.files import split_statements
from analytics_core.naming import validate_identifier
from analytics_core.settings import Settings

CONSUMPTION_TABLE = "router_consumption"


def ensure_ops_schema(settings: Settings) -> str:
    """Create the ops database and its tables if missing; returns the database name."""
    ch = settings.clickhouse
    database = validate_identifier(ch.ops_database)
    client = http_client(ch)
    try:
        create_database(client, database, ch.cluster)
        for path in package_data.sql_files(package_data.clickhouse_ops()):
            for statement in split_statements(path.read_text(encoding="utf-8")):
                run_ddl(client, statement, database, ch.cluster)
    finally:
        client.close()
    return database
