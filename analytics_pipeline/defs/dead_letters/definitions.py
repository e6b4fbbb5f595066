"""Dead letters: the reprocessing asset, its job and schedule."""

from __future__ import annotations

from dagster import Definitions

from analytics_pipeline.defs.dead_letters.assets import DEAD_LETTER_ASSETS
from analytics_pipeline.defs.dead_letters.schedules import DEAD_LETTER_JOBS, DEAD_LETTER_SCHEDULES

defs = Definitions(
    assets=DEAD_LETTER_ASSETS, jobs=DEAD_LETTER_JOBS, schedules=DEAD_LETTER_SCHEDULES
)
