"""Reconciliation: the routed-events asset, its check, the job and the hourly schedule."""

from __future__ import annotations

from dagster import Definitions

from analytics_pipeline.defs.reconciliation.assets import client_events, reconciliation_check
from analytics_pipeline.defs.reconciliation.jobs import reconciliation_job
from analytics_pipeline.defs.reconciliation.resources import ReconciliationResource
from analytics_pipeline.defs.reconciliation.schedules import reconciliation_schedule

RESOURCES: dict[str, object] = {"reconciliation": ReconciliationResource()}

defs = Definitions(
    assets=[client_events],
    asset_checks=[reconciliation_check],
    jobs=[reconciliation_job],
    schedules=[reconciliation_schedule],
)
