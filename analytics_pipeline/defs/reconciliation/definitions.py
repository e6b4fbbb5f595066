"""Reconciliation: the observable routed-events asset with its check, the job, the schedule."""

from __future__ import annotations

from dagster import Definitions

from analytics_pipeline.defs.reconciliation.assets import client_events
from analytics_pipeline.defs.reconciliation.jobs import reconciliation_job
from analytics_pipeline.defs.reconciliation.resources import ReconciliationResource
from analytics_pipeline.defs.reconciliation.schedules import reconciliation_schedule

RESOURCES: dict[str, object] = {"reconciliation": ReconciliationResource()}

defs = Definitions(
    assets=[client_events],
    jobs=[reconciliation_job],
    schedules=[reconciliation_schedule],
)
