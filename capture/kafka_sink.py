"""Producing to Kafka from the event loop: one future per message, resolved on acknowledgement.

The producer is idempotent with acks=all, so a message the broker already wrote is never
written twice by librdkafka's own retries. Delivery reports are served on the event loop's
own thread, by `poll(0)` every POLL_BUSY_S while messages are in flight (every POLL_IDLE_S
otherwise, for librdkafka's errors and log lines), and resolve their futures in place. No
poll thread: one would take the GIL once per report (confluent-kafka's callbacks resume it
one by one) from an event loop that holds it most of the time under load, and wake the
loop from outside once per poll round; those hand-overs cost the request path more than
these polls do (README, "Benchmark").

Invariant: a future resolves to `Delivered` only after the broker acknowledged the message
(acks=all); every other end is `NotDelivered`. A full local queue raises `QueueFull` at
once, without queueing. Reports served off the loop's thread (by `close`'s flush) are
handed to the loop.
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


POLL_BUSY_S = 0.001  # while messages wait for their acknowledgement
POLL_IDLE_S = 0.05  # otherwise: librdkafka's error callbacks and log lines


class KafkaSink:
    def __init__(self, settings: CaptureSettings, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._loop_thread = threading.get_ident()  # made on the loop's thread
        self.topic = settings.common.kafka.raw_topic
        self._producer = Producer(producer_config(settings, error_cb=self._on_error))
        self._in_flight = 0  # produced, delivery report not served yet
        self._closed = False
        self._brokers_down_since: float | None = None
        self.last_error: str | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._busy = False  # the timer is a POLL_BUSY_S one
        self._arm(busy=False)

    # -- producing (event loop) ------------------------------------------------------
    def produce(self, value: bytes, key: bytes) -> asyncio.Future[DeliveryOutcome]:
        fut: asyncio.Future[DeliveryOutcome] = self._loop.create_future()

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            outcome: DeliveryOutcome
            if err is None:
                outcome = Delivered(msg.partition() or 0, msg.offset() or 0)
                self._brokers_down_since = None
            else:
                outcome = NotDelivered(str(err))
            if threading.get_ident() == self._loop_thread:
                self._settle(fut, outcome)
            else:
                # RuntimeError: the loop closed at shutdown, nobody waits any more.
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(self._settle, fut, outcome)

        try:
            self._producer.produce(self.topic, value=value, key=key, on_delivery=on_delivery)
        except BufferError:
            raise QueueFull("the Kafka producer queue is full") from None
        except KafkaException as exc:
            fut.set_result(NotDelivered(str(exc)))
            return fut
        self._in_flight += 1
        if not self._busy:
            self._arm(busy=True)
        return fut

    def queued(self) -> int:
        return len(self._producer)

    @property
    def brokers_down(self) -> bool:
        """True while librdkafka reports every broker down (cleared by any delivery)."""
        return self._brokers_down_since is not None

    # -- delivery reports (event loop) -----------------------------------------------
    def _arm(self, *, busy: bool) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._busy = busy
        self._timer = self._loop.call_later(POLL_BUSY_S if busy else POLL_IDLE_S, self._poll)

    def _poll(self) -> None:
        self._timer = None
        if self._closed:
            return
        try:
            self._producer.poll(0)  # runs on_delivery (and error_cb, log lines) here
        except Exception:
            log.exception("kafka poll failed")
        self._arm(busy=self._in_flight > 0)

    def _settle(self, fut: asyncio.Future[DeliveryOutcome], outcome: DeliveryOutcome) -> None:
        """A delivery report reaching its request (on the loop's thread only)."""
        self._in_flight -= 1
        if not fut.done():
            fut.set_result(outcome)

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
        """Flush what is queued (bounded) and stop polling; returns messages left. Callable
        from another thread (the loop keeps running meanwhile, to resolve the futures)."""
        self._closed = True
        return self._producer.flush(timeout_s)
