"""`provisioning_sensor`: pending clients in PostgreSQL -> partitions -> provisioning runs.

Each tick:
1. a pending client whose id breaks the naming rules is marked failed with the reason (and
   audited) by `lifecycle.provision`, which refuses an invalid id before touching ClickHouse;
   it never gets a partition and never crashes the sensor;
2. the `clients` partitions follow the registry: one per valid client that is pending,
   active or failed; partitions of deprovisioned or unknown clients are removed;
3. one `provision_client` run is requested per pending client (see provisioning_plan).
"""

# No `from __future__ import annotations`: Dagster reads these type hints at runtime.

from dagster import (
    AddDynamicPartitionsRequest,
    DefaultSensorStatus,
    DeleteDynamicPartitionsRequest,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from analytics_core import lifecycle, registry
from analytics_core.clients import ClientStatus
from analytics_core.naming import client_id_problem
from analytics_pipeline.jobs.provisioning import provision_client_job
from analytics_pipeline.partitions import (
    CLIENTS_PARTITIONS_NAME,
    add_clients_request,
    delete_clients_request,
)
from analytics_pipeline.resources import (
    ClickHouseResource,
    PostgresMetadataResource,
    RedisResource,
    pipeline_settings,
)
from analytics_pipeline.run_history import run_key_state
from analytics_pipeline.sensors import cursor
from analytics_pipeline.sensors.provisioning_plan import (
    PendingClient,
    attempts_from_cursor,
    attempts_to_cursor,
    plan_provisioning,
)
from analytics_pipeline.tags import client_tags

PARTITIONED_STATUSES = frozenset({ClientStatus.PENDING, ClientStatus.ACTIVE, ClientStatus.FAILED})


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
    with postgres.connect() as conn:
        rows = registry.list_clients(conn)
    settings = pipeline_settings(postgres=postgres, clickhouse=clickhouse, redis=redis)
    valid = [r for r in rows if client_id_problem(r.client_id) is None]
    for row in rows:
        if row.status == ClientStatus.PENDING and client_id_problem(row.client_id) is not None:
            outcome = lifecycle.provision(settings, row.client_id)
            reason = outcome.reason if isinstance(outcome, lifecycle.StepFailed) else "?"
            context.log.warning(f"pending client {row.client_id!r} marked failed: {reason}")

    wanted = {r.client_id for r in valid if r.status in PARTITIONED_STATUSES}
    existing = set(context.instance.get_dynamic_partitions(CLIENTS_PARTITIONS_NAME))
    partition_requests: list[AddDynamicPartitionsRequest | DeleteDynamicPartitionsRequest] = []
    if wanted - existing:
        partition_requests.append(add_clients_request(wanted - existing))
    if existing - wanted:
        partition_requests.append(delete_clients_request(existing - wanted))

    pending = [
        PendingClient(r.client_id, r.updated_at.isoformat())
        for r in valid
        if r.status == ClientStatus.PENDING
    ]
    requests, attempts = plan_provisioning(
        pending,
        attempts_from_cursor(cursor.decode(context.cursor)),
        lambda key: run_key_state(context.instance, key),
    )
    return SensorResult(
        run_requests=[
            RunRequest(
                run_key=attempt.run_key(client_id),
                partition_key=client_id,
                tags=client_tags(client_id, "provision"),
            )
            for client_id, attempt in requests
        ],
        dynamic_partitions_requests=partition_requests,
        cursor=cursor.encode(attempts_to_cursor(attempts)),
    )
