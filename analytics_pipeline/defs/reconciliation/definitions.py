"""Reconciliation: the observable routed-events asset with its check, the job, the schedule
and the sensor that observes a client once it is provisioned."""

from __future__ import annotations

from dagster import Definitions

from analytics_pipeline.defs.reconciliation.assets import client_events
from analytics_pipeline.defs.reconciliation.jobs import reconciliation_job
from analytics_pipeline.defs.reconciliation.resources import ReconciliationResource
from analytics_pipeline.defs.reconciliation.schedules import reconciliation_schedule
from analytics_pipeline.defs.reconciliation.sensors import observe_provisioned_clients

RESOURCES: dict[str, object] = {"reconciliation": ReconciliationResource()}

defs = Definitions(
    assets=[client_events],
    jobs=[reconciliation_job],
    schedules=[reconciliation_schedule],
    sensors=[observe_provisioned_clients],
)
