"""Dagster's standard table metadata for a ClickHouse table of a client.

Every materialization of a per-client table asset carries `dagster/table_name` (database.table),
`dagster/row_count` (rows in the table now, not rows written by this run) and
`dagster/column_schema` (from system.columns, so columns added by migrations or by dlt's schema
evolution show). The UI shows them on the asset page and plots the row count per partition.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from clickhouse_connect.driver.client import Client
from dagster import MetadataValue, TableColumn, TableSchema

from analytics_core.clickhouse import table_columns, table_row_counts

# The keys of Dagster's TableMetadataSet (dagster/...), which the UI knows how to show.
TABLE_NAME = "dagster/table_name"
ROW_COUNT = "dagster/row_count"
COLUMN_SCHEMA = "dagster/column_schema"


def table_metadata(
    database: str, table: str, columns: Sequence[tuple[str, str]], rows: int | None
) -> dict[str, Any]:
    """The standard entries from what was read (pure); no row count for a missing table."""
    schema = TableSchema(columns=[TableColumn(name, kind) for name, kind in columns])
    out: dict[str, Any] = {
        TABLE_NAME: MetadataValue.text(f"{database}.{table}"),
        COLUMN_SCHEMA: MetadataValue.table_schema(schema),
    }
    if rows is not None:
        out[ROW_COUNT] = MetadataValue.int(rows)
    return out


def read_table_metadata(client: Client, database: str, table: str) -> dict[str, Any]:
    """The standard entries of one table, read from ClickHouse."""
    rows = table_row_counts(client, database).get(table)
    return table_metadata(database, table, table_columns(client, database, table), rows)
