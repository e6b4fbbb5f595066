"""Where alerts go: pluggable sinks with typed delivery results (never raise on delivery)."""

from __future__ import annotations

import json
import logging
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TextIO

from analytics_core.alerts.config import AlertSettings
from analytics_core.alerts.model import Alert, Severity, json_payload, one_line, slack_payload

log = logging.getLogger("analytics.alerts")


@dataclass(frozen=True, slots=True)
class Delivered:
    sink: str


@dataclass(frozen=True, slots=True)
class NotDelivered:
    sink: str
    reason: str


DeliveryResult = Delivered | NotDelivered


class AlertSink(Protocol):
    name: str

    def send(self, alert: Alert) -> DeliveryResult: ...


class LogSink:
    """Python logging (logger `analytics.alerts`); Dagster shows it in the sensor's logs."""

    name = "log"

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or log

    def send(self, alert: Alert) -> DeliveryResult:
        level = logging.ERROR if alert.severity is Severity.CRITICAL else logging.WARNING
        if alert.severity is Severity.INFO:
            level = logging.INFO
        self.logger.log(level, "ALERT %s", one_line(alert))
        return Delivered(self.name)


class StdoutSink:
    """One JSON document per line on stdout (for log shippers)."""

    name = "stdout"

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream

    def send(self, alert: Alert) -> DeliveryResult:
        out = self.stream or sys.stdout
        out.write(json.dumps(json_payload(alert), sort_keys=True) + "\n")
        out.flush()
        return Delivered(self.name)


class WebhookSink:
    """HTTP POST of a JSON body: the full alert (`json`) or Slack's {"text": ...} (`slack`)."""

    name = "webhook"

    def __init__(self, url: str, fmt: str = "json", timeout_s: float = 5.0) -> None:
        self.url = url
        self.fmt = fmt
        self.timeout_s = timeout_s

    def body(self, alert: Alert) -> bytes:
        payload = slack_payload(alert) if self.fmt == "slack" else json_payload(alert)
        return json.dumps(payload).encode("utf-8")

    def send(self, alert: Alert) -> DeliveryResult:
        request = urllib.request.Request(
            self.url,
            data=self.body(alert),
            headers={"Content-Type": "application/json", "User-Agent": "analytics-alerts/1"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            return NotDelivered(self.name, f"HTTP {exc.code} from the webhook")
        except (urllib.error.URLError, OSError) as exc:
            return NotDelivered(self.name, f"webhook unreachable: {exc}")
        if not 200 <= status < 300:
            return NotDelivered(self.name, f"HTTP {status} from the webhook")
        return Delivered(self.name)


def sinks_from_settings(
    settings: AlertSettings, logger: logging.Logger | None = None
) -> list[AlertSink]:
    sinks: list[AlertSink] = []
    for name in settings.sinks:
        if name == "log":
            sinks.append(LogSink(logger))
        elif name == "stdout":
            sinks.append(StdoutSink())
    if settings.webhook_url:
        sinks.append(
            WebhookSink(settings.webhook_url, settings.webhook_format, settings.webhook_timeout_s)
        )
    return sinks


@dataclass(frozen=True)
class Outcome:
    alert: Alert
    results: tuple[DeliveryResult, ...]

    @property
    def failures(self) -> list[NotDelivered]:
        return [r for r in self.results if isinstance(r, NotDelivered)]


def deliver(alerts: Sequence[Alert], sinks: Sequence[AlertSink]) -> list[Outcome]:
    """Send every alert to every sink; a sink that raises counts as not delivered."""
    outcomes = []
    for alert in alerts:
        results: list[DeliveryResult] = []
        for sink in sinks:
            try:
                results.append(sink.send(alert))
            except Exception as exc:  # a broken sink must not stop the others
                results.append(NotDelivered(sink.name, f"{type(exc).__name__}: {exc}"))
        outcomes.append(Outcome(alert, tuple(results)))
    return outcomes
