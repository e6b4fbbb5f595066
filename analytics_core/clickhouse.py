"""ClickHouse connections (HTTP, via clickhouse-connect) and database-level DDL.

DDL helpers take the target's `cluster` ("" for one server): for a cluster the statement is
issued ON CLUSTER (analytics_core.migrations.cluster_ddl), so every replica gets it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from analytics_core.migrations.cluster_ddl import render
from analytics_core.naming import quote_identifier
from analytics_core.settings import ClickHouseSettings


def http_client(
    ch: ClickHouseSettings,
    *,
    database: str | None = None,
    timeout_s: int = 30,
    settings: dict[str, Any] | None = None,
) -> Client:
    return clickhouse_connect.get_client(
        host=ch.host,
        port=ch.http_port,
        username=ch.user,
        password=ch.password,
        secure=ch.secure,
        verify=ch.verify,
        ca_cert=ch.ca_cert or None,
        database=database or "default",
        connect_timeout=5,
        send_receive_timeout=timeout_s,
        settings=settings or {},
        autogenerate_session_id=False,
    )


def run_ddl(client: Client, statement: str, database: str, cluster: str = "") -> None:
    """One DDL statement with `database` as the current database, ON CLUSTER when the target
    is a cluster (tables are then qualified with `database` and engines replicated)."""
    client.command(render(statement, database, cluster), settings={"database": database})


def create_database(client: Client, database: str, cluster: str = "") -> None:
    sql = f"CREATE DATABASE IF NOT EXISTS {quote_identifier(database)}"
    client.command(render(sql, database, cluster))


def drop_database(client: Client, database: str, cluster: str = "") -> None:
    sql = f"DROP DATABASE IF EXISTS {quote_identifier(database)} SYNC"
    client.command(render(sql, database, cluster))


def database_exists(client: Client, database: str) -> bool:
    rows = client.query(
        "SELECT count() FROM system.databases WHERE name = {db:String}", parameters={"db": database}
    ).result_rows
    return bool(rows[0][0])


def table_row_counts(
    client: Client, database: str, *, exclude: Callable[[str], bool] | None = None
) -> dict[str, int]:
    """Rows per table (views have none), leaving out the tables `exclude` names."""
    rows = client.query(
        "SELECT name, total_rows FROM system.tables WHERE database = {db:String}"
        " AND total_rows IS NOT NULL ORDER BY name",
        parameters={"db": database},
    ).result_rows
    return {
        str(name): int(total) for name, total in rows if exclude is None or not exclude(str(name))
    }


def table_columns(client: Client, database: str, table: str) -> list[tuple[str, str]]:
    """(name, type) of every column of a table, in table order (MATERIALIZED/ALIAS included)."""
    rows = client.query(
        "SELECT name, type FROM system.columns WHERE database = {db:String}"
        " AND table = {t:String} ORDER BY position",
        parameters={"db": database, "t": table},
    ).result_rows
    return [(str(name), str(kind)) for name, kind in rows]
