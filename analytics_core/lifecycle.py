"""Client lifecycle steps: provision, migrate, deprovision (I/O, shared by Dagster and the CLI).

Each step is idempotent and returns a typed outcome; expected failures (invalid
id, refused migration plan, a database error) are values, and every action
leaves an audit row. Steps invalidate the router's cache entry for the client
so a status change takes effect within seconds.

Steps take open connections (`analytics_core.connections.Connections`), never settings:
the Dagster assets pass their resources' connections, the CLI opens them once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.resources.abc import Traversable

import psycopg2
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError

from analytics_core import registry
from analytics_core.batch.tables import is_dlt_internal
from analytics_core.clickhouse import database_exists, drop_database, table_row_counts
from analytics_core.clients import ClientStatus
from analytics_core.connections import Connections, cache_invalidator
from analytics_core.migrations import files, planning
from analytics_core.migrations.apply import apply_plan
from analytics_core.migrations.files import MigrationFile
from analytics_core.naming import (
    InvalidIdentifier,
    client_id_problem,
    database_name_for,
    quote_identifier,
    validate_identifier,
)
from analytics_core.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Provisioned:
    client_id: str
    database: str
    applied_versions: list[int]
    schema_version: int
    was_active: bool
    tables: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Migrated:
    client_id: str
    database: str
    applied_versions: list[int]
    schema_version: int


@dataclass(frozen=True)
class Deprovisioned:
    client_id: str
    database: str
    rows_before: dict[str, int]
    already: bool


@dataclass(frozen=True)
class StepFailed:
    client_id: str
    reason: str
    refused: bool = False  # True: refused before changing anything
    # True: an outage (ClickHouse unreachable or erroring); the same step may succeed if
    # retried. False: retrying without a change (a file, the registry row) fails the same way.
    transient: bool = False


def invalidate_cache(settings: Settings, client_id: str) -> None:
    """Drop a client's router cache entry (operator commands); never raises."""
    cache_invalidator(settings.redis)(client_id)


def _is_outage(exc: BaseException) -> bool:
    """Connection trouble (worth retrying), not an error ClickHouse returned for the SQL."""
    return isinstance(exc, (OperationalError, OSError))


def _database_of(row: registry.ClientRow) -> str:
    return validate_identifier(row.ch_database_name or database_name_for(row.client_id))


def _available(
    migrations: Sequence[MigrationFile] | None, migrations_dir: Traversable | None
) -> list[MigrationFile] | str:
    """The migrations to plan with, or why the migration files can not be read."""
    if migrations is not None:
        return list(migrations)
    try:
        return files.load(migrations_dir)
    except (files.MigrationFileError, OSError, UnicodeDecodeError) as exc:
        return f"migration files: {exc}"


def provision(
    c: Connections,
    client_id: str,
    *,
    run_id: str | None = None,
    migrations: Sequence[MigrationFile] | None = None,
    migrations_dir: Traversable | None = None,
) -> Provisioned | StepFailed:
    """Create the client's database with every migration, then mark it active.

    `migrations` (already loaded) wins over `migrations_dir` (default: the shipped
    clickhouse/migrations).
    """
    conn = c.registry
    row = registry.get_client(conn, client_id)
    if row is None:
        return StepFailed(client_id, f"no client {client_id!r} in the registry", refused=True)
    if row.status in (ClientStatus.DEPROVISIONING, ClientStatus.DEPROVISIONED):
        return StepFailed(
            client_id, f"client is {row.status}; it can not be provisioned again", refused=True
        )
    was_active = row.status == ClientStatus.ACTIVE

    def fail(reason: str, *, transient: bool = False) -> StepFailed:
        if not was_active:
            registry.set_status(conn, client_id, ClientStatus.FAILED, reason)
            c.invalidate_cache(client_id)
        registry.audit(conn, client_id, "provision_failed", {"error": reason}, run_id=run_id)
        return StepFailed(client_id, reason, transient=transient)

    problem = client_id_problem(client_id)
    if problem is not None:
        return fail(problem)
    try:
        database = _database_of(row)
    except InvalidIdentifier as exc:
        return fail(f"ch_database_name: {exc}")
    available = _available(migrations, migrations_dir)
    if isinstance(available, str):
        return fail(available)
    outcome = _apply(c, client_id, database, available, run_id)
    if isinstance(outcome, StepFailed):
        return fail(outcome.reason, transient=outcome.transient)
    if not was_active:
        try:
            registry.set_status(
                conn, client_id, ClientStatus.ACTIVE, None, ch_database_name=database
            )
        except psycopg2.IntegrityError:
            conn.rollback()
            return fail(f"ClickHouse database {database} is already used by another client")
        registry.audit(
            conn,
            client_id,
            "provisioned",
            {"database": database, "schema_version": outcome.schema_version},
            run_id=run_id,
        )
        c.invalidate_cache(client_id)
    return Provisioned(
        client_id,
        database,
        outcome.applied_versions,
        outcome.schema_version,
        was_active,
        tables=_row_counts(c.clickhouse, database),
    )


def migrate(
    c: Connections,
    client_id: str,
    *,
    run_id: str | None = None,
    migrations: Sequence[MigrationFile] | None = None,
    migrations_dir: Traversable | None = None,
) -> Migrated | StepFailed:
    """Apply pending migrations to an active client; refuses tampered history."""
    conn = c.registry
    row = registry.get_client(conn, client_id)
    if row is None or row.status != ClientStatus.ACTIVE:
        status = "missing" if row is None else row.status
        return StepFailed(
            client_id, f"client is {status}; only active clients migrate", refused=True
        )
    database = _database_of(row)
    available = _available(migrations, migrations_dir)
    outcome = (
        StepFailed(client_id, available, refused=True)
        if isinstance(available, str)
        else _apply(c, client_id, database, available, run_id)
    )
    if isinstance(outcome, StepFailed):
        registry.audit(
            conn, client_id, "migration_failed", {"error": outcome.reason}, run_id=run_id
        )
    return outcome


def _apply(
    c: Connections,
    client_id: str,
    database: str,
    available: Sequence[MigrationFile],
    run_id: str | None,
) -> Migrated | StepFailed:
    conn = c.registry
    applied = registry.applied_versions(conn, client_id)
    plan = planning.plan(available, applied)
    if isinstance(plan, planning.Refused):
        return StepFailed(client_id, plan.reason, refused=True)

    def record(m: MigrationFile) -> None:
        registry.record_schema_version(conn, client_id, m.version, m.name, m.checksum, run_id)
        if m.version > 0:
            registry.audit(
                conn,
                client_id,
                "migrated",
                {"database": database, "version": m.version, "name": m.name},
                run_id=run_id,
            )

    try:
        done = apply_plan(c.clickhouse, database, plan, record)
    except (ClickHouseError, OSError) as exc:
        reason = f"ClickHouse: {str(exc).splitlines()[0][:500]}"
        return StepFailed(client_id, reason, transient=_is_outage(exc))
    except InvalidIdentifier as exc:  # a column the events view can not name
        return StepFailed(client_id, f"events view: {exc}")
    versions = [a.version for a in applied] + done
    return Migrated(client_id, database, done, max(versions, default=0))


def deprovision_refusal(client_id: str, confirm: str) -> str | None:
    """Why a deprovisioning request is refused before anything is read (pure), or None."""
    if confirm != client_id:
        return (
            f"confirmation {confirm!r} does not match client id {client_id!r}; nothing was changed"
        )
    return client_id_problem(client_id)


def record_refusal(
    conn: registry.Conn,
    client_id: str,
    step: str,
    reason: str,
    *,
    run_id: str | None = None,
    actor: str = "system",
) -> None:
    """The audit row of a refused request (`<step>_refused`): who asked, and why not."""
    registry.audit(
        conn, client_id[:200], f"{step}_refused", {"reason": reason}, run_id=run_id, actor=actor
    )


def deprovision(
    c: Connections,
    client_id: str,
    confirm: str,
    *,
    run_id: str | None = None,
    actor: str = "system",
) -> Deprovisioned | StepFailed:
    """Drop the client's database and mark it deprovisioned; a refusal changes nothing but
    leaves an audit row (`deprovision_refused`)."""
    conn = c.registry

    def refuse(reason: str) -> StepFailed:
        record_refusal(conn, client_id, "deprovision", reason, run_id=run_id, actor=actor)
        return StepFailed(client_id, reason, refused=True)

    refusal = deprovision_refusal(client_id, confirm)
    if refusal is not None:
        return refuse(refusal)
    row = registry.get_client(conn, client_id)
    if row is None:
        return refuse(f"no client {client_id!r} in the registry")
    try:
        database = _database_of(row)
    except InvalidIdentifier as exc:
        return refuse(f"ch_database_name: {exc}")
    already = row.status == ClientStatus.DEPROVISIONED
    if not already:
        registry.set_status(conn, client_id, ClientStatus.DEPROVISIONING, "deprovision started")
        c.invalidate_cache(client_id)
    try:
        ch = c.clickhouse
        rows_before: dict[str, int] = {}
        if database_exists(ch, database):
            rows_before = client_row_counts(ch, database)
            if "events_base" in rows_before:
                # total_rows counts unmerged replays; the audit records distinct events.
                q = f"SELECT count() FROM {quote_identifier(database)}.events_base FINAL"
                rows_before["events_base"] = int(ch.query(q).result_rows[0][0])
        drop_database(ch, database)
    except (ClickHouseError, OSError) as exc:
        reason = f"ClickHouse: {str(exc).splitlines()[0][:500]}"
        registry.audit(
            conn, client_id, "deprovision_failed", {"error": reason}, run_id=run_id, actor=actor
        )
        return StepFailed(client_id, reason, transient=_is_outage(exc))
    if not already:
        registry.set_status(conn, client_id, ClientStatus.DEPROVISIONED, None)
    registry.audit(
        conn,
        client_id,
        "deprovisioned",
        {"database": database, "rows_before": rows_before, "already": already},
        run_id=run_id,
        actor=actor,
    )
    c.invalidate_cache(client_id)
    return Deprovisioned(client_id, database, rows_before, already)


def client_row_counts(ch: Client, database: str) -> dict[str, int]:
    """Rows per table of a client database: the client's data, not dlt's bookkeeping."""
    return table_row_counts(ch, database, exclude=is_dlt_internal)


def _row_counts(ch: Client, database: str) -> dict[str, int]:
    try:
        return client_row_counts(ch, database)
    except (ClickHouseError, OSError):
        return {}
