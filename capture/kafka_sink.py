"""Producing to Kafka from the event loop: one future per message, resolved on acknowledgement.

The producer is idempotent with acks=all, so a message the broker already wrote is never
written twice by librdkafka's own retries. A poll thread serves delivery reports and hands
them to the event loop in one call per poll round (not one wake-up per message).

Invariant: a future resolves to `Delivered` only after the broker acknowledged the message
(acks=all); every other end is `NotDelivered`. A full local queue raises `QueueFull` at
once, without queueing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from analytics_core import kafka_clients
from capture.config import CaptureSettings

log = logging.getLogger("capture.kafka")


@dataclass(frozen=True, slots=True)
class Delivered:
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class NotDelivered:
    detail: str


DeliveryOutcome = Delivered | NotDelivered


def producer_config(
    settings: CaptureSettings, error_cb: Callable[[KafkaError], None]
) -> dict[str, Any]:
    """The factory's producer (security, acks=all, idempotence) with capture's batching."""
    return kafka_clients.producer_config(
        settings.common.kafka,
        **{
            "client.id": "capture",
            "linger.ms": settings.kafka_linger_ms,
            "compression.type": "lz4",
            "message.timeout.ms": settings.kafka_message_timeout_ms,
            "queue.buffering.max.kbytes": settings.kafka_queue_kbytes,
            "queue.buffering.max.messages": 1_000_000,
            "message.max.bytes": 1_000_000,
            "error_cb": error_cb,
            "logger": log,  # librdkafka's own lines as JSON logs, not raw stderr
        },
    )


class QueueFull(Exception):
    """The producer's local queue is full: Kafka is slow or away."""


class KafkaSink:
    def __init__(self, settings: CaptureSettings, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.topic = settings.common.kafka.raw_topic
        self._producer = Producer(producer_config(settings, error_cb=self._on_error))
        self._done: list[tuple[asyncio.Future[DeliveryOutcome], DeliveryOutcome]] = []
        self._done_lock = threading.Lock()
        self._stop = threading.Event()
        self._brokers_down_since: float | None = None
        self.last_error: str | None = None
        self._poller = threading.Thread(target=self._poll_loop, name="kafka-poll", daemon=True)
        self._poller.start()

    # -- producing (event loop) ------------------------------------------------------
    def produce(self, value: bytes, key: bytes) -> asyncio.Future[DeliveryOutcome]:
        fut: asyncio.Future[DeliveryOutcome] = self._loop.create_future()

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            outcome: DeliveryOutcome
            if err is None:
                outcome = Delivered(msg.partition() or 0, msg.offset() or 0)
            else:
                outcome = NotDelivered(str(err))
            with self._done_lock:
                self._done.append((fut, outcome))

        try:
            self._producer.produce(self.topic, value=value, key=key, on_delivery=on_delivery)
        except BufferError:
            raise QueueFull("the Kafka producer queue is full") from None
        except KafkaException as exc:
            fut.set_result(NotDelivered(str(exc)))
        return fut

    def queued(self) -> int:
        return len(self._producer)

    @property
    def brokers_down(self) -> bool:
        """True while librdkafka reports every broker down (cleared by any delivery)."""
        return self._brokers_down_since is not None

    # -- poll thread ------------------------------------------------------------------
    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)
            self._hand_over()
        self._hand_over()

    def _hand_over(self) -> None:
        with self._done_lock:
            if not self._done:
                return
            done, self._done = self._done, []
        if any(isinstance(o, Delivered) for _f, o in done):
            self._brokers_down_since = None
        # RuntimeError: the loop closed at shutdown, nobody waits any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(_resolve, done)

    def _on_error(self, err: KafkaError) -> None:
        self.last_error = str(err)
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            if self._brokers_down_since is None:
                self._brokers_down_since = time.monotonic()
            log.warning("kafka: all brokers down", extra={"error": str(err)})
        else:
            log.warning("kafka error", extra={"error": str(err)})

    # -- health and shutdown ----------------------------------------------------------
    def probe(self, timeout_s: float) -> str | None:
        """None when the topic's metadata can be read now (blocking: run off the loop)."""
        try:
            meta = self._producer.list_topics(self.topic, timeout=timeout_s)
        except KafkaException as exc:
            return f"Kafka unreachable: {exc}"
        topic = meta.topics.get(self.topic)
        if topic is None or topic.error is not None:
            return f"topic {self.topic!r} unavailable: {None if topic is None else topic.error}"
        self._brokers_down_since = None
        return None

    def close(self, timeout_s: float) -> int:
        """Flush what is queued (bounded), stop the poll thread; returns messages left."""
        left = self._producer.flush(timeout_s)
        self._stop.set()
        self._poller.join(5)
        return left


def _resolve(done: list[tuple[asyncio.Future[DeliveryOutcome], DeliveryOutcome]]) -> None:
    for fut, outcome in done:
        if not fut.done():
            fut.set_result(outcome)
