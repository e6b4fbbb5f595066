"""`reconcile_client`: observe one client's events and run their reconciliation check."""

# No `from __future__ import annotations`: Dagster reads these type hints at runtime.

from dagster import AssetSelection, define_asset_job

from analytics_pipeline.defs.reconciliation.assets import EVENTS_KEY
from analytics_pipeline.tags import PARTITION_TAG, client_tags


def reconcile_tags(client_id: str) -> dict[str, str]:
    """Run tags of a reconciliation of one client: its partition (`dagster/partition`, what
    the check's context reads and dagster.yaml's one-run-per-client limit keys on) and the
    lifecycle tags."""
    return {PARTITION_TAG: client_id, **client_tags(client_id, "reconcile")}


# Partitioned by clients (inferred from the observable asset), so the Jobs page offers the
# clients' partition picker and every run (UI, schedule) reconciles exactly one client.
reconciliation_job = define_asset_job(
    name="reconcile_client",
    selection=AssetSelection.assets(EVENTS_KEY),
    description="Reconcile one client (its partition): observe its events, run the check.",
)
