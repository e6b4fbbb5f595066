"""The dead-letter topic for alerting: end offsets, and a bounded breakdown of new letters."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, TopicPartition

from analytics_core.dead_letter import header_map
from analytics_core.settings import KafkaSettings


def _consumer(kafka: KafkaSettings) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": kafka.bootstrap_servers,
            "group.id": f"alerts-{uuid.uuid4().hex[:12]}",  # never commits
            "enable.auto.commit": False,
        }
    )


def end_offsets(kafka: KafkaSettings) -> dict[int, int]:
    """partition -> end offset of the dead-letter topic (raises KafkaException on outage)."""
    topic = kafka.dead_letter_topic
    consumer = _consumer(kafka)
    try:
        meta = consumer.list_topics(topic, timeout=10)
        tmeta = meta.topics.get(topic)
        if tmeta is None or tmeta.error is not None:
            return {}
        out = {}
        for p in sorted(tmeta.partitions):
            _lo, hi = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            out[p] = hi
        return out
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
    """Reasons and clients of the letters in [start, end) per partition (at most N read)."""
    topic = kafka.dead_letter_topic
    out = Breakdown()
    todo = {p: e for p, e in end.items() if e > start.get(p, 0)}
    if not todo:
        return out
    consumer = _consumer(kafka)
    try:
        consumer.assign(
            [
                TopicPartition(topic, p, max(0, e - max_messages, start.get(p, 0)))
                for p, e in todo.items()
            ]
        )
        deadline = time.monotonic() + timeout_s
        while todo and out.read < max_messages and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        deadline = 0.0
                    continue
                p: int = msg.partition()  # type: ignore[assignment]
                o: int = msg.offset()  # type: ignore[assignment]
                stop = todo.get(p)
                if stop is None or o >= stop:
                    continue
                h = header_map(msg.headers())  # type: ignore[arg-type]
                out.by_reason[h.get("dl-reason") or "unreadable_envelope"] += 1
                out.by_client[h.get("dl-client-id") or ""] += 1
                out.read += 1
                if o + 1 >= stop:
                    del todo[p]
    finally:
        consumer.close()
    return out
