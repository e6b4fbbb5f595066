"""`observe_provisioned_clients`: a client's events are observed as soon as it is provisioned.

Without it, `client_events` of a new client reads "Never observed" in the catalog, and its
reconciliation check has no result, until the hourly schedule first runs (up to an hour
after the client went live). After every successful run that materialized a client's
database (the provisioning sensor's `provision_client`, or the UI's Materialize of
`client_database`), this sensor requests one `reconcile_client` run for that client.
Invariants:
- one request per provisioning run (the run key names that run): a re-provisioned client is
  observed again; a daemon that evaluates the same run twice launches one reconciliation;
- runs that did not materialize a client's database request nothing, so a reconciliation's
  own success never triggers another.
"""

# No `from __future__ import annotations`: Dagster reads these type hints at runtime.

from collections.abc import Mapping, Set

from dagster import (
    AssetKey,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunStatusSensorContext,
    SkipReason,
    run_status_sensor,
)

from analytics_pipeline.defs.client_lifecycle.assets import client_database
from analytics_pipeline.defs.client_lifecycle.jobs import provision_client_job
from analytics_pipeline.defs.reconciliation.jobs import reconcile_tags, reconciliation_job
from analytics_pipeline.tags import PARTITION_TAG


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


@run_status_sensor(
    name="observe_provisioned_clients",
    run_status=DagsterRunStatus.SUCCESS,
    request_job=reconciliation_job,
    minimum_interval_seconds=10,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "After a client's provisioning succeeds, observe its events once (reconcile_client), "
        "so the catalog shows its table and check at once, not after the hourly schedule."
    ),
)
def observe_provisioned_clients(context: RunStatusSensorContext) -> RunRequest | SkipReason:
    run = context.dagster_run
    client = provisioned_client(run.job_name, run.asset_selection, run.tags)
    if client is None:
        return SkipReason(f"run {run.run_id} ({run.job_name}) provisioned no client")
    return RunRequest(
        run_key=f"observe-after:{run.run_id}",
        partition_key=client,
        tags=reconcile_tags(client),
    )
