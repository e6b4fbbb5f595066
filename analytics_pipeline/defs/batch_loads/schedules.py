"""`batch_load_clients` job and its hourly schedule: one run per active client.

Each tick requests one partition run per client that is active, has a batch source and
already has its `clients` partition (the provisioning sensor adds it); other clients are
left out with a log line. Run keys include the tick time, so a tick never launches the
same client twice and a later tick loads again (idempotent: only new files load).
"""

# No `from __future__ import annotations`: Dagster reads these type hints at runtime.

from collections.abc import Iterator

from dagster import (
    AssetSelection,
    DefaultScheduleStatus,
    RunRequest,
    ScheduleEvaluationContext,
    SkipReason,
    define_asset_job,
    schedule,
)

from analytics_core import registry
from analytics_core.clients import ClientStatus
from analytics_pipeline.defs.batch_loads.assets import BATCH_ASSET_KEYS
from analytics_pipeline.partitions import CLIENTS_PARTITIONS_NAME
from analytics_pipeline.resources import PostgresMetadataResource

batch_load_clients_job = define_asset_job(
    name="batch_load_clients",
    selection=AssetSelection.assets(*BATCH_ASSET_KEYS),  # partitioned by clients, inferred
    description="Load new landing-zone files of one client (its partition) with dlt.",
)


@schedule(
    name="batch_loads_hourly",
    cron_schedule="5 * * * *",
    job=batch_load_clients_job,
    default_status=DefaultScheduleStatus.RUNNING,
    description="Every hour: a batch load run for every active client with a batch source.",
)
def batch_loads_schedule(
    context: ScheduleEvaluationContext, postgres: PostgresMetadataResource
) -> Iterator[RunRequest | SkipReason]:
    with postgres.connect() as conn:
        active = registry.list_clients(conn, [ClientStatus.ACTIVE])
    partitions = set(context.instance.get_dynamic_partitions(CLIENTS_PARTITIONS_NAME))
    tick = context.scheduled_execution_time.isoformat() if context.scheduled_execution_time else ""
    requested = 0
    for row in active:
        if not row.batch_source_url:
            continue
        if row.client_id not in partitions:
            context.log.info(f"client {row.client_id} has no partition yet; next tick")
            continue
        requested += 1
        yield RunRequest(run_key=f"batch:{row.client_id}:{tick}", partition_key=row.client_id)
    if not requested:
        yield SkipReason("no active client with a batch source and a partition")


BATCH_JOBS = [batch_load_clients_job]
BATCH_SCHEDULES = [batch_loads_schedule]
