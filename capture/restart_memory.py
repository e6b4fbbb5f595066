"""What a capture process that stopped without answering had already written to Kafka.

A process killed between Kafka's acknowledgement and its 200 leaves events in Kafka that
their SDK never saw acknowledged; the SDK sends them again, to whichever process answers
next. At start, the event ids of the raw topic's last CAPTURE_RESTART_MEMORY_S are read
back and remembered as acknowledged (capture.retry_memory), so such a retry is answered
200 without a second copy. Every id read is in Kafka already, whoever wrote it, so
remembering it is never wrong; a message that is not contract JSON carries no id and is
skipped.

Bounded: at most CAPTURE_RETRY_MEMORY_EVENTS messages are read and as many ids kept, and
the read stops when Kafka delivers nothing for a few seconds. A process that could not read
(Kafka away at start) starts without them and says so in its log.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import msgspec
from confluent_kafka import KafkaException, Message

from analytics_core.kafka_reads import ScanBounds, scan_topic
from analytics_core.settings import KafkaSettings

STALL_S = 5.0


class _WithId(msgspec.Struct):
    event_id: str | None = None


_IDS = msgspec.json.Decoder(list[_WithId] | _WithId)


def event_ids_in(value: bytes | None) -> list[str]:
    """The explicit event ids of a contract v1 message (pure); none for anything else."""
    if not value:
        return []
    try:
        doc = _IDS.decode(value)
    except (msgspec.DecodeError, RecursionError):
        return []
    items = doc if isinstance(doc, list) else [doc]
    return [item.event_id for item in items if item.event_id]


@dataclass(frozen=True, slots=True)
class Written:
    event_ids: list[str]
    partition: int
    offset: int


@dataclass
class RecentlyWritten:
    messages: list[Written]
    events: int
    problem: str | None  # why the read is incomplete (None: read to the end)


def read_recent(
    kafka: KafkaSettings, topic: str, window_s: float, max_events: int
) -> RecentlyWritten:
    """The messages written to `topic` in the last `window_s` seconds that carry ids
    (blocking: run it off the event loop)."""
    since = datetime.now(UTC) - timedelta(seconds=window_s)
    messages: list[Written] = []
    events = 0

    def visit(msg: Message) -> None:
        nonlocal events
        ids = event_ids_in(msg.value())
        if ids:
            messages.append(Written(ids, msg.partition() or 0, msg.offset() or 0))
            events += len(ids)

    bounds = ScanBounds(since, max_messages=max(1, max_events), stall_timeout_s=STALL_S)
    try:
        result = scan_topic(kafka, topic, bounds, visit)
    except KafkaException as exc:
        return RecentlyWritten([], 0, f"Kafka unreachable: {exc}")
    return RecentlyWritten(messages, events, None if result.complete else result.detail)
