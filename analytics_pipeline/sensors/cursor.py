"""Sensor cursors: a small versioned JSON object; an unreadable cursor reads as empty.

Starting from an empty cursor is safe: run keys are deterministic, and Dagster never launches
a second run for a run key it has already launched from the same sensor.
"""

from __future__ import annotations

import json
from typing import Any

VERSION = 1


def decode(raw: str | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        doc = json.loads(raw)
    except ValueError:
        return {}
    if not isinstance(doc, dict) or doc.get("v") != VERSION:
        return {}
    body = doc.get("clients")
    return body if isinstance(body, dict) else {}


def encode(clients: dict[str, Any]) -> str:
    return json.dumps({"v": VERSION, "clients": clients}, sort_keys=True, separators=(",", ":"))
