"""The client lifecycle sensors.

`provisioning_sensor`: registry -> partitions and provisioning runs.

Each tick:
1. a pending client whose id breaks the naming rules is marked failed with the reason (and
   audited) by `lifecycle.provision`, which refuses an invalid id before touching ClickHouse;
   it never gets a partition and never crashes the sensor;
2. the `clients` partitions follow the registry: one per valid client that is pending,
   active or failed; any other partition (a deprovisioned client's, or one added by hand in
   the UI for an id that is not a registered client or not valid) is removed, and each
   removal is logged with why (partition_plan);
3. one `provision_client` run is requested per pending client (see provisioning_plan);
4. a tick that requests no run says what it saw and changed in its skip reason.

`migrations_sensor`: migration files vs schema_versions -> per-client migration runs.

Each tick reads clickhouse/migrations (via the ClickHouse resource) and every active
client's applied versions, plans each client with `analytics_core.migrations.planning`, and
requests a `migrate_client` run for each client that lacks a version, whose applied history
no longer matches the files, whose `events` view lacks a column, or whose last failed run
can now succeed (health clears once the cause is fixed; see migrations_plan). Each request
is logged with why; a tick that requests nothing says in its skip reason which clients wait
and why (a refused plan shows there). Broken migration files (bad name, duplicate version)
fail the tick with the file named, before any run is requested.
"""

# No `from __future__ import annotations`: Dagster reads these type hints at runtime.

from clickhouse_connect.driver.exceptions import ClickHouseError
from dagster import (
    AddDynamicPartitionsRequest,
    AssetPartitionStatus,
    DefaultSensorStatus,
    DeleteDynamicPartitionsRequest,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from analytics_core import lifecycle, registry
from analytics_core.clients import ClientStatus
from analytics_core.connections import Connections, UnknownTarget
from analytics_core.migrations import planning
from analytics_core.migrations.apply import stale_events_views
from analytics_core.naming import client_id_problem
from analytics_pipeline import sensor_cursor as cursor
from analytics_pipeline.defs.client_lifecycle.assets import client_schema
from analytics_pipeline.defs.client_lifecycle.jobs import migrate_client_job, provision_client_job
from analytics_pipeline.defs.client_lifecycle.migrations_plan import (
    ClientSchemaState,
    needs,
    plan_runs,
    run_key,
    signature,
)
from analytics_pipeline.defs.client_lifecycle.partition_plan import (
    plan_partitions,
    tick_summary,
)
from analytics_pipeline.defs.client_lifecycle.provisioning_plan import (
    PendingClient,
    attempts_from_cursor,
    attempts_to_cursor,
    plan_provisioning,
    why_waiting,
)
from analytics_pipeline.partitions import (
    CLIENTS_PARTITIONS_NAME,
    add_clients_request,
    clients_partitions,
    delete_clients_request,
)
from analytics_pipeline.resources import (
    ClickHouseResource,
    PostgresMetadataResource,
    RedisResource,
    open_connections,
)
from analytics_pipeline.run_history import run_key_state
from analytics_pipeline.tags import PROVISION_PRIORITY, client_tags, priority


@sensor(
    name="provisioning_sensor",
    job=provision_client_job,
    minimum_interval_seconds=10,
    default_status=DefaultSensorStatus.RUNNING,
    description="Requests one provision_client run per pending client in the registry.",
)
def provisioning_sensor(
    context: SensorEvaluationContext,
    postgres: PostgresMetadataResource,
    clickhouse: ClickHouseResource,
    redis: RedisResource,
) -> SensorResult:
    with open_connections(postgres, clickhouse, redis=redis) as c:
        rows = registry.list_clients(c.registry)
        for row in rows:
            if row.status == ClientStatus.PENDING and client_id_problem(row.client_id) is not None:
                # Refused before touching ClickHouse: marks the client failed, audited.
                outcome = lifecycle.provision(c, row.client_id)
                reason = outcome.reason if isinstance(outcome, lifecycle.StepFailed) else "?"
                context.log.warning(f"pending client {row.client_id!r} marked failed: {reason}")
    valid = [r for r in rows if client_id_problem(r.client_id) is None]

    changes = plan_partitions(
        {r.client_id: r.status for r in rows},
        context.instance.get_dynamic_partitions(CLIENTS_PARTITIONS_NAME),
    )
    partition_requests: list[AddDynamicPartitionsRequest | DeleteDynamicPartitionsRequest] = []
    if changes.add:
        partition_requests.append(add_clients_request(changes.add))
    if changes.remove:
        partition_requests.append(delete_clients_request(changes.remove))
        for key, why in sorted(changes.remove.items()):
            context.log.warning(f"partition {key!r} of clients removed: {why}")

    pending = [
        PendingClient(r.client_id, r.updated_at.isoformat())
        for r in valid
        if r.status == ClientStatus.PENDING
    ]
    # The plan and the summary ask about the same run keys: each is read once per tick.
    key_states: dict[str, str] = {}

    def key_state(key: str) -> str:
        if key not in key_states:
            key_states[key] = run_key_state(context.instance, key)
        return key_states[key]

    requests, attempts = plan_provisioning(
        pending, attempts_from_cursor(cursor.clients_state(context.cursor)), key_state
    )
    asked = [c for c, _ in requests]
    waiting = why_waiting(pending, attempts, asked, key_state)
    summary = tick_summary([p.client_id for p in pending], asked, changes, waiting)
    context.log.info(summary)
    return SensorResult(
        run_requests=[
            RunRequest(
                run_key=attempt.run_key(client_id),
                partition_key=client_id,
                tags={**client_tags(client_id, "provision"), **priority(PROVISION_PRIORITY)},
            )
            for client_id, attempt in requests
        ],
        dynamic_partitions_requests=partition_requests,
        cursor=cursor.encode({"clients": attempts_to_cursor(attempts)}),
        # Shown on the sensor's page: what the tick saw and changed (not Dagster's "empty
        # result"), e.g. a partition added by hand in the UI and removed, and why.
        skip_reason=None if requests else SkipReason(summary),
    )


TARGET_TAG = "analytics/migration_target"


def _stale_views(
    context: SensorEvaluationContext, c: Connections, clients: list[registry.ClientRow]
) -> set[str]:
    """Databases whose events view lacks a column, asked of each client's ClickHouse target;
    a target that is not configured or not reachable is skipped with a warning (its clients
    are looked at again next tick), so one target never holds up the others'."""
    by_target: dict[str, list[str]] = {}
    for r in clients:
        if r.ch_database_name:
            by_target.setdefault(r.ch_target, []).append(r.ch_database_name)
    stale: set[str] = set()
    for target, databases in sorted(by_target.items()):
        try:
            stale |= stale_events_views(c.clickhouse_for(target), sorted(set(databases)))
        except (UnknownTarget, ClickHouseError, OSError) as exc:
            context.log.warning(f"events views on ClickHouse target {target} not checked: {exc}")
    return stale


@sensor(
    name="migrations_sensor",
    job=migrate_client_job,
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "Requests a migrate_client run for each active client lacking a migration, whose "
        "events view lacks a column, or whose last failed migration can now succeed."
    ),
)
def migrations_sensor(
    context: SensorEvaluationContext,
    postgres: PostgresMetadataResource,
    clickhouse: ClickHouseResource,
) -> SensorResult:
    available = clickhouse.load_migrations()
    files_signature = signature(available)
    existing = set(context.instance.get_dynamic_partitions(CLIENTS_PARTITIONS_NAME))
    with open_connections(postgres, clickhouse) as c:
        clients = []
        for row in registry.list_clients(c.registry, [ClientStatus.ACTIVE]):
            if client_id_problem(row.client_id) is not None:
                context.log.warning(f"active client {row.client_id!r} has an invalid id; skipped")
                continue
            clients.append(row)
        plans = {
            r.client_id: planning.plan(
                available, registry.applied_versions(c.registry, r.client_id)
            )
            for r in clients
        }
        databases = {r.client_id: r.ch_database_name for r in clients if r.ch_database_name}
        stale = _stale_views(context, c, clients)
    statuses = (
        context.instance.get_status_by_partition(
            client_schema.key, sorted(existing & set(plans)), clients_partitions
        )
        or {}
    )
    states = [
        ClientSchemaState(
            client_id,
            plan,
            view_stale=databases.get(client_id) in stale,
            last_attempt_failed=statuses.get(client_id) == AssetPartitionStatus.FAILED,
        )
        for client_id, plan in plans.items()
    ]
    wanted = needs(states, files_signature)
    previous = {k: v for k, v in cursor.clients_state(context.cursor).items() if isinstance(v, str)}
    requested, state = plan_runs({n.client_id: n.target for n in wanted}, previous)
    for n in wanted:
        if n.client_id in requested:
            context.log.info(f"client {n.client_id}: migrate_client requested: {n.why}")
    waiting = [f"{n.client_id}: {n.why}" for n in wanted if n.client_id not in requested]
    missing = set(requested) - existing
    return SensorResult(
        run_requests=[
            RunRequest(
                run_key=run_key(client_id, state[client_id]),
                partition_key=client_id,
                tags={**client_tags(client_id, "migrate"), TARGET_TAG: state[client_id]},
            )
            for client_id in requested
        ],
        dynamic_partitions_requests=[add_clients_request(missing)] if missing else [],
        cursor=cursor.encode({"clients": state}),
        # Shown on the sensor's page: why clients are not up to date (e.g. a refused plan
        # whose failed run is already there), or that all are.
        skip_reason=None
        if requested
        else SkipReason(
            "; ".join(waiting)[:2000]
            if waiting
            else f"{len(plans)} active client(s) up to date with the migration files"
        ),
    )
