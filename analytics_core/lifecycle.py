"""Client lifecycle steps: provision, migrate, deprovision (I/O, shared by Dagster and the CLI).

Each step is idempotent and returns a typed outcome; expected failures (invalid
id, refused migration plan, a database error) are values, and every action
leaves an audit row. Steps invalidate the router's cache entry for the client
so a status change takes effect within seconds.

Steps take open connections (`analytics_core.connections.Connections`), never settings:
the Dagster assets pass their resources' connections, the CLI opens them once.

Every step works on the ClickHouse target the client's row names (`clients.ch_target`); a
target missing from the settings is an error that names it, never a reason to use another.
One step (or client move) works on a client at a time (`registry.client_lock`), and no
step touches a client whose move is unfinished (analytics_core.moves).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.resources.abc import Traversable
from typing import TypeVar

import psycopg2
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError

from analytics_core import registry
from analytics_core.batch.tables import is_dlt_internal
from analytics_core.clickhouse import database_exists, drop_database, table_row_counts
from analytics_core.clients import ClientStatus
from analytics_core.connections import Connections, UnknownTarget, cache_invalidator
from analytics_core.migrations import files, planning
from analytics_core.migrations.apply import apply_plan
from analytics_core.migrations.cluster_ddl import NotClusterSafe
from analytics_core.migrations.files import MigrationFile
from analytics_core.moves import store as move_store
from analytics_core.naming import (
    InvalidIdentifier,
    client_id_problem,
    database_name_for,
    quote_identifier,
    validate_identifier,
)
from analytics_core.settings import ClickHouseSettings, Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Provisioned:
    client_id: str
    database: str
    applied_versions: list[int]
    schema_version: int
    was_active: bool
    tables: dict[str, int] = field(default_factory=dict)
    target: str = "default"


@dataclass(frozen=True)
class Migrated:
    client_id: str
    database: str
    applied_versions: list[int]
    schema_version: int
    target: str = "default"
    # Statements a run interrupted before this one had applied (counted as applied now).
    healed: tuple[str, ...] = ()


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


StepT = TypeVar("StepT")


def invalidate_cache(settings: Settings, client_id: str) -> None:
    """Drop a client's router cache entry (operator commands); never raises."""
    cache_invalidator(settings.redis)(client_id)


def _is_outage(exc: BaseException) -> bool:
    """Connection trouble (worth retrying), not an error ClickHouse returned for the SQL."""
    return isinstance(exc, (OperationalError, OSError))


def database_of(row: registry.ClientRow) -> str:
    return validate_identifier(row.ch_database_name or database_name_for(row.client_id))


def target_of(c: Connections, row: registry.ClientRow) -> ClickHouseSettings | str:
    """The settings of the client's target, or why it has none here (not configured)."""
    try:
        return c.target(row.ch_target)
    except UnknownTarget as exc:
        return f"client {row.client_id}: {exc}"


def busy_reason(conn: registry.Conn, client_id: str) -> str | None:
    """Why lifecycle steps must leave the client alone now (an unfinished move), or None."""
    move = move_store.open_move(conn, client_id)
    if move is None:
        return None
    return (
        f"client {client_id} is being moved from {move.source_target!r} to "
        f"{move.dest_target!r} (step {move.step}); run the move again (Dagster job "
        "move_client, or admin move-client) to finish it first"
    )


def locked(c: Connections, client_id: str, step: Callable[[], StepT]) -> StepT | StepFailed:
    """Run `step` holding the client's lock; a client already locked is busy (transient)."""
    with registry.client_lock(c.registry, client_id) as taken:
        if not taken:
            return StepFailed(
                client_id,
                f"another lifecycle step or a move is working on client {client_id} now",
                transient=True,
            )
        return step()


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
    """Create the client's database on its target with every migration, then mark it active.

    `migrations` (already loaded) wins over `migrations_dir` (default: the shipped
    clickhouse/migrations).
    """
    return locked(
        c, client_id, lambda: _provision(c, client_id, run_id, migrations, migrations_dir)
    )


def _provision(
    c: Connections,
    client_id: str,
    run_id: str | None,
    migrations: Sequence[MigrationFile] | None,
    migrations_dir: Traversable | None,
) -> Provisioned | StepFailed:
    conn = c.registry
    row = registry.get_client(conn, client_id)
    if row is None:
        return StepFailed(client_id, f"no client {client_id!r} in the registry", refused=True)
    if row.status in (ClientStatus.DEPROVISIONING, ClientStatus.DEPROVISIONED):
        return StepFailed(
            client_id, f"client is {row.status}; it can not be provisioned again", refused=True
        )
    busy = busy_reason(conn, client_id)
    if busy is not None:
        return StepFailed(client_id, busy, refused=True)
    # Active means provisioned: an active row without a database (written by hand) is
    # provisioned like a pending one, and its database recorded.
    was_active = row.status == ClientStatus.ACTIVE and bool(row.ch_database_name)

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
        database = database_of(row)
    except InvalidIdentifier as exc:
        return fail(f"ch_database_name: {exc}")
    target = target_of(c, row)
    if isinstance(target, str):
        return fail(target)
    available = _available(migrations, migrations_dir)
    if isinstance(available, str):
        return fail(available)
    outcome = _apply(c, client_id, database, target, available, run_id)
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
            {
                "database": database,
                "target": target.target,
                "schema_version": outcome.schema_version,
            },
            run_id=run_id,
        )
        c.invalidate_cache(client_id)
    return Provisioned(
        client_id,
        database,
        outcome.applied_versions,
        outcome.schema_version,
        was_active,
        tables=_row_counts(c.clickhouse_for(target.target), database),
        target=target.target,
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
    return locked(c, client_id, lambda: _migrate(c, client_id, run_id, migrations, migrations_dir))


def _migrate(
    c: Connections,
    client_id: str,
    run_id: str | None,
    migrations: Sequence[MigrationFile] | None,
    migrations_dir: Traversable | None,
) -> Migrated | StepFailed:
    conn = c.registry
    row = registry.get_client(conn, client_id)
    if row is None or row.status != ClientStatus.ACTIVE:
        status = "missing" if row is None else row.status
        return StepFailed(
            client_id, f"client is {status}; only active clients migrate", refused=True
        )
    database = database_of(row)
    busy = busy_reason(conn, client_id)
    target = target_of(c, row)
    available = _available(migrations, migrations_dir)
    if busy is not None:
        outcome: Migrated | StepFailed = StepFailed(client_id, busy, refused=True)
    elif isinstance(target, str):
        outcome = StepFailed(client_id, target, refused=True)
    elif isinstance(available, str):
        outcome = StepFailed(client_id, available, refused=True)
    else:
        outcome = _apply(c, client_id, database, target, available, run_id)
    if isinstance(outcome, StepFailed):
        registry.audit(
            conn, client_id, "migration_failed", {"error": outcome.reason}, run_id=run_id
        )
    return outcome


def _apply(
    c: Connections,
    client_id: str,
    database: str,
    target: ClickHouseSettings,
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

    healed: list[str] = []

    def heal(m: MigrationFile, number: int, error: str) -> None:
        healed.append(f"v{m.version:03d} ({m.name}) statement {number}: {error}")
        registry.audit(
            conn,
            client_id,
            "migration_statement_healed",
            {"database": database, "version": m.version, "statement": number, "error": error},
            run_id=run_id,
        )

    try:
        ch = c.clickhouse_for(target.target)
        done = apply_plan(ch, database, plan, record, cluster=target.cluster, on_healed=heal)
    except (ClickHouseError, OSError) as exc:
        reason = f"ClickHouse: {str(exc).splitlines()[0][:500]} (target {target.target})"
        return StepFailed(client_id, reason, transient=_is_outage(exc))
    except InvalidIdentifier as exc:  # a column the events view can not name
        return StepFailed(client_id, f"events view: {exc}")
    except NotClusterSafe as exc:
        return StepFailed(client_id, f"cluster {target.cluster}: {exc}", refused=True)
    versions = [a.version for a in applied] + done
    return Migrated(
        client_id, database, done, max(versions, default=0), target.target, tuple(healed)
    )


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
    return locked(c, client_id, lambda: _deprovision(c, client_id, refuse, run_id, actor))


def _deprovision(
    c: Connections,
    client_id: str,
    refuse: Callable[[str], StepFailed],
    run_id: str | None,
    actor: str,
) -> Deprovisioned | StepFailed:
    conn = c.registry
    row = registry.get_client(conn, client_id)
    if row is None:
        return refuse(f"no client {client_id!r} in the registry")
    try:
        database = database_of(row)
    except InvalidIdentifier as exc:
        return refuse(f"ch_database_name: {exc}")
    busy = busy_reason(conn, client_id)
    if busy is not None:
        return refuse(busy)
    target = target_of(c, row)
    if isinstance(target, str):
        return refuse(target)
    already = row.status == ClientStatus.DEPROVISIONED
    if not already:
        registry.set_status(conn, client_id, ClientStatus.DEPROVISIONING, "deprovision started")
        c.invalidate_cache(client_id)
    try:
        ch = c.clickhouse_for(target.target)
        rows_before: dict[str, int] = {}
        if database_exists(ch, database):
            rows_before = client_row_counts(ch, database)
            if "events_base" in rows_before:
                # total_rows counts unmerged replays; the audit records distinct events.
                q = f"SELECT count() FROM {quote_identifier(database)}.events_base FINAL"
                rows_before["events_base"] = int(ch.query(q).result_rows[0][0])
        drop_database(ch, database, target.cluster)
    except (ClickHouseError, OSError) as exc:
        reason = f"ClickHouse: {str(exc).splitlines()[0][:500]} (target {target.target})"
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
        {
            "database": database,
            "target": target.target,
            "rows_before": rows_before,
            "already": already,
        },
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
