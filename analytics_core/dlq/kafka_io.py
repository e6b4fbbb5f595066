"""Kafka side of the reprocessing: a bounded reader of the dead-letter topic, and the
producer that re-submits replays.

The reader is bounded: at open it records each partition's end offset and reads up to it,
so a run always terminates even while the router keeps writing (newer letters are for the
next run). It assigns partitions explicitly, starting at the consumer group's committed
offsets, and commits only when told to (after the records' fates are durable).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from analytics_core import kafka_clients
from analytics_core.dlq.records import Coordinates, LetterRecord, from_message
from analytics_core.kafka_headers import readable_headers
from analytics_core.kafka_reads import BoundedRead, partitions_of, spans_from_committed
from analytics_core.settings import KafkaSettings

DEFAULT_GROUP = "analytics-dlq-reprocessor"


class StalledRead(RuntimeError):
    """The broker stopped delivering before the end offsets were reached: an outage."""


class ResubmitFailed(RuntimeError):
    """Replays were not acknowledged by the broker: nothing of the chunk is recorded."""


@dataclass(frozen=True)
class PartitionRange:
    partition: int
    start: int
    end: int  # exclusive: the end offset when the run started

    @property
    def backlog(self) -> int:
        return max(0, self.end - self.start)


class DeadLetterReader:
    def __init__(self, kafka: KafkaSettings, group_id: str, *, stall_timeout_s: float = 30.0):
        self.topic = kafka.dead_letter_topic
        self.group_id = group_id
        self.stall_timeout_s = stall_timeout_s
        self.consumer = kafka_clients.consumer(
            kafka,
            group_id,
            **{
                "enable.auto.offset.store": False,
                # Bounded prefetch (per partition): memory stays flat with any backlog.
                "queued.max.messages.kbytes": 8192,
                "fetch.max.bytes": 8388608,
            },
        )
        self.ranges: dict[int, PartitionRange] = {}
        self._read: BoundedRead | None = None

    def open(self) -> list[PartitionRange]:
        partitions = partitions_of(self.consumer, self.topic)
        if partitions is None:
            raise KafkaException(f"topic {self.topic} is not available")
        spans = spans_from_committed(self.consumer, self.topic, partitions)
        self.ranges = {s.partition: PartitionRange(s.partition, s.start, s.end) for s in spans}
        self._read = BoundedRead(
            self.consumer, self.topic, spans, stall_timeout_s=self.stall_timeout_s
        )
        return sorted(self.ranges.values(), key=lambda r: r.partition)

    def chunks(self, size: int, max_records: int) -> Iterator[list[LetterRecord]]:
        """Records up to the end offsets (or `max_records`), in chunks of at most `size`."""
        read = self._read
        assert read is not None, "open() first"
        for batch in read.batches(size, max_messages=max_records):
            yield [_record(msg, self.topic) for msg in batch]
        if read.stalled:
            raise StalledRead(
                f"no dead letters delivered for {self.stall_timeout_s:.0f}s before the end "
                f"offsets of partitions {read.open_partitions}"
            )

    def commit(self, records: list[LetterRecord]) -> dict[int, int]:
        """Commit past `records` (their fates are durable); returns partition -> next offset."""
        nxt: dict[int, int] = {}
        for r in records:
            nxt[r.coords.partition] = max(nxt.get(r.coords.partition, 0), r.coords.offset + 1)
        if nxt:
            self.consumer.commit(
                offsets=[TopicPartition(self.topic, p, o) for p, o in sorted(nxt.items())],
                asynchronous=False,
            )
        return nxt

    def close(self) -> None:
        self.consumer.close()


def _record(msg: Message, topic: str) -> LetterRecord:
    return from_message(
        Coordinates(topic, msg.partition(), msg.offset()),  # type: ignore[arg-type]
        msg.key(),
        msg.value(),
        readable_headers(msg),
    )


class Resubmitter:
    """Re-submits replays to the raw topic; `flush` returns only when all are acknowledged
    by every in-sync replica (acks=all, idempotent: no duplicates from producer retries)."""

    def __init__(self, kafka: KafkaSettings, *, timeout_s: float = 60.0) -> None:
        self.topic = kafka.raw_topic
        self.timeout_s = timeout_s
        self.producer = kafka_clients.producer(
            kafka, **{"linger.ms": 20, "message.timeout.ms": int(timeout_s * 1000)}
        )
        self.errors: list[str] = []
        self.sent = 0

    def _delivered(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self.errors.append(str(err))

    def send(
        self, value: bytes | None, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None:
        while True:
            try:
                self.producer.produce(
                    self.topic,
                    value=value,
                    key=key,
                    headers=list(headers),
                    on_delivery=self._delivered,
                )
                self.sent += 1
                return
            except BufferError:
                self.producer.poll(0.1)

    def flush(self) -> None:
        left = self.producer.flush(self.timeout_s)
        if left:
            self.errors.append(f"{left} replays not acknowledged within {self.timeout_s:.0f}s")
        if self.errors:
            errors, self.errors = self.errors, []
            raise ResubmitFailed(f"{len(errors)} replay(s) failed, first: {errors[0]}")
