"""`client_schema`: the ClickHouse schema version of a client's database.

Materializing a partition calls `analytics_core.lifecycle.migrate`: pending migrations are
applied in version order and recorded with their checksums; an applied file that changed
(or disappeared) refuses the whole plan before anything runs, and the run fails with that
reason. Each client is its own partition, so one client's failure never stops another's.
"""

# No `from __future__ import annotations`: Dagster reads these type hints at runtime.

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from analytics_core import lifecycle, registry
from analytics_core.clickhouse import table_row_counts
from analytics_pipeline.assets.metadata import tables_metadata, versions_metadata
from analytics_pipeline.assets.provisioning import client_database
from analytics_pipeline.failures import TRANSIENT_RETRY, step_failure
from analytics_pipeline.partitions import clients_partitions
from analytics_pipeline.resources import (
    ClickHouseResource,
    PostgresMetadataResource,
    RedisResource,
    pipeline_settings,
)


@asset(
    partitions_def=clients_partitions,
    deps=[client_database],
    group_name="client_lifecycle",
    kinds={"clickhouse"},
    retry_policy=TRANSIENT_RETRY,
    description=(
        "The client's schema at the latest migration in clickhouse/migrations; "
        "materializing a partition applies that client's pending migrations."
    ),
)
def client_schema(
    context: AssetExecutionContext,
    postgres: PostgresMetadataResource,
    clickhouse: ClickHouseResource,
    redis: RedisResource,
) -> MaterializeResult:
    client_id = context.partition_key
    settings = pipeline_settings(postgres=postgres, clickhouse=clickhouse, redis=redis)
    outcome = lifecycle.migrate(
        settings,
        client_id,
        run_id=context.run.run_id,
        migrations_dir=clickhouse.migrations_path(),
    )
    if isinstance(outcome, lifecycle.StepFailed):
        raise step_failure(outcome, "migration")
    context.log.info(
        f"client {client_id}: applied {outcome.applied_versions or 'nothing'}, "
        f"schema version {outcome.schema_version}"
    )
    with postgres.connect() as conn:
        applied = registry.applied_versions(conn, client_id)
    ch = clickhouse.client()
    try:
        row_counts = table_row_counts(ch, outcome.database)
    finally:
        ch.close()
    return MaterializeResult(
        metadata={
            "client_id": MetadataValue.text(client_id),
            "database": MetadataValue.text(outcome.database),
            "schema_version": MetadataValue.int(outcome.schema_version),
            "applied_now": MetadataValue.json(outcome.applied_versions),
            **versions_metadata(applied),
            **tables_metadata(row_counts),
        }
    )
