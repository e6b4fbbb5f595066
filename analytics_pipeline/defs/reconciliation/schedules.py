"""`reconciliation_schedule`: hourly, one reconciliation run per client partition."""

# No `from __future__ import annotations`: Dagster reads these type hints at runtime.

from collections.abc import Iterator

from dagster import (
    DefaultScheduleStatus,
    RunRequest,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from analytics_pipeline.defs.reconciliation.jobs import reconcile_tags, reconciliation_job
from analytics_pipeline.partitions import CLIENTS_PARTITIONS_NAME
from analytics_pipeline.tags import SWEEP_PRIORITY, priority


@schedule(
    name="reconciliation_schedule",
    job=reconciliation_job,
    cron_schedule="10 * * * *",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Hourly, ten minutes past: reconcile every client partition.",
)
def reconciliation_schedule(
    context: ScheduleEvaluationContext,
) -> Iterator[RunRequest | SkipReason]:
    keys = context.instance.get_dynamic_partitions(CLIENTS_PARTITIONS_NAME)
    if not keys:
        yield SkipReason("no client partitions")
        return
    stamp = context.scheduled_execution_time.strftime("%Y%m%dT%H%M")
    for key in sorted(keys):
        yield RunRequest(
            run_key=f"reconcile:{key}:{stamp}",
            partition_key=key,
            tags={**reconcile_tags(key), **priority(SWEEP_PRIORITY)},
        )
