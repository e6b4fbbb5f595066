"""The code location: assembles assets, jobs, sensors and resources (nothing else here)."""

from __future__ import annotations

from collections.abc import Mapping

from dagster import Definitions

from analytics_pipeline.assets.migrations import client_schema
from analytics_pipeline.assets.provisioning import client_database
from analytics_pipeline.jobs.deprovisioning import deprovision_client_job
from analytics_pipeline.jobs.migrations import migrate_client_job
from analytics_pipeline.jobs.provisioning import provision_client_job
from analytics_pipeline.resources import default_resources
from analytics_pipeline.sensors.migrations import migrations_sensor
from analytics_pipeline.sensors.provisioning import provisioning_sensor


def make_definitions(resources: Mapping[str, object] | None = None) -> Definitions:
    """The Definitions; `resources` replaces default ones by key (tests, other deployments)."""
    return Definitions(
        assets=[client_database, client_schema],
        jobs=[provision_client_job, migrate_client_job, deprovision_client_job],
        sensors=[provisioning_sensor, migrations_sensor],
        resources={**default_resources(), **(resources or {})},
    )


defs = make_definitions()
