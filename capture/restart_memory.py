"""What a capture process that stopped without answering had already written to Kafka.

A process killed between Kafka's acknowledgement and its 200 leaves events in Kafka that
their SDK never saw acknowledged; the SDK sends them again, to whichever process answers
next. At start, the event ids of the raw topic's last CAPTURE_RESTART_MEMORY_S are read
back and remembered as acknowledged (capture.retry_memory), so such a retry is answered
200 without a second copy. Every id read is in Kafka already, whoever wrote it, so
remembering it is never wrong; a message that is not contract JSON carries no id and is
skipped.

Bounded, newest first: each partition is read from the later of the window's start and
its last `READ_MESSAGES / partitions` messages (about 4 s of reading at most), and at most
CAPTURE_RETRY_MEMORY_EVENTS ids are kept, the oldest dropped first. The read also stops
when Kafka delivers nothing for a few seconds. A process that could not read (Kafka away
at start) starts without them and says so in its log.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import msgspec
from confluent_kafka import KafkaException

from analytics_core.kafka_reads import (
    BoundedRead,
    Span,
    partitions_of,
    reader_consumer,
    spans_since,
)
from analytics_core.settings import KafkaSettings

STALL_S = 5.0
READ_MESSAGES = 100_000  # messages read at most, over all partitions (the newest)


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
    """The messages written to `topic` in the last `window_s` seconds that carry ids, the
    newest `max_events` ids of them (blocking: run it off the event loop)."""
    since_ms = int((datetime.now(UTC) - timedelta(seconds=window_s)).timestamp() * 1000)
    kept: deque[Written] = deque()
    events = 0
    consumer = reader_consumer(kafka)
    try:
        partitions = partitions_of(consumer, topic)
        if partitions is None:
            return RecentlyWritten([], 0, f"topic {topic} is not available")
        per_partition = max(1, READ_MESSAGES // len(partitions))
        spans = [
            Span(s.partition, max(s.start, s.end - per_partition), s.end)
            for s in spans_since(consumer, topic, partitions, since_ms)
        ]
        read = BoundedRead(consumer, topic, spans, stall_timeout_s=STALL_S)
        for batch in read.batches(5000):
            for msg in batch:
                ids = event_ids_in(msg.value())
                if not ids:
                    continue
                kept.append(Written(ids, msg.partition() or 0, msg.offset() or 0))
                events += len(ids)
                while events > max_events and kept:
                    events -= len(kept.popleft().event_ids)
        problem = f"no message for {STALL_S:g} s before the end" if read.stalled else None
        return RecentlyWritten(list(kept), events, problem)
    except KafkaException as exc:
        return RecentlyWritten([], 0, f"Kafka unreachable: {exc}")
    finally:
        consumer.close()
