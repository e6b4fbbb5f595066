"""Bounded reads of a Kafka topic: the one read loop every non-router reader uses.

A read covers fixed spans, one per partition: [start, end) where `end` is fixed when the
read is planned (usually the end offset at that moment). So a read always terminates,
however fast others keep writing; newer messages are left for the next read. Partitions
are assigned explicitly; whether anything is committed is the caller's business (the
dead-letter reprocessor commits through its group, the scans never do).

Callers:
- `scan_topic`: messages produced since a time (trace, reconciliation), bounded by a count
  and a stall timeout; the result says whether the scan was complete;
- `read_offsets` / `read_messages`: exact offsets (the router's way back to the original
  of a rejected row, trace's raw copies); a stall is an error;
- `BoundedRead.batches`: chunks of a span set (dead-letter reprocessing, alert breakdowns).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from confluent_kafka import (
    OFFSET_INVALID,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from analytics_core import kafka_clients
from analytics_core.settings import KafkaSettings


@dataclass(frozen=True, slots=True)
class Span:
    partition: int
    start: int
    end: int  # exclusive

    @property
    def size(self) -> int:
        return max(0, self.end - self.start)


def reader_consumer(kafka: KafkaSettings, **overrides: Any) -> Consumer:
    """A consumer for explicit assignment. Its group id is random and never committed to,
    so a read can run at any time beside the router and the reprocessing job."""
    conf: dict[str, Any] = {
        "enable.auto.offset.store": False,
        # Bounded prefetch: librdkafka's defaults queue up to 64 MiB per partition ahead of
        # the reader, which a reader of six partitions of large messages fills.
        "queued.max.messages.kbytes": 4096,
        "fetch.max.bytes": 8388608,
    }
    conf.update(overrides)
    return kafka_clients.consumer(kafka, f"read-{uuid.uuid4().hex[:12]}", **conf)


def partitions_of(consumer: Consumer, topic: str) -> list[int] | None:
    """The topic's partitions, or None when the topic does not exist (or errs)."""
    meta = consumer.list_topics(topic, timeout=10)
    tmeta = meta.topics.get(topic)
    if tmeta is None or tmeta.error is not None:
        return None
    return sorted(tmeta.partitions)


def watermarks(
    consumer: Consumer, topic: str, partitions: Iterable[int]
) -> dict[int, tuple[int, int]]:
    """partition -> (low, high) offsets, asked of the brokers now (not cached)."""
    out: dict[int, tuple[int, int]] = {}
    for p in partitions:
        out[p] = _watermark(consumer, TopicPartition(topic, p))
    return out


# Answers a broker gives while a partition's leadership is moving or not yet known (a
# topic just created, a broker restarting): asked again, they pass within a second or two.
LEADER_MOVING = frozenset({KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE})
WATERMARK_TRIES = 8


def _watermark(consumer: Consumer, tp: TopicPartition) -> tuple[int, int]:
    for attempt in range(1, WATERMARK_TRIES):
        try:
            return _ask_watermark(consumer, tp)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if not isinstance(err, KafkaError) or not (
                err.code() in LEADER_MOVING or err.retriable()
            ):
                raise
            time.sleep(0.25 * attempt)
    return _ask_watermark(consumer, tp)  # the last try: its error is the caller's


def _ask_watermark(consumer: Consumer, tp: TopicPartition) -> tuple[int, int]:
    lo, hi = consumer.get_watermark_offsets(tp, timeout=10, cached=False)
    return lo, hi


def spans_since(consumer: Consumer, topic: str, partitions: list[int], since_ms: int) -> list[Span]:
    """From the first message produced at or after `since_ms` to the end offset now."""
    marks = watermarks(consumer, topic, partitions)
    starts = consumer.offsets_for_times(
        [TopicPartition(topic, p, since_ms) for p in partitions], timeout=10
    )
    spans = []
    for tp in starts:
        lo, hi = marks[tp.partition]
        start = tp.offset if tp.offset >= 0 else hi  # -1: nothing at or after `since`
        spans.append(Span(tp.partition, max(start, lo), hi))
    return spans


def spans_from_committed(consumer: Consumer, topic: str, partitions: list[int]) -> list[Span]:
    """From the consumer group's committed offset (or the oldest message) to the end now."""
    marks = watermarks(consumer, topic, partitions)
    committed = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
    spans = []
    for tp in committed:
        lo, hi = marks[tp.partition]
        start = tp.offset if tp.offset != OFFSET_INVALID and tp.offset >= 0 else lo
        spans.append(Span(tp.partition, max(start, lo), hi))  # retention may have moved lo
    return spans


class BoundedRead:
    """One pass over `spans` of `topic` with an assigned consumer (which the caller owns).

    Invariants: only messages inside their partition's span are yielded, each once, in
    offset order per partition; a partition is closed at its span's end, at end-of-partition
    or when the consumer's position passed the end (compaction gaps); after
    `stall_timeout_s` without a message the read ends with `stalled` set. Errors other than
    end-of-partition raise KafkaException.
    """

    def __init__(
        self, consumer: Consumer, topic: str, spans: Iterable[Span], *, stall_timeout_s: float
    ) -> None:
        self.consumer = consumer
        self.topic = topic
        self.stall_timeout_s = stall_timeout_s
        todo = [s for s in spans if s.size > 0]
        self._ends = {s.partition: s.end for s in todo}
        self.read = 0
        self.stalled = False
        if todo:
            assigned = [TopicPartition(topic, s.partition, s.start) for s in todo]
            consumer.assign(assigned)
            # An earlier read on this consumer paused the partitions it finished.
            consumer.resume(assigned)

    @property
    def open_partitions(self) -> list[int]:
        return sorted(self._ends)

    def batches(
        self, batch_size: int = 1000, *, max_messages: int | None = None
    ) -> Iterator[list[Message]]:
        last_progress = time.monotonic()
        while self._ends and (max_messages is None or self.read < max_messages):
            want = batch_size if max_messages is None else min(batch_size, max_messages - self.read)
            batch: list[Message] = []
            for msg in self.consumer.consume(num_messages=want, timeout=0.5):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        self._close([msg.partition()])  # type: ignore[list-item]
                        continue
                    raise KafkaException(err)
                partition: int = msg.partition()  # type: ignore[assignment]
                offset: int = msg.offset()  # type: ignore[assignment]
                end = self._ends.get(partition)
                if end is None or offset >= end:
                    continue
                batch.append(msg)
                if offset + 1 >= end:
                    self._close([partition])
            self._close_passed()
            if batch:
                self.read += len(batch)
                last_progress = time.monotonic()
                yield batch
            elif self._ends and time.monotonic() - last_progress > self.stall_timeout_s:
                self.stalled = True
                return

    def _close_passed(self) -> None:
        if not self._ends:
            return
        positions = self.consumer.position([TopicPartition(self.topic, p) for p in self._ends])
        self._close(
            [
                tp.partition
                for tp in positions
                if tp.offset >= 0 and tp.offset >= self._ends[tp.partition]
            ]
        )

    def _close(self, partitions: list[int]) -> None:
        closed = [p for p in partitions if self._ends.pop(p, None) is not None]
        if closed:  # stop fetching past the span
            self.consumer.pause([TopicPartition(self.topic, p) for p in closed])


# ---------------------------------------------------------------- scans since a time


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


def scan_topic(kafka: KafkaSettings, topic: str, bounds: ScanBounds, visit: Visitor) -> ScanResult:
    """Call `visit` for each message of `topic` produced since `bounds.since` (bounded).

    Raises KafkaException when the broker can not be reached at all.
    """
    result = ScanResult()
    consumer = reader_consumer(kafka)
    try:
        partitions = partitions_of(consumer, topic)
        if partitions is None:
            result.complete = False
            result.detail = f"topic {topic} is not available"
            return result
        spans = spans_since(consumer, topic, partitions, int(bounds.since.timestamp() * 1000))
        result.partitions = {s.partition: (s.start, s.end) for s in spans}
        read = BoundedRead(consumer, topic, spans, stall_timeout_s=bounds.stall_timeout_s)
        for batch in read.batches(5000, max_messages=bounds.max_messages):
            for msg in batch:
                visit(msg)
        result.read = read.read
        if read.stalled:
            result.complete = False
            result.detail = (
                f"no messages delivered for {bounds.stall_timeout_s:.0f}s before the end of "
                f"partitions {read.open_partitions}"
            )
        elif read.open_partitions:
            result.complete = False
            result.detail = (
                f"stopped after {bounds.max_messages} messages; "
                f"{len(read.open_partitions)} partition(s) not read to the end"
            )
        return result
    finally:
        consumer.close()


# ---------------------------------------------------------------- exact offsets


def read_offsets(
    kafka: KafkaSettings,
    topic: str,
    wanted: Mapping[int, Collection[int]],
    visit: Visitor,
    *,
    stall_timeout_s: float = 15.0,
) -> None:
    """Call `visit` for the message at each `wanted` offset ({partition: offsets}) that is
    still in the topic (offsets removed by retention, or past the end, are skipped).

    Raises KafkaException when the broker can not be reached or stops delivering.
    """
    spans = [Span(p, min(o), max(o) + 1) for p, o in wanted.items() if o]
    if not spans:
        return
    consumer = reader_consumer(kafka, **{"enable.partition.eof": True})
    try:
        read = BoundedRead(consumer, topic, spans, stall_timeout_s=stall_timeout_s)
        for batch in read.batches():
            for msg in batch:
                if msg.offset() in wanted[msg.partition()]:  # type: ignore[index]
                    visit(msg)
        if read.stalled:
            raise KafkaException(
                KafkaError(
                    KafkaError._TIMED_OUT,
                    f"no messages for {stall_timeout_s:.0f}s from {topic} partitions "
                    f"{read.open_partitions}",
                )
            )
    finally:
        consumer.close()


def read_messages(
    kafka: KafkaSettings,
    topic: str,
    wanted: Mapping[int, Collection[int]],
    *,
    stall_timeout_s: float = 15.0,
) -> dict[tuple[int, int], bytes | None]:
    """The values of the messages at `wanted` offsets ({partition: offsets}); offsets no
    longer in the topic (retention) are absent from the result."""
    found: dict[tuple[int, int], bytes | None] = {}

    def keep(msg: Message) -> None:
        found[(msg.partition(), msg.offset())] = msg.value()  # type: ignore[index]

    read_offsets(kafka, topic, wanted, keep, stall_timeout_s=stall_timeout_s)
    return found
