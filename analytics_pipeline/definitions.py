"""The code location: assembles assets, jobs, sensors and resources (nothing else here)."""

from __future__ import annotations

from collections.abc import Mapping

from dagster import Definitions

from analytics_pipeline.assets.batch_loads import BATCH_ASSETS, BATCH_RESOURCES
from analytics_pipeline.assets.dead_letters import DEAD_LETTER_ASSETS
from analytics_pipeline.assets.migrations import client_schema
from analytics_pipeline.assets.provisioning import client_database
from analytics_pipeline.assets.reconciliation import (
    RECONCILIATION_ASSETS,
    RECONCILIATION_CHECKS,
    reconciliation_job,
    reconciliation_schedule,
)
from analytics_pipeline.jobs.deprovisioning import deprovision_client_job
from analytics_pipeline.jobs.migrations import migrate_client_job
from analytics_pipeline.jobs.provisioning import provision_client_job
from analytics_pipeline.jobs_trace import trace_event_job
from analytics_pipeline.resources import default_resources
from analytics_pipeline.schedules.batch_loads import BATCH_JOBS, BATCH_SCHEDULES
from analytics_pipeline.schedules.dead_letters import DEAD_LETTER_JOBS, DEAD_LETTER_SCHEDULES
from analytics_pipeline.sensors.alerts import ALERT_SENSORS
from analytics_pipeline.sensors.migrations import migrations_sensor
from analytics_pipeline.sensors.provisioning import provisioning_sensor


def make_definitions(resources: Mapping[str, object] | None = None) -> Definitions:
    """The Definitions; `resources` replaces default ones by key (tests, other deployments)."""
    return Definitions(
        assets=[
            client_database,
            client_schema,
            *RECONCILIATION_ASSETS,
            *BATCH_ASSETS,
            *DEAD_LETTER_ASSETS,
        ],
        asset_checks=RECONCILIATION_CHECKS,
        jobs=[
            provision_client_job,
            migrate_client_job,
            deprovision_client_job,
            reconciliation_job,
            trace_event_job,
            *BATCH_JOBS,
            *DEAD_LETTER_JOBS,
        ],
        schedules=[reconciliation_schedule, *BATCH_SCHEDULES, *DEAD_LETTER_SCHEDULES],
        sensors=[provisioning_sensor, migrations_sensor, *ALERT_SENSORS],
        resources={**default_resources(), **BATCH_RESOURCES, **(resources or {})},
    )


defs = make_definitions()
