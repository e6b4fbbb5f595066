"""`migrations_sensor`: migration files vs schema_versions -> per-client migration runs.

Each tick reads clickhouse/migrations (via the ClickHouse resource) and every active
client's applied versions, plans each client with `analytics_core.migrations.planning`, and
requests a `migrate_client` run for each client that lacks a version or whose applied
history no longer matches the files (see migrations_plan). Broken migration files (bad
name, duplicate version) fail the tick with the file named, before any run is requested.
"""

# No `from __future__ import annotations`: Dagster reads these type hints at runtime.

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from analytics_core import registry
from analytics_core.clients import ClientStatus
from analytics_core.migrations import planning
from analytics_core.naming import client_id_problem
from analytics_pipeline.jobs.migrations import migrate_client_job
from analytics_pipeline.partitions import CLIENTS_PARTITIONS_NAME, add_clients_request
from analytics_pipeline.resources import ClickHouseResource, PostgresMetadataResource
from analytics_pipeline.sensors import cursor
from analytics_pipeline.sensors.migrations_plan import plan_migrations, run_key, signature
from analytics_pipeline.tags import client_tags

TARGET_TAG = "analytics/migration_target"


@sensor(
    name="migrations_sensor",
    job=migrate_client_job,
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="Requests a migrate_client run for each active client lacking a migration.",
)
def migrations_sensor(
    context: SensorEvaluationContext,
    postgres: PostgresMetadataResource,
    clickhouse: ClickHouseResource,
) -> SensorResult:
    available = clickhouse.load_migrations()
    target = signature(available)
    needing: list[str] = []
    with postgres.connect() as conn:
        for row in registry.list_clients(conn, [ClientStatus.ACTIVE]):
            if client_id_problem(row.client_id) is not None:
                context.log.warning(f"active client {row.client_id!r} has an invalid id; skipped")
                continue
            plan = planning.plan(available, registry.applied_versions(conn, row.client_id))
            if isinstance(plan, planning.Refused) or not plan.up_to_date:
                needing.append(row.client_id)
    previous = {k: v for k, v in cursor.decode(context.cursor).items() if isinstance(v, str)}
    requested, state = plan_migrations(needing, previous, target)
    existing = set(context.instance.get_dynamic_partitions(CLIENTS_PARTITIONS_NAME))
    missing = set(requested) - existing
    return SensorResult(
        run_requests=[
            RunRequest(
                run_key=run_key(client_id, target),
                partition_key=client_id,
                tags={**client_tags(client_id, "migrate"), TARGET_TAG: target},
            )
            for client_id in requested
        ],
        dynamic_partitions_requests=[add_clients_request(missing)] if missing else [],
        cursor=cursor.encode(state),
    )
