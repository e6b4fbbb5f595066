"""`reprocess_dead_letters` job (manual, with run config) and its schedule.

The schedule runs by default (recovered clients' events come back without anyone
remembering to press a button); stop it in the UI (Automation) to hold reprocessing.
Manual runs take the asset's run config (`client_id`, `reason`, `max_attempts`, ...)
from the launchpad.
"""

# No `from __future__ import annotations`: Dagster reads these type hints at runtime.

from dagster import DefaultScheduleStatus, ScheduleDefinition, define_asset_job

from analytics_pipeline.defs.dead_letters.assets import dead_letter_reprocessing

reprocess_dead_letters_job = define_asset_job(
    name="reprocess_dead_letters",
    selection=[dead_letter_reprocessing],
    description="Replay recoverable dead letters, park permanent ones (run config: filters).",
)

dead_letters_schedule = ScheduleDefinition(
    name="reprocess_dead_letters_every_10_min",
    cron_schedule="*/10 * * * *",
    job=reprocess_dead_letters_job,
    default_status=DefaultScheduleStatus.RUNNING,
    description="Every 10 minutes: one unfiltered pass over shared_dead_letter.",
)

DEAD_LETTER_JOBS = [reprocess_dead_letters_job]
DEAD_LETTER_SCHEDULES = [dead_letters_schedule]
