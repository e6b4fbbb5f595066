"""The per-client lifecycle assets, partitioned by `clients`.

- `client_database`: a client's ClickHouse database, created by provisioning. Materializing a
  partition calls `analytics_core.lifecycle.provision`: database, base schema, every migration
  (recorded in schema_versions), status active, router cache invalidated, audit row with this
  run's id. On an active client it changes nothing. A failure has already marked the client
  failed (and audited) when the run fails with its reason.
- `client_schema`: the ClickHouse schema version of a client's database. Materializing a
  partition calls `analytics_core.lifecycle.migrate`: pending migrations are applied in
  version order and recorded with their checksums; an applied file that changed (or
  disappeared) refuses the whole plan before anything runs, and the run fails with that
  reason. Each client is its own partition, so one client's failure never stops another's.

Materializations carry Dagster's standard table metadata for the client's events_base
(`dagster/table_name`, `dagster/row_count`, `dagster/column_schema`) and a table of every
client table's rows (dlt's bookkeeping tables left out).
"""

# No `from __future__ import annotations`: Dagster reads these type hints at runtime.

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from analytics_core import lifecycle, registry
from analytics_core.events_table import EVENTS_TABLE
from analytics_pipeline.client_partition import live_client
from analytics_pipeline.defs.client_lifecycle.metadata import tables_metadata, versions_metadata
from analytics_pipeline.failures import TRANSIENT_RETRY, step_failure
from analytics_pipeline.partitions import clients_partitions
from analytics_pipeline.resources import (
    ClickHouseResource,
    PostgresMetadataResource,
    RedisResource,
    open_connections,
)
from analytics_pipeline.table_metadata import read_table_metadata

GROUP = "client_lifecycle"


@asset(
    partitions_def=clients_partitions,
    group_name=GROUP,
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
    client_id = live_client(context, "provisioning")
    with open_connections(postgres, clickhouse, redis=redis) as c:
        outcome = lifecycle.provision(
            c, client_id, run_id=context.run.run_id, migrations_dir=clickhouse.migrations_path()
        )
        if isinstance(outcome, lifecycle.StepFailed):
            raise step_failure(outcome, "provisioning")
        table = read_table_metadata(
            c.clickhouse_for(outcome.target), outcome.database, EVENTS_TABLE
        )
    context.log.info(
        f"client {client_id} active in {outcome.database} on ClickHouse target "
        f"{outcome.target}, schema version "
        f"{outcome.schema_version}" + (" (already active)" if outcome.was_active else "")
    )
    return MaterializeResult(
        metadata={
            "client_id": MetadataValue.text(client_id),
            "database": MetadataValue.text(outcome.database),
            "clickhouse_target": MetadataValue.text(outcome.target),
            "schema_version": MetadataValue.int(outcome.schema_version),
            "applied_versions": MetadataValue.json(outcome.applied_versions),
            "was_already_active": MetadataValue.bool(outcome.was_active),
            **table,
            **tables_metadata(outcome.tables),
        }
    )


@asset(
    partitions_def=clients_partitions,
    deps=[client_database],
    group_name=GROUP,
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
    client_id = live_client(context, "migration")
    with open_connections(postgres, clickhouse, redis=redis) as c:
        outcome = lifecycle.migrate(
            c, client_id, run_id=context.run.run_id, migrations_dir=clickhouse.migrations_path()
        )
        if isinstance(outcome, lifecycle.StepFailed):
            raise step_failure(outcome, "migration")
        applied = registry.applied_versions(c.registry, client_id)
        ch = c.clickhouse_for(outcome.target)
        row_counts = lifecycle.client_row_counts(ch, outcome.database)
        table = read_table_metadata(ch, outcome.database, EVENTS_TABLE)
    context.log.info(
        f"client {client_id}: applied {outcome.applied_versions or 'nothing'}, "
        f"schema version {outcome.schema_version}"
    )
    for line in outcome.healed:
        context.log.warning(
            f"client {client_id}: {line} - applied by an interrupted run; counted as applied"
        )
    return MaterializeResult(
        metadata={
            "client_id": MetadataValue.text(client_id),
            "database": MetadataValue.text(outcome.database),
            "clickhouse_target": MetadataValue.text(outcome.target),
            "schema_version": MetadataValue.int(outcome.schema_version),
            "applied_now": MetadataValue.json(outcome.applied_versions),
            "healed_statements": MetadataValue.json(list(outcome.healed)),
            **table,
            **versions_metadata(applied),
            **tables_metadata(row_counts),
        }
    )
