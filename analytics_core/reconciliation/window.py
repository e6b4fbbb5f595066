"""The accounting window and count keys: the contract between the router, which writes
accounting rows, and reconciliation, which reads them (pure, imported by both).

Invariants:
- a window is the start of an hour in Unix seconds (UTC); an event belongs to the window of
  the moment the router received it;
- a count key is `client_id|outcome|reason|window_start_unix`, outcome one of `ROUTED`,
  `DEAD_LETTERED`; client ids and reasons never contain `|` (naming rules and reason codes),
  so `parse_count_key(count_key(...))` gives the parts back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

WINDOW_SECONDS = 3600
ROUTED = "routed"
DEAD_LETTERED = "dead_lettered"


def window_of(received_ms: int) -> int:
    """The window of a receive time in Unix milliseconds."""
    return received_ms // 1000 // WINDOW_SECONDS * WINDOW_SECONDS


def hour_of(moment: datetime) -> int:
    """The window of an aware datetime."""
    return window_of(int(moment.timestamp()) * 1000)


def window_label(window: int) -> str:
    return datetime.fromtimestamp(window, UTC).strftime("%Y-%m-%dT%H:%MZ")


@dataclass(frozen=True, slots=True)
class CountKey:
    client_id: str
    outcome: str
    reason: str
    window: int


def count_key(client_id: str, outcome: str, reason: str, window: int) -> str:
    return f"{client_id}|{outcome}|{reason}|{window}"


def parse_count_key(key: str) -> CountKey | None:
    """The parts of a count key, or None when malformed."""
    parts = key.split("|")
    if len(parts) != 4 or parts[1] not in (ROUTED, DEAD_LETTERED):
        return None
    try:
        window = int(parts[3])
    except ValueError:
        return None
    return CountKey(parts[0], parts[1], parts[2], window)
