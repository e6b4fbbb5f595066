"""Batch loads: the dlt assets, their per-client job and the hourly schedule.

Built when the definitions load, not at import: dlt's declaration pipeline needs its working
directory (under the state dir, from the process's settings).
"""

from __future__ import annotations

from dagster import Definitions
from dagster_dlt import DagsterDltResource

from analytics_pipeline.defs.batch_loads.assets import build_batch_assets
from analytics_pipeline.defs.batch_loads.schedules import BATCH_JOBS, BATCH_SCHEDULES

# dagster-dlt's resource: runs a dlt pipeline and reports its materializations.
RESOURCES: dict[str, object] = {"dlt": DagsterDltResource()}


def build_defs(working_dir: str) -> Definitions:
    return Definitions(
        assets=[build_batch_assets(working_dir)], jobs=BATCH_JOBS, schedules=BATCH_SCHEDULES
    )
