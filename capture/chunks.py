"""Grouping a request's mapped events into Kafka messages (pure).

Contract v1 allows one JSON array of up to `MAX_BATCH_EVENTS` events per message, of at
most `MAX_MESSAGE_BYTES`. A request becomes as few messages as fit, in request order; each
message is acknowledged by Kafka as a whole (one event never spans two messages). An event
larger than the capture limit (`CAPTURE_MAX_EVENT_BYTES`) is rejected here.

The usual request fits one message: its events are encoded in one call, and when the
whole array is within the event limit no event can be over it, so sizes are not measured
one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from analytics_core.event_contract import MAX_BATCH_EVENTS, MAX_MESSAGE_BYTES
from capture.mapping import EventRejected, Mapped

_ENCODER = msgspec.json.Encoder()


@dataclass(slots=True)
class Message:
    value: bytes  # a contract v1 batch array
    event_ids: list[str]  # of the events it carries, in order


def pack(
    mapped: Mapped,
    max_event_bytes: int,
    *,
    max_events: int = MAX_BATCH_EVENTS,
    max_bytes: int = MAX_MESSAGE_BYTES,
) -> tuple[list[Message], list[EventRejected]]:
    """The Kafka messages of a request's events, and the events too large to send."""
    events = mapped.events
    if not events:
        return [], []
    if len(events) <= max_events:
        value = _ENCODER.encode(events)
        if len(value) <= min(max_bytes, max_event_bytes):
            return [Message(value, [e.event_id for e in events])], []
    messages: list[Message] = []
    rejected: list[EventRejected] = []
    encoded: list[bytes] = []
    ids: list[str] = []
    size = 2  # the enclosing brackets
    for event, index in zip(events, mapped.indices, strict=True):
        data = _ENCODER.encode(event)
        if len(data) > max_event_bytes:
            rejected.append(
                EventRejected(
                    index,
                    "event_too_large",
                    f"event is {len(data)} bytes once mapped; the limit is {max_event_bytes}",
                )
            )
            continue
        extra = len(data) + (1 if encoded else 0)
        if encoded and (len(encoded) >= max_events or size + extra > max_bytes):
            messages.append(Message(message_value(encoded), ids))
            encoded, ids, size, extra = [], [], 2, len(data)
        encoded.append(data)
        ids.append(event.event_id)
        size += extra
    if encoded:
        messages.append(Message(message_value(encoded), ids))
    return messages, rejected


def message_value(encoded: Sequence[bytes]) -> bytes:
    return b"[" + b",".join(encoded) + b"]"


def without(mapped: Mapped, event_ids: set[str]) -> Mapped:
    """The events whose ids are not in `event_ids`, in order."""
    keep = [i for i, e in enumerate(mapped.events) if e.event_id not in event_ids]
    return Mapped([mapped.events[i] for i in keep], [mapped.indices[i] for i in keep])
