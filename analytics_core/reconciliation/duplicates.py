"""Producer duplicates a merge removed: which routed copies are collapsed, not lost (pure).

A producer that sends the same event twice (a retry: same event id, in two Kafka messages)
gets two routed copies, both accounted by the router and both stored. `events_base` is a
ReplacingMergeTree on `(toDate(event_timestamp), event_name, event_id)`, so a merge keeps one
of them: afterwards the table has fewer rows than the router accounted, and nothing is lost.

Invariant: a copy is *collapsed* only when all of these hold, so a lost event is never
explained away:
- its message, read back from Kafka at the coordinates the router accounted, holds a valid
  event of the client at that batch index (`copies_in_message`);
- it has no row at its own coordinates and is no dead letter (`vacant_copies`);
- the table holds a row with its sort key (id, name, day) at other coordinates
  (`collapsed`): the event is stored, only this copy of it was merged away.
Replayed messages (`replay-*` headers) are not judged here: the router stores a replay only
when its event is not stored yet, and derives its identity from the origin, not from the
message's own coordinates.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from analytics_core.event_contract import Origin, ValidEvent, parse_message
from analytics_core.events_table import EventKey, event_key
from analytics_core.reconciliation.model import CollapsedCopy, RangeFinder
from analytics_core.reconciliation.reconcile import pick_window
from analytics_core.reconciliation.window import window_of

# (topic, partition, offset, batch index): where a copy was consumed; batch index None in a
# dead letter means the whole message.
Coordinates = tuple[str, int, int, int]
LetterKey = tuple[str, int, int, int | None]


@dataclass(frozen=True, slots=True)
class ReadMessage:
    """One message read back from Kafka, with what the check needs of it."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    timestamp_ms: int
    replay: bool  # carries replay-* headers


@dataclass(frozen=True, slots=True)
class RoutedCopy:
    coordinates: Coordinates
    key: EventKey
    window: int


def key_of(event: ValidEvent) -> EventKey:
    return event_key(str(uuid.UUID(event.event_id)), event.event_name, event.timestamp_ms)


def copies_in_message(msg: ReadMessage, client_id: str, ranges: RangeFinder) -> list[RoutedCopy]:
    """The client's valid events in a message inside a range that counted routed events of
    the client; the window is the range's (`pick_window`, as for rows)."""
    counted = ranges.find(msg.topic, msg.partition, msg.offset)
    if counted is None or msg.replay:
        return []
    window = pick_window(counted.windows, window_of(msg.timestamp_ms))
    origin = Origin(msg.topic, msg.partition, msg.offset)
    return [
        RoutedCopy((msg.topic, msg.partition, msg.offset, ev.batch_index), key_of(ev), window)
        for ev in parse_message(msg.value, origin)
        if isinstance(ev, ValidEvent) and ev.client_id == client_id
    ]


def vacant_copies(
    copies: Iterable[RoutedCopy],
    stored: Collection[Coordinates],
    letters: Collection[LetterKey],
) -> list[RoutedCopy]:
    """Copies with no row at their coordinates that were not dead-lettered either."""
    return [
        c
        for c in copies
        if c.coordinates not in stored
        and c.coordinates not in letters
        and (*c.coordinates[:3], None) not in letters
    ]


def collapsed(
    vacant: Iterable[RoutedCopy], stored_keys: Collection[EventKey]
) -> list[CollapsedCopy]:
    """The vacant copies whose event is stored (under other coordinates)."""
    return [CollapsedCopy(*c.coordinates, window=c.window) for c in vacant if c.key in stored_keys]
