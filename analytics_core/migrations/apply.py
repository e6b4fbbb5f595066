"""Applying a migration plan to one client database (I/O)."""

from __future__ import annotations

from collections.abc import Callable

from analytics_core.clickhouse import create_database, http_client
from analytics_core.migrations.files import MigrationFile, split_statements
from analytics_core.migrations.planning import Plan
from analytics_core.naming import validate_identifier
from analytics_core.settings import ClickHouseSettings


def apply_plan(
    ch: ClickHouseSettings,
    database: str,
    plan: Plan,
    on_applied: Callable[[MigrationFile], None],
) -> list[int]:
    """Apply pending migrations in order; `on_applied` records each one right after it ran.

    Statements are written to be re-runnable (IF NOT EXISTS), so a crash between a
    statement and its record is healed by re-applying the same version.
    """
    validate_identifier(database)
    admin = http_client(ch)
    try:
        create_database(admin, database)
    finally:
        admin.close()
    client = http_client(ch, database=database)
    applied: list[int] = []
    try:
        for migration in plan.pending:
            for statement in split_statements(migration.sql):
                client.command(statement)
            on_applied(migration)
            applied.append(migration.version)
    finally:
        client.close()
    return applied
