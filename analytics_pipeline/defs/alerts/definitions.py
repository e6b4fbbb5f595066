"""Alerts: the alerting sensors and where they send alerts."""

from __future__ import annotations

from dagster import Definitions

from analytics_pipeline.defs.alerts.resources import AlertsResource
from analytics_pipeline.defs.alerts.sensors import ALERT_SENSORS

RESOURCES: dict[str, object] = {"alerts": AlertsResource()}

defs = Definitions(sensors=ALERT_SENSORS)
