"""`reconciliation`: how windows are judged (RECONCILIATION_* variables)."""

from __future__ import annotations

import functools
from dataclasses import replace

from pydantic import Field

from analytics_core.reconciliation.run import ReconciliationOptions
from analytics_pipeline.resources.env_defaults import EnvDefaultsResource


@functools.cache
def process_reconciliation_options() -> ReconciliationOptions:
    """RECONCILIATION_* read once per process (tests: `cache_clear()`)."""
    return ReconciliationOptions.from_env()


class ReconciliationResource(EnvDefaultsResource):
    """Unset fields come from RECONCILIATION_* (analytics_core/reconciliation/__init__.py)."""

    grace_s: float | None = Field(default=None, description="RECONCILIATION_GRACE_S when unset")
    lookback_hours: float | None = Field(
        default=None, description="RECONCILIATION_LOOKBACK_HOURS when unset"
    )
    max_dead_letters: int | None = Field(
        default=None, description="RECONCILIATION_MAX_DEAD_LETTERS when unset"
    )
    groups: list[str] | None = Field(
        default=None, description="RECONCILIATION_CONSUMER_GROUPS when unset (router groups)"
    )

    def options(self) -> ReconciliationOptions:
        merged = self._overlay(process_reconciliation_options())
        return replace(merged, groups=tuple(merged.groups) if merged.groups else None)
