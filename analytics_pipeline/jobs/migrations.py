"""`migrate_client`: applies pending ClickHouse migrations to one client (its partition)."""

from __future__ import annotations

from dagster import define_asset_job

from analytics_pipeline.assets.migrations import client_schema

migrate_client_job = define_asset_job(
    name="migrate_client",
    selection=[client_schema],
    description="Apply a client's pending ClickHouse migrations, in version order.",
)
