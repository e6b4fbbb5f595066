"""The shared operations database in ClickHouse (router accounting), created idempotently."""

from __future__ import annotations

from analytics_core import package_data
from analytics_core.clickhouse import create_database, http_client
from analytics_core.migrations.files import split_statements
from analytics_core.naming import validate_identifier
from analytics_core.settings import Settings

CONSUMPTION_TABLE = "router_consumption"


def ensure_ops_schema(settings: Settings) -> str:
    """Create the ops database and its tables if missing; returns the database name."""
    database = validate_identifier(settings.clickhouse.ops_database)
    admin = http_client(settings.clickhouse)
    try:
        create_database(admin, database)
    finally:
        admin.close()
    client = http_client(settings.clickhouse, database=database)
    try:
        for path in package_data.sql_files(package_data.clickhouse_ops()):
            for statement in split_statements(path.read_text(encoding="utf-8")):
                client.command(statement)
    finally:
        client.close()
    return database
