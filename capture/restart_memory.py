"""What a capture process that stopped without answering had already written to Kafka.

A process killed between Kafka's acknowledgement and its 200 leaves events in Kafka that
their SDK never saw acknowledged; the SDK sends them again, to whichever process answers
next. At start, the event ids of the raw topic's last CAPTURE_RESTART_MEMORY_S are read
back and remembered as acknowledged (capture.retry_memory), so such a retry is answered
200 without a second copy. Every id read is in Kafka already, whoever wrote it, so
remembering it is never wrong; a message that is not contract JSON carries no id and is
skipped.

Bounded, newest first: the partitions are read backwards in steps of `STEP_MESSAGES`
messages each, from their ends towards the later of the window's start and their last
`READ_MESSAGES / partitions` messages, and the read stops as soon as it holds
`READ_EVENTS` ids, or CAPTURE_RETRY_MEMORY_EVENTS if fewer (the oldest beyond that are
dropped): a few seconds of reading at start, whatever the batch size. (Before, the whole
span was read forwards and most ids dropped again: after a benchmark of 50-event batches,
2 GB read, 30 s to start and 650 MiB of RSS, near the container's 768 MiB limit.) The
read also stops when Kafka delivers nothing for a few seconds. A process that could not
read (Kafka away at start) starts without them and says so in its log.
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
READ_EVENTS = 200_000  # ids kept at most (fewer with CAPTURE_RETRY_MEMORY_EVENTS)
STEP_MESSAGES = 500  # per partition and step, newest steps first


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
    messages: list[Written]  # oldest first
    events: int
    problem: str | None  # why the read is incomplete (None: read to the end)
    read: int = 0  # messages read


def read_recent(
    kafka: KafkaSettings, topic: str, window_s: float, max_events: int
) -> RecentlyWritten:
    """The messages written to `topic` in the last `window_s` seconds that carry ids, the
    newest `max_events` ids of them (blocking: run it off the event loop)."""
    since_ms = int((datetime.now(UTC) - timedelta(seconds=window_s)).timestamp() * 1000)
    max_events = min(max_events, READ_EVENTS)
    steps: list[list[Written]] = []  # newest step first
    events = read_count = 0
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
        problem = None
        while events < max_events and any(s.size for s in spans):
            step = [Span(s.partition, max(s.start, s.end - STEP_MESSAGES), s.end) for s in spans]
            spans = [Span(s.partition, s.start, t.start) for s, t in zip(spans, step, strict=True)]
            read = BoundedRead(consumer, topic, step, stall_timeout_s=STALL_S)
            written: list[Written] = []
            for batch in read.batches(500):
                read_count += len(batch)
                for msg in batch:
                    ids = event_ids_in(msg.value())
                    if ids:
                        written.append(Written(ids, msg.partition() or 0, msg.offset() or 0))
                        events += len(ids)
            steps.append(written)
            if read.stalled:
                problem = f"no message for {STALL_S:g} s before the end"
                break
        kept = deque(w for step_written in reversed(steps) for w in step_written)
        while events > max_events and kept:
            events -= len(kept.popleft().event_ids)
        return RecentlyWritten(list(kept), events, problem, read_count)
    except KafkaException as exc:
        return RecentlyWritten([], 0, f"Kafka unreachable: {exc}", read_count)
    finally:
        consumer.close()
