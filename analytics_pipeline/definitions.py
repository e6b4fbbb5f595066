"""The code location: merges the domains' definitions and adds the resources.

Runs execute in process (`in_process_executor`): the lifecycle, reconciliation and trace work
is seconds of I/O, so spawning a process per step only added seconds and memory per run.

Entry point (workspace.yaml, `dagster api grpc -m analytics_pipeline.definitions -a defs`):
`defs`, loaded lazily (`@dg.definitions`), so importing this module reads no environment
and creates nothing; Dagster builds the definitions when it loads the code location, in
each process that needs them (code server, run worker). Each domain under `defs/` lists
its own assets, checks, jobs, schedules and sensors, and its own resources if any.
"""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg

from analytics_core.batch.pipeline import pipelines_dir
from analytics_core.settings import Settings
from analytics_pipeline.defs.alerts import definitions as alerts
from analytics_pipeline.defs.alerts.resources import process_alert_settings
from analytics_pipeline.defs.batch_loads import definitions as batch_loads
from analytics_pipeline.defs.client_lifecycle import definitions as client_lifecycle
from analytics_pipeline.defs.client_moves import definitions as client_moves
from analytics_pipeline.defs.dead_letters import definitions as dead_letters
from analytics_pipeline.defs.reconciliation import definitions as reconciliation
from analytics_pipeline.defs.reconciliation.resources import process_reconciliation_options
from analytics_pipeline.defs.trace import definitions as trace
from analytics_pipeline.resources import default_resources, process_settings


def make_definitions(
    resources: Mapping[str, object] | None = None, settings: Settings | None = None
) -> dg.Definitions:
    """The Definitions; `resources` replaces default ones by key (tests, other deployments).
    `settings` (default: the process's) only places dlt's working directory."""
    working_dir = pipelines_dir(settings or process_settings())
    return dg.Definitions.merge(
        client_lifecycle.defs,
        client_moves.defs,
        batch_loads.build_defs(working_dir),
        dead_letters.defs,
        reconciliation.defs,
        alerts.defs,
        trace.defs,
        dg.Definitions(
            # Every job runs its steps inside the run's own process: a run is one Python
            # process, not one plus one per step (each loading the whole code location).
            executor=dg.in_process_executor,
            resources={
                **default_resources(),
                **batch_loads.RESOURCES,
                **reconciliation.RESOURCES,
                **alerts.RESOURCES,
                **(resources or {}),
            },
        ),
    )


@dg.definitions
def defs() -> dg.Definitions:
    # Every variable the code location reads is checked as it loads: a bad one fails the
    # load with the message (the UI shows it on the code location), not a sensor or a run
    # hours later.
    process_settings()
    process_alert_settings()
    process_reconciliation_options()
    return make_definitions()
