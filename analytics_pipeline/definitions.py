"""The code location: merges the domains' definitions and adds the shared resources.

Entry point (workspace.yaml, `dagster api grpc -m analytics_pipeline.definitions -a defs`):
`defs`. Each domain under `defs/` lists its own assets, checks, jobs, schedules and sensors.
"""

from __future__ import annotations

from collections.abc import Mapping

from dagster import Definitions

from analytics_pipeline.defs.alerts import definitions as alerts
from analytics_pipeline.defs.batch_loads import definitions as batch_loads
from analytics_pipeline.defs.batch_loads.assets import BATCH_RESOURCES
from analytics_pipeline.defs.client_lifecycle import definitions as client_lifecycle
from analytics_pipeline.defs.dead_letters import definitions as dead_letters
from analytics_pipeline.defs.reconciliation import definitions as reconciliation
from analytics_pipeline.defs.trace import definitions as trace
from analytics_pipeline.resources import default_resources

DOMAINS = (client_lifecycle, batch_loads, dead_letters, reconciliation, alerts, trace)


def make_definitions(resources: Mapping[str, object] | None = None) -> Definitions:
    """The Definitions; `resources` replaces default ones by key (tests, other deployments)."""
    return Definitions.merge(
        *(domain.defs for domain in DOMAINS),
        Definitions(resources={**default_resources(), **BATCH_RESOURCES, **(resources or {})}),
    )


defs = make_definitions()
