"""Applying a migration plan to one client database (I/O)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from analytics_core.clickhouse import create_database, run_ddl, table_columns
from analytics_core.events_table import EVENTS_TABLE, EVENTS_VIEW, events_view_sql, view_is_stale
from analytics_core.migrations.files import MigrationFile, split_statements
from analytics_core.migrations.planning import Plan
from analytics_core.migrations.rerunnable import already_applied
from analytics_core.naming import validate_identifier

log = logging.getLogger(__name__)


def apply_plan(
    client: Client,
    database: str,
    plan: Plan,
    on_applied: Callable[[MigrationFile], None],
    *,
    cluster: str = "",
    on_healed: Callable[[MigrationFile, int, str], None] | None = None,
) -> list[int]:
    """Apply pending migrations in order; `on_applied` records each one right after it ran.

    Migration files never name their database: each statement runs with `database` as its
    current database (the HTTP `database` parameter), whatever the client's default is. On a
    target that is a cluster (`cluster` set) each statement is issued ON CLUSTER with
    replicated engines (cluster_ddl); a statement that can not be is refused before it runs.
    A crash between a statement and its record is healed by re-applying the same version:
    statements written with IF [NOT] EXISTS run twice as they are, and one written without
    it that fails only because it was applied before (its column exists, its table is gone:
    `rerunnable.already_applied`) counts as applied: `on_healed` gets its file, its number
    in the file and ClickHouse's error line. Every run, even one with nothing pending, ends
    by refreshing the `events` view (`refresh_events_view`).
    """
    validate_identifier(database)
    create_database(client, database, cluster)
    applied: list[int] = []
    for migration in plan.pending:
        for number, statement in enumerate(split_statements(migration.sql), start=1):
            try:
                run_ddl(client, statement, database, cluster)
            except ClickHouseError as exc:
                if not already_applied(statement, str(exc)):
                    raise
                error = str(exc).splitlines()[0][:300]
                log.warning(
                    "%s v%03d statement %d was applied before (a run interrupted after it); "
                    "counted as applied: %s",
                    database,
                    migration.version,
                    number,
                    error,
                )
                if on_healed is not None:
                    on_healed(migration, number, error)
        on_applied(migration)
        applied.append(migration.version)
    refresh_events_view(client, database, cluster)
    return applied


def refresh_events_view(client: Client, database: str, cluster: str = "") -> bool:
    """(Re)create `events` with every column of events_base; False when there is no base
    table (yet). Idempotent; the replacement is atomic for readers."""
    columns = [name for name, _type in table_columns(client, database, EVENTS_TABLE)]
    if not columns:
        return False
    run_ddl(client, events_view_sql(database, columns), database, cluster)
    return True


def stale_events_views(client: Client, databases: Sequence[str]) -> set[str]:
    """The databases (of `databases`) whose `events` view has not exactly the columns of
    their events_base, in order; one query for all of them."""
    if not databases:
        return set()
    rows = client.query(
        "SELECT database, table, groupArray((position, name)) FROM system.columns"
        " WHERE database IN {dbs:Array(String)} AND table IN ({base:String}, {view:String})"
        " GROUP BY database, table",
        parameters={"dbs": list(databases), "base": EVENTS_TABLE, "view": EVENTS_VIEW},
    ).result_rows
    columns: dict[tuple[str, str], list[str]] = {
        (str(db), str(table)): [str(name) for _pos, name in sorted(cols)]
        for db, table, cols in rows
    }
    return {
        db
        for db in databases
        if (db, EVENTS_TABLE) in columns
        and view_is_stale(columns[(db, EVENTS_TABLE)], columns.get((db, EVENTS_VIEW), []))
    }
