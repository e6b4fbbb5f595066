"""Batch loads: the dlt assets, their per-client job and the hourly schedule."""

from __future__ import annotations

from dagster import Definitions

from analytics_pipeline.defs.batch_loads.assets import BATCH_ASSETS
from analytics_pipeline.defs.batch_loads.schedules import BATCH_JOBS, BATCH_SCHEDULES

defs = Definitions(assets=BATCH_ASSETS, jobs=BATCH_JOBS, schedules=BATCH_SCHEDULES)
