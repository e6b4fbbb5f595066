"""`observe_provisioned_clients`: a client's events are observed as soon as it is provisioned.

Without it, `client_events` of a new client reads "Never observed" in the catalog, and its
reconciliation check has no result, until the hourly schedule first runs (up to an hour
after the client went live). After every successful run that materialized a client's
database (the provisioning sensor's `provision_client`, or the UI's Materialize of
`client_database`), this sensor requests one `reconcile_client` run for that client.
Invariants:
- one request per provisioning run (the run key names that run): a re-provisioned client is
  observed again; a run seen by two evaluations (the cursor's overlap) launches one
  reconciliation;
- every provisioning that succeeded since the last evaluation is answered in this one: a
  hundred clients provisioned together are all observed within a tick (a run-status sensor
  answers one run per tick, so such a burst used to wait minutes for its observations);
- runs that did not materialize a client's database request nothing, so a reconciliation's
  own success never triggers another; nor does a client whose partition is gone
  (deprovisioned since): its observation could only fail.
"""

# No `from __future__ import annotations`: Dagster reads these type hints at runtime.

from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from dagster import (
    AssetKey,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from analytics_pipeline import sensor_cursor
from analytics_pipeline.defs.client_lifecycle.assets import client_database
from analytics_pipeline.defs.client_lifecycle.jobs import provision_client_job
from analytics_pipeline.defs.reconciliation.jobs import reconcile_tags, reconciliation_job
from analytics_pipeline.partitions import CLIENTS_PARTITIONS_NAME
from analytics_pipeline.tags import FIRST_OBSERVATION_PRIORITY, PARTITION_TAG, priority

# Runs read per evaluation, oldest first; the rest wait for the next one.
RUNS_PER_TICK = 500
# Re-read this far behind the cursor: a run's end is stamped by the process that ran it, so
# one may be recorded just after an evaluation read past its time (run keys dedupe).
OVERLAP = timedelta(seconds=30)
# With no cursor (first evaluation): provisionings this recent are still observed.
FIRST_LOOKBACK = timedelta(hours=1)


def provisioned_client(
    job_name: str, asset_selection: Set[AssetKey] | None, tags: Mapping[str, str]
) -> str | None:
    """The client a successful run provisioned (pure): its partition, when the run was the
    provisioning job or a run whose assets included the client's database; else None."""
    client = tags.get(PARTITION_TAG)
    if not client:
        return None
    if job_name == provision_client_job.name:
        return client
    if asset_selection is not None and client_database.key in asset_selection:
        return client
    return None


@dataclass(frozen=True)
class FinishedRun:
    """What the sensor reads of a successful run."""

    run_id: str
    job_name: str
    asset_selection: Set[AssetKey] | None
    tags: Mapping[str, str]
    updated_at: datetime


def observation_requests(
    runs: Sequence[FinishedRun], partition_exists: Callable[[str], bool]
) -> list[RunRequest]:
    """One reconcile request per run that provisioned a client whose partition still exists
    (pure but for `partition_exists`)."""
    requests = []
    for run in runs:
        client = provisioned_client(run.job_name, run.asset_selection, run.tags)
        if client is None or not partition_exists(client):
            continue
        requests.append(
            RunRequest(
                run_key=f"observe-after:{run.run_id}",
                partition_key=client,
                tags={**reconcile_tags(client), **priority(FIRST_OBSERVATION_PRIORITY)},
            )
        )
    return requests


def read_from(cursor: str | None, now: datetime) -> datetime:
    """Where an evaluation starts reading: the cursor's time minus the overlap, or the first
    look-back when the cursor is empty or unreadable."""
    after = sensor_cursor.decode(cursor).get("after")
    if not isinstance(after, (int, float)):
        return now - FIRST_LOOKBACK
    return datetime.fromtimestamp(after, UTC) - OVERLAP


def next_cursor(runs: Sequence[FinishedRun], since: datetime, now: datetime) -> datetime:
    """Read up to now, unless the evaluation read a full page: then up to its last run."""
    if len(runs) >= RUNS_PER_TICK:
        return max(r.updated_at for r in runs)
    return max(now, since + OVERLAP)


@sensor(
    name="observe_provisioned_clients",
    job=reconciliation_job,
    minimum_interval_seconds=10,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "After a client's provisioning succeeds, observe its events once (reconcile_client), "
        "so the catalog shows its table and check at once, not after the hourly schedule."
    ),
)
def observe_provisioned_clients(context: SensorEvaluationContext) -> SensorResult:
    now = datetime.now(UTC)
    since = read_from(context.cursor, now)
    records = context.instance.get_run_records(
        filters=RunsFilter(statuses=[DagsterRunStatus.SUCCESS], updated_after=since),
        limit=RUNS_PER_TICK,
        order_by="update_timestamp",
        ascending=True,
    )
    runs = [
        FinishedRun(
            r.dagster_run.run_id,
            r.dagster_run.job_name,
            r.dagster_run.asset_selection,
            r.dagster_run.tags,
            r.update_timestamp,
        )
        for r in records
    ]

    def partition_exists(client: str) -> bool:
        return context.instance.has_dynamic_partition(CLIENTS_PARTITIONS_NAME, client)

    requests = observation_requests(runs, partition_exists)
    cursor = sensor_cursor.encode({"after": next_cursor(runs, since, now).timestamp()})
    if not requests:
        return SensorResult(
            skip_reason=SkipReason(f"no provisioning succeeded since {since:%H:%M:%S} UTC"),
            cursor=cursor,
        )
    return SensorResult(run_requests=requests, cursor=cursor)
