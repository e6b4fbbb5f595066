"""Alerts: the alerting sensors."""

from __future__ import annotations

from dagster import Definitions

from analytics_pipeline.defs.alerts.sensors import ALERT_SENSORS

defs = Definitions(sensors=ALERT_SENSORS)
