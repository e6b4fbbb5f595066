"""`client_database`: a client's ClickHouse database, created by provisioning.

Materializing a partition calls `analytics_core.lifecycle.provision`: database, base schema,
every migration (recorded in schema_versions), status active, router cache invalidated,
audit row with this run's id. On an active client it changes nothing. A failure has already
marked the client failed (and audited) when the run fails with its reason.
"""

# No `from __future__ import annotations`: Dagster reads these type hints at runtime.

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from analytics_core import lifecycle
from analytics_pipeline.assets.metadata import tables_metadata
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
    group_name="client_lifecycle",
    kinds={"clickhouse"},
    retry_policy=TRANSIENT_RETRY,
    description=(
        "The client's ClickHouse database with the base schema and every migration; "
        "materializing a partition provisions that client (idempotent)."
    ),
)
def client_database(
    context: AssetExecutionContext,
    postgres: PostgresMetadataResource,
    clickhouse: ClickHouseResource,
    redis: RedisResource,
) -> MaterializeResult:
    client_id = context.partition_key
    settings = pipeline_settings(postgres=postgres, clickhouse=clickhouse, redis=redis)
    outcome = lifecycle.provision(
        settings,
        client_id,
        run_id=context.run.run_id,
        migrations_dir=clickhouse.migrations_path(),
    )
    if isinstance(outcome, lifecycle.StepFailed):
        raise step_failure(outcome, "provisioning")
    context.log.info(
        f"client {client_id} active in {outcome.database}, schema version "
        f"{outcome.schema_version}" + (" (already active)" if outcome.was_active else "")
    )
    return MaterializeResult(
        metadata={
            "client_id": MetadataValue.text(client_id),
            "database": MetadataValue.text(outcome.database),
            "schema_version": MetadataValue.int(outcome.schema_version),
            "applied_versions": MetadataValue.json(outcome.applied_versions),
            "was_already_active": MetadataValue.bool(outcome.was_active),
            **tables_metadata(outcome.tables),
        }
    )
