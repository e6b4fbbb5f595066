"""Sends dead letters to `shared_dead_letter` and acknowledges their messages on delivery.

Invariants:
- a consumed message's dead letter counts as its fate only once the broker acknowledged it
  (acks=all, idempotent producer): `ack(partition, offset, letter)` is called from the
  delivery report, so an offset is never committed past an undelivered letter;
- an undelivered letter is re-sent (`resend_undelivered`, from the consumer loop), never
  dropped; a letter the topic can never take (its value is too large for the dead-letter
  topic's message limit) is re-sent with the value cut to `MAX_MESSAGE_BYTES`, and its
  `dl-detail` says so, rather than blocking the partition forever;
- letters are logged at most once per (reason, client) a minute (router.letter_log), with
  how many were not; every one is counted in the metrics and kept in the topic.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from analytics_core import kafka_clients
from analytics_core.dead_letter import DeadLetter
from analytics_core.event_contract import MAX_MESSAGE_BYTES
from analytics_core.settings import KafkaSettings
from router.letter_log import LetterLog
from router.metrics import RouterMetrics

log = logging.getLogger("router")

# Delivery errors that no retry can fix: the value does not fit the topic.
_TOO_LARGE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_MSG_SIZE})


@dataclass(slots=True)
class PendingLetter:
    """A dead letter on its way, with the consumed message its delivery acknowledges."""

    value: bytes | None
    letter: DeadLetter
    partition: int
    offset: int
    truncated: bool = False


def producer_config(kafka: KafkaSettings, client_id: str) -> dict[str, Any]:
    """The factory's producer (security, acks=all, idempotence) with the dead letters' tuning."""
    return kafka_clients.producer_config(
        kafka,
        **{
            "client.id": client_id,
            "linger.ms": 20,
            "message.timeout.ms": 300000,
            "logger": logging.getLogger("router.kafka"),  # librdkafka's lines as JSON logs
        },
    )


class DeadLetterProducer:
    def __init__(
        self,
        kafka: KafkaSettings,
        client_id: str,
        ack: Callable[[int, int, DeadLetter], None],
        metrics: RouterMetrics,
    ) -> None:
        self.topic = kafka.dead_letter_topic
        self.producer = Producer(producer_config(kafka, client_id))
        self._ack = ack
        self._metrics = metrics
        self._undelivered: list[PendingLetter] = []
        self._log = LetterLog()

    def send(self, value: bytes | None, letter: DeadLetter, partition: int, offset: int) -> None:
        self._metrics.events_dead_lettered.labels(reason=letter.reason.value).inc()
        held_back = self._log.admit(letter.reason.value, letter.client_id)
        if held_back is not None:
            log.info(
                "dead-lettered",
                extra={
                    "reason": letter.reason.value,
                    "client_id": letter.client_id,
                    "topic": letter.source.topic,
                    "partition": partition,
                    "offset": offset,
                    "detail": letter.detail[:200],
                    # letters of this reason (and client) not logged before this one
                    **({"repeated": held_back} if held_back else {}),
                },
            )
        self._produce(PendingLetter(value, letter, partition, offset))

    def _produce(self, item: PendingLetter) -> None:
        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is None:
                self._ack(item.partition, item.offset, item.letter)
            elif err.code() in _TOO_LARGE and not item.truncated:
                self._undelivered.append(_cut(item))
            else:
                log.warning(
                    "dead letter not delivered; will re-send",
                    extra={"partition": item.partition, "offset": item.offset, "error": str(err)},
                )
                self._undelivered.append(item)

        letter = item.letter
        while True:
            try:
                self.producer.produce(
                    self.topic,
                    value=item.value,
                    key=letter.client_id.encode() if letter.client_id else None,
                    headers=letter.headers(),  # type: ignore[arg-type]
                    on_delivery=delivered,
                )
                return
            except BufferError:
                self.producer.poll(0.1)
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if isinstance(err, KafkaError) and err.code() in _TOO_LARGE and not item.truncated:
                    item = _cut(item)
                    letter = item.letter
                    continue
                raise

    def resend_undelivered(self) -> None:
        if not self._undelivered:
            return
        pending, self._undelivered = self._undelivered, []
        for item in pending:
            self._produce(item)

    def poll(self, timeout: float = 0.0) -> None:
        self.producer.poll(timeout)

    def flush(self, timeout: float) -> int:
        return self.producer.flush(timeout)


def _cut(item: PendingLetter) -> PendingLetter:
    size = len(item.value or b"")
    log.error(
        "dead letter too large for the dead-letter topic; sending its value cut",
        extra={"partition": item.partition, "offset": item.offset, "bytes": size},
    )
    note = f"; value cut to its first {MAX_MESSAGE_BYTES} of {size} bytes (too large to forward)"
    letter = replace(item.letter, detail=item.letter.detail[: 1000 - len(note)] + note)
    value = item.value[:MAX_MESSAGE_BYTES] if item.value is not None else None
    return PendingLetter(value, letter, item.partition, item.offset, truncated=True)
