"""Alert settings from the environment (variables listed in the package docstring)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from analytics_core.settings import SettingsError, env_float, env_int, env_str

SINK_NAMES = ("log", "stdout")
FORMATS = ("json", "slack")


@dataclass(frozen=True)
class AlertSettings:
    sinks: tuple[str, ...] = ("log",)
    webhook_url: str = field(default="", repr=False)  # may embed a token (Slack hooks do)
    webhook_format: str = "json"
    webhook_timeout_s: float = 5.0
    stuck_client_minutes: float = 30.0
    dead_letter_threshold: int = 100
    dead_letter_window_minutes: float = 60.0
    dagster_url: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AlertSettings:
        e = os.environ if env is None else env
        sinks = tuple(s.strip() for s in env_str(e, "ALERT_SINKS", "log").split(",") if s.strip())
        unknown = [s for s in sinks if s not in SINK_NAMES]
        if unknown:
            raise SettingsError(
                f"ALERT_SINKS: unknown sink(s) {', '.join(unknown)}; use {', '.join(SINK_NAMES)}"
                " (the webhook sink is enabled by ALERT_WEBHOOK_URL)"
            )
        fmt = env_str(e, "ALERT_WEBHOOK_FORMAT", "json").lower()
        if fmt not in FORMATS:
            raise SettingsError(f"ALERT_WEBHOOK_FORMAT={fmt!r}: use json or slack")
        url = env_str(e, "ALERT_WEBHOOK_URL", "")
        if url and not url.startswith(("http://", "https://")):
            raise SettingsError("ALERT_WEBHOOK_URL must be an http:// or https:// URL")
        return cls(
            sinks=sinks,
            webhook_url=url,
            webhook_format=fmt,
            webhook_timeout_s=env_float(e, "ALERT_WEBHOOK_TIMEOUT_S", 5.0, minimum=0.1),
            stuck_client_minutes=env_float(e, "ALERT_STUCK_CLIENT_MINUTES", 30.0),
            dead_letter_threshold=env_int(e, "ALERT_DEAD_LETTER_THRESHOLD", 100, minimum=1),
            dead_letter_window_minutes=env_float(
                e, "ALERT_DEAD_LETTER_WINDOW_MINUTES", 60.0, minimum=1.0
            ),
            dagster_url=env_str(e, "ALERT_DAGSTER_URL", "").rstrip("/"),
        )
