"""The dlt source of a landing zone: one resource per landing table, merged on its key.

`landing_zone_source(None)` builds the same source without a zone (it yields nothing): the
shape Dagster needs at definition time to declare one asset per resource. The real zone
and a `LoadReport` to fill are bound at run time.

Schema evolution is dlt's: new fields become new columns (`evolve` contract), nested
objects are flattened, lists become child tables, a value of a new type gets a variant
column. The lineage columns are typed up front so they never become variants.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dlt
from dlt.common.schema.typing import TTableSchemaColumns
from dlt.extract.resource import DltResource
from dlt.extract.source import DltSource

from analytics_core.batch.extract import extract_table
from analytics_core.batch.landing_zone import LandingZone
from analytics_core.batch.ledger import Ledger
from analytics_core.batch.report import LoadReport
from analytics_core.batch.tables import SOURCE_FILE, SOURCE_LINE, SOURCE_SEQ, TABLES, TableSpec

SOURCE_NAME = "landing_zone"


def _columns(spec: TableSpec) -> TTableSchemaColumns:
    return {
        spec.primary_key: {"data_type": "text", "nullable": False},
        SOURCE_FILE: {"data_type": "text", "nullable": False},
        SOURCE_LINE: {"data_type": "bigint", "nullable": False},
        SOURCE_SEQ: {"data_type": "bigint", "nullable": False, "dedup_sort": "desc"},
    }


def _table_resource(spec: TableSpec, zone: LandingZone | None, report: LoadReport) -> DltResource:
    def rows() -> Iterator[list[dict[str, Any]]]:
        if zone is None:
            return
        ledger = Ledger(dlt.current.resource_state())
        yield from extract_table(zone, spec, ledger, report.table(spec.name))

    return dlt.resource(
        rows,
        name=spec.name,
        table_name=spec.name,
        primary_key=spec.primary_key,
        write_disposition="merge",
        columns=_columns(spec),
    )


def landing_zone_source(zone: LandingZone | None, report: LoadReport | None = None) -> DltSource:
    bound = report if report is not None else LoadReport()
    resources = [_table_resource(spec, zone, bound) for spec in TABLES]

    @dlt.source(name=SOURCE_NAME)
    def landing_zone() -> list[DltResource]:
        return resources

    return landing_zone()
