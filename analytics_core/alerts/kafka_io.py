"""The dead-letter topic for alerting: end offsets, and a bounded breakdown of new letters."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from analytics_core.dead_letter import header_map
from analytics_core.kafka_headers import readable_headers
from analytics_core.kafka_reads import BoundedRead, Span, partitions_of, reader_consumer, watermarks
from analytics_core.settings import KafkaSettings


def end_offsets(kafka: KafkaSettings) -> dict[int, int]:
    """partition -> end offset of the dead-letter topic (raises KafkaException on outage)."""
    topic = kafka.dead_letter_topic
    consumer = reader_consumer(kafka)
    try:
        partitions = partitions_of(consumer, topic)
        if partitions is None:
            return {}
        return {p: hi for p, (_lo, hi) in watermarks(consumer, topic, partitions).items()}
    finally:
        consumer.close()


@dataclass
class Breakdown:
    by_reason: Counter[str] = field(default_factory=Counter)
    by_client: Counter[str] = field(default_factory=Counter)
    read: int = 0


def breakdown(
    kafka: KafkaSettings,
    start: Mapping[int, int],
    end: Mapping[int, int],
    *,
    max_messages: int = 10_000,
    timeout_s: float = 10.0,
) -> Breakdown:
    """Reasons and clients of the letters in [start, end) per partition: the newest
    `max_messages` of each partition at most, for as long as letters keep coming."""
    out = Breakdown()
    spans = [Span(p, max(0, e - max_messages, start.get(p, 0)), e) for p, e in end.items()]
    if not any(s.size for s in spans):
        return out
    consumer = reader_consumer(kafka)
    try:
        read = BoundedRead(consumer, kafka.dead_letter_topic, spans, stall_timeout_s=timeout_s)
        for batch in read.batches(max_messages=max_messages):
            for msg in batch:
                h = header_map(readable_headers(msg))
                out.by_reason[h.get("dl-reason") or "unreadable_envelope"] += 1
                out.by_client[h.get("dl-client-id") or ""] += 1
        out.read = read.read
    finally:
        consumer.close()
    return out
