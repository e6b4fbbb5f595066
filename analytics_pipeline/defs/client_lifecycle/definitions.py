"""Client lifecycle: the per-client database and schema assets, their jobs and sensors."""

from __future__ import annotations

from dagster import Definitions

from analytics_pipeline.defs.client_lifecycle.assets import client_database, client_schema
from analytics_pipeline.defs.client_lifecycle.jobs import (
    deprovision_client_job,
    migrate_client_job,
    provision_client_job,
)
from analytics_pipeline.defs.client_lifecycle.sensors import migrations_sensor, provisioning_sensor

defs = Definitions(
    assets=[client_database, client_schema],
    jobs=[provision_client_job, migrate_client_job, deprovision_client_job],
    sensors=[provisioning_sensor, migrations_sensor],
)
