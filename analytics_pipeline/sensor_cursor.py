"""Sensor cursors: a small versioned JSON object; an unreadable cursor reads as empty.

Every sensor of the code location stores its state with this codec: `{"v": 1, ...body}`.
Starting from an empty cursor is safe: run keys are deterministic, Dagster never launches a
second run for a run key it has already launched from the same sensor, and the alert
sensors treat an empty cursor as a first tick (they set a baseline, they do not flood).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

VERSION = 1


def encode(body: Mapping[str, Any]) -> str:
    return json.dumps({**body, "v": VERSION}, sort_keys=True, separators=(",", ":"))


def decode(raw: str | None) -> dict[str, Any]:
    """The cursor body; {} for none, unreadable JSON or another version."""
    if not raw:
        return {}
    try:
        doc = json.loads(raw)
    except ValueError:
        return {}
    if not isinstance(doc, dict) or doc.get("v") != VERSION:
        return {}
    doc.pop("v")
    return doc


def clients_state(raw: str | None) -> dict[str, Any]:
    """The per-client state of a lifecycle sensor (`{"clients": {...}}`)."""
    body = decode(raw).get("clients")
    return body if isinstance(body, dict) else {}
