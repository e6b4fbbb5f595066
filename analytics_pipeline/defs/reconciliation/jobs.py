"""`reconcile_client`: the reconciliation check of one client, and its run tags."""

# No `from __future__ import annotations`: Dagster reads these type hints at runtime.

from dagster import AssetSelection, define_asset_job

from analytics_pipeline.defs.reconciliation.assets import reconciliation_check
from analytics_pipeline.tags import PARTITION_TAG, client_tags


def reconcile_tags(client_id: str) -> dict[str, str]:
    """Run tags of a reconciliation of one client.

    A checks-only job has no partitions definition of its own, so the partition travels as
    the `dagster/partition` tag (what the check's context reads, and what dagster.yaml's
    one-run-per-client limit keys on).
    """
    return {PARTITION_TAG: client_id, **client_tags(client_id, "reconcile")}


reconciliation_job = define_asset_job(
    name="reconcile_client",
    selection=AssetSelection.checks(reconciliation_check),
    description="Reconcile one client (its partition): the reconciliation asset check.",
)
