"""Bounded reads of a Kafka topic: from a point in time to the end offsets seen at start
(`scan_topic`), or a given set of offsets (`read_messages`).

Used to find dead letters (trace, reconciliation, alerts) and, by the router, to fetch
the original bytes of events it dead-letters after ClickHouse rejected them. It never
joins a consumer group (partitions are assigned explicitly, nothing is committed), so it
can run at any time beside the router and the reprocessing job. Scan bounds: `since` (found
with offsets_for_times), the end offsets at start (newer messages are left alone),
`max_messages`, and a stall timeout; the result says whether the scan was complete.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from analytics_core.settings import KafkaSettings


@dataclass(frozen=True)
class ScanBounds:
    since: datetime
    max_messages: int = 200_000
    stall_timeout_s: float = 15.0


@dataclass
class ScanResult:
    read: int = 0
    complete: bool = True
    detail: str = ""
    # partition -> (first offset read, end offset at start)
    partitions: dict[int, tuple[int, int]] = field(default_factory=dict)


Visitor = Callable[[Message], None]


def _consumer(kafka: KafkaSettings, extra: dict[str, object] | None = None) -> Consumer:
    return Consumer(
        (extra or {})
        | {
            "bootstrap.servers": kafka.bootstrap_servers,
            # Never used to commit; required by librdkafka.
            "group.id": f"scan-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "fetch.max.bytes": 52428800,
        }
    )


def scan_topic(kafka: KafkaSettings, topic: str, bounds: ScanBounds, visit: Visitor) -> ScanResult:
    """Call `visit` for each message of `topic` produced since `bounds.since` (bounded).

    Raises KafkaException when the broker can not be reached at all.
    """
    result = ScanResult()
    consumer = _consumer(kafka)
    try:
        meta = consumer.list_topics(topic, timeout=10)
        tmeta = meta.topics.get(topic)
        if tmeta is None or tmeta.error is not None:
            result.complete = False
            result.detail = f"topic {topic} is not available"
            return result
        since_ms = int(bounds.since.timestamp() * 1000)
        parts = sorted(tmeta.partitions)
        starts = consumer.offsets_for_times(
            [TopicPartition(topic, p, since_ms) for p in parts], timeout=10
        )
        assign: list[TopicPartition] = []
        ends: dict[int, int] = {}
        for tp in starts:
            lo, hi = consumer.get_watermark_offsets(
                TopicPartition(topic, tp.partition), timeout=10, cached=False
            )
            start = tp.offset if tp.offset >= 0 else hi  # -1: nothing at or after `since`
            start = max(start, lo)
            result.partitions[tp.partition] = (start, hi)
            if start < hi:
                ends[tp.partition] = hi
                assign.append(TopicPartition(topic, tp.partition, start))
        if not assign:
            return result
        consumer.assign(assign)
        last_progress = time.monotonic()
        while ends:
            if result.read >= bounds.max_messages:
                result.complete = False
                result.detail = (
                    f"stopped after {bounds.max_messages} messages; "
                    f"{len(ends)} partition(s) not read to the end"
                )
                break
            msgs = consumer.consume(
                num_messages=min(5000, bounds.max_messages - result.read), timeout=0.5
            )
            progressed = False
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(err)
                partition: int = msg.partition()  # type: ignore[assignment]
                offset: int = msg.offset()  # type: ignore[assignment]
                end = ends.get(partition)
                if end is None or offset >= end:
                    continue
                progressed = True
                result.read += 1
                visit(msg)
                if offset + 1 >= end:
                    del ends[partition]
            done = [
                tp.partition
                for tp in consumer.position([TopicPartition(topic, p) for p in list(ends)])
                if tp.offset >= 0 and tp.offset >= ends[tp.partition]
            ]
            for p in done:
                ends.pop(p, None)
            if progressed:
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > bounds.stall_timeout_s:
                result.complete = False
                result.detail = (
                    f"no messages delivered for {bounds.stall_timeout_s:.0f}s before the end of "
                    f"partitions {sorted(ends)}"
                )
                break
        return result
    finally:
        consumer.close()


def read_messages(
    kafka: KafkaSettings,
    topic: str,
    wanted: Mapping[int, Collection[int]],
    *,
    stall_timeout_s: float = 15.0,
) -> dict[tuple[int, int], bytes | None]:
    """The values of the messages at `wanted` offsets ({partition: offsets}).

    Offsets no longer in the topic (retention) are absent from the result. Raises
    KafkaException when the broker can not be reached or stops delivering.
    """
    remaining = {p: set(offsets) for p, offsets in wanted.items() if offsets}
    found: dict[tuple[int, int], bytes | None] = {}
    if not remaining:
        return found
    last = {p: max(offsets) for p, offsets in remaining.items()}
    consumer = _consumer(kafka, {"enable.partition.eof": True})
    try:
        consumer.assign([TopicPartition(topic, p, min(o)) for p, o in remaining.items()])
        last_progress = time.monotonic()
        while remaining:
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        remaining.pop(msg.partition(), None)  # type: ignore[arg-type]
                        continue
                    raise KafkaException(err)
                partition: int = msg.partition()  # type: ignore[assignment]
                offset: int = msg.offset()  # type: ignore[assignment]
                last_progress = time.monotonic()
                left = remaining.get(partition)
                if left is None:
                    continue
                if offset in left:
                    found[(partition, offset)] = msg.value()
                    left.discard(offset)
                if not left or offset >= last[partition]:
                    del remaining[partition]
            if remaining and time.monotonic() - last_progress > stall_timeout_s:
                raise KafkaException(
                    KafkaError(
                        KafkaError._TIMED_OUT,
                        f"no messages for {stall_timeout_s:.0f}s from {topic} partitions "
                        f"{sorted(remaining)}",
                    )
                )
        return found
    finally:
        consumer.close()
