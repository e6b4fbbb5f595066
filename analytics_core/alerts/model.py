"""An alert and its wire formats (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

SOURCE = "analytics-pipeline"


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True)
class Alert:
    kind: str  # run_failure, asset_check_failed, client_stuck, dead_letter_growth
    severity: Severity
    title: str
    text: str
    dedupe_key: str  # the same condition always has the same key
    fields: Mapping[str, str | int | float | bool | None] = field(default_factory=dict)
    link: str | None = None
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


def json_payload(alert: Alert) -> dict[str, Any]:
    return {
        "source": SOURCE,
        "kind": alert.kind,
        "severity": alert.severity.value,
        "title": alert.title,
        "text": alert.text,
        "dedupe_key": alert.dedupe_key,
        "fields": dict(alert.fields),
        "link": alert.link,
        "at": alert.at.isoformat(),
    }


def slack_text(alert: Alert) -> str:
    icon = {Severity.INFO: ":information_source:", Severity.WARNING: ":warning:"}.get(
        alert.severity, ":rotating_light:"
    )
    lines = [f"{icon} *{alert.title}*", alert.text]
    details = ", ".join(f"{k}={v}" for k, v in alert.fields.items() if v not in (None, ""))
    if details:
        lines.append(details)
    if alert.link:
        lines.append(alert.link)
    return "\n".join(lines)


def slack_payload(alert: Alert) -> dict[str, Any]:
    """Slack incoming-webhook compatible (also Mattermost, Rocket.Chat...)."""
    return {"text": slack_text(alert)}


def one_line(alert: Alert) -> str:
    return f"[{alert.severity.value}] {alert.title}: {alert.text}"
