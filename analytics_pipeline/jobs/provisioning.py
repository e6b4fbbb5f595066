"""`provision_client`: provisions one client (its partition) and reports its schema."""

from __future__ import annotations

from dagster import define_asset_job

from analytics_pipeline.assets.migrations import client_schema
from analytics_pipeline.assets.provisioning import client_database

# client_schema runs after client_database and finds nothing pending: provisioning already
# applied every migration. It is in the job so the UI shows the schema of a new client.
provision_client_job = define_asset_job(
    name="provision_client",
    selection=[client_database, client_schema],
    description="Provision a client: ClickHouse database, schema, status active.",
)
