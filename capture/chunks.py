"""Grouping a request's mapped events into Kafka messages (pure).

Contract v1 allows one JSON array of up to `MAX_BATCH_EVENTS` events per message, of at
most `MAX_MESSAGE_BYTES`. A request becomes as few messages as fit, in request order; each
message is acknowledged by Kafka as a whole (one event never spans two messages).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

from analytics_core.event_contract import MAX_BATCH_EVENTS, MAX_MESSAGE_BYTES


class Encoded(Protocol):
    @property
    def encoded(self) -> bytes: ...


E = TypeVar("E", bound=Encoded)


def chunk(
    events: Sequence[E],
    *,
    max_events: int = MAX_BATCH_EVENTS,
    max_bytes: int = MAX_MESSAGE_BYTES,
) -> list[list[E]]:
    chunks: list[list[E]] = []
    current: list[E] = []
    size = 2  # the enclosing brackets
    for ev in events:
        extra = len(ev.encoded) + (1 if current else 0)
        if current and (len(current) >= max_events or size + extra > max_bytes):
            chunks.append(current)
            current, size, extra = [], 2, len(ev.encoded)
        current.append(ev)
        size += extra
    if current:
        chunks.append(current)
    return chunks


def message_value(events: Sequence[Encoded]) -> bytes:
    return b"[" + b",".join(ev.encoded for ev in events) + b"]"
