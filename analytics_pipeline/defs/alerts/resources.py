"""`alerts`: where alerts go and when conditions deserve one (ALERT_* variables)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import replace

from pydantic import Field

from analytics_core.alerts.config import AlertSettings
from analytics_core.alerts.model import Alert
from analytics_core.alerts.sinks import Outcome, deliver, sinks_from_settings
from analytics_pipeline.resources.env_defaults import EnvDefaultsResource


@functools.cache
def process_alert_settings() -> AlertSettings:
    """ALERT_* read once per process (tests: `cache_clear()`)."""
    return AlertSettings.from_env()


class AlertsResource(EnvDefaultsResource):
    """Unset fields come from ALERT_* (analytics_core/alerts/__init__.py lists them)."""

    sinks: list[str] | None = Field(default=None, description="ALERT_SINKS when unset")
    webhook_url: str | None = Field(default=None, description="ALERT_WEBHOOK_URL when unset")
    webhook_format: str | None = Field(
        default=None, description="ALERT_WEBHOOK_FORMAT when unset (json or slack)"
    )
    webhook_timeout_s: float | None = Field(
        default=None, description="ALERT_WEBHOOK_TIMEOUT_S when unset"
    )
    stuck_client_minutes: float | None = Field(
        default=None, description="ALERT_STUCK_CLIENT_MINUTES when unset"
    )
    dead_letter_threshold: int | None = Field(
        default=None, description="ALERT_DEAD_LETTER_THRESHOLD when unset"
    )
    dead_letter_window_minutes: float | None = Field(
        default=None, description="ALERT_DEAD_LETTER_WINDOW_MINUTES when unset"
    )
    dagster_url: str | None = Field(default=None, description="ALERT_DAGSTER_URL when unset")

    def settings(self) -> AlertSettings:
        merged = self._overlay(process_alert_settings())
        return replace(merged, sinks=tuple(merged.sinks))

    def send(self, alerts: Sequence[Alert], logger: logging.Logger | None) -> list[Outcome]:
        """Deliver to the configured sinks; the log sink writes to `logger` (Dagster's)."""
        return deliver(alerts, sinks_from_settings(self.settings(), logger))
