"""Applying a migration plan to one client database (I/O)."""

from __future__ import annotations

from collections.abc import Callable

from clickhouse_connect.driver.client import Client

from analytics_core.clickhouse import create_database
from analytics_core.migrations.files import MigrationFile, split_statements
from analytics_core.migrations.planning import Plan
from analytics_core.naming import validate_identifier


def apply_plan(
    client: Client,
    database: str,
    plan: Plan,
    on_applied: Callable[[MigrationFile], None],
) -> list[int]:
    """Apply pending migrations in order; `on_applied` records each one right after it ran.

    Migration files never name their database: each statement runs with `database` as its
    current database (the HTTP `database` parameter), whatever the client's default is.
    Statements are written to be re-runnable (IF NOT EXISTS), so a crash between a
    statement and its record is healed by re-applying the same version.
    """
    validate_identifier(database)
    create_database(client, database)
    applied: list[int] = []
    for migration in plan.pending:
        for statement in split_statements(migration.sql):
            client.command(statement, settings={"database": database})
        on_applied(migration)
        applied.append(migration.version)
    return applied
