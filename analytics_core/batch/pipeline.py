"""The per-client dlt pipeline: the client's own ClickHouse database, its own pipeline name.

dlt's ClickHouse destination writes into the database named in its credentials, so the
pipeline is built at run time from the client's registry row. An empty dataset name keeps
table names plain (`users`, `page_views`; dlt's own `_dlt_*` tables sit beside them). One
pipeline name per client keeps dlt state (the file ledger) apart; the local working
directory is disposable because state is restored from the destination.
"""

from __future__ import annotations

import os

import dlt
from dlt.destinations import clickhouse

from analytics_core.naming import validate_client_id, validate_identifier
from analytics_core.settings import ClickHouseSettings, Settings

PIPELINE_PREFIX = "batch_load__"


def telemetry_off_by_default() -> None:
    """dlt reads its telemetry switch from the environment only; default it to off (an
    explicit RUNTIME__DLTHUB_TELEMETRY wins). Called before a pipeline is made."""
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")


def pipeline_name_for(client_id: str) -> str:
    return PIPELINE_PREFIX + validate_client_id(client_id).replace("-", "_")


def clickhouse_destination(ch: ClickHouseSettings, database: str) -> clickhouse:
    return clickhouse(
        credentials={
            "host": ch.host,
            "port": ch.native_port,
            "http_port": ch.http_port,
            "username": ch.user,
            "password": ch.password,
            "database": validate_identifier(database),
            "secure": 1 if ch.secure else 0,
        },
        destination_name="clickhouse",
    )


def pipelines_dir(settings: Settings) -> str:
    return str(settings.state_dir / "dlt" / "pipelines")


def client_pipeline(
    destination: ClickHouseSettings, working_dir: str, client_id: str, database: str
) -> dlt.Pipeline:
    """The client's pipeline; `working_dir` holds dlt's disposable local state."""
    telemetry_off_by_default()
    return dlt.pipeline(
        pipeline_name=pipeline_name_for(client_id),
        destination=clickhouse_destination(destination, database),
        dataset_name="",
        pipelines_dir=working_dir,
    )
