"""Watermarks asked while a partition's leader is moving (a topic just created): asked
again instead of failing the whole read (a DLQ reprocessing run failed on
NOT_LEADER_FOR_PARTITION in CI). Other errors still raise at once."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from analytics_core import kafka_reads


class Answers:
    """`get_watermark_offsets` that raises the given errors first, then answers."""

    def __init__(self, *errors: int) -> None:
        self.errors = list(errors)
        self.calls = 0

    def get_watermark_offsets(self, tp: Any, timeout: float, cached: bool) -> tuple[int, int]:
        self.calls += 1
        if self.errors:
            raise KafkaException(KafkaError(self.errors.pop(0)))
        return 3, 10 + tp.partition


def test_a_moving_leader_is_asked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kafka_reads.time, "sleep", lambda s: None)
    consumer = Answers(KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE)
    marks = kafka_reads.watermarks(consumer, "t", [0, 1])  # type: ignore[arg-type]
    assert marks == {0: (3, 10), 1: (3, 11)}
    assert consumer.calls == 4


def test_other_errors_and_a_leader_that_never_settles_raise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kafka_reads.time, "sleep", lambda s: None)
    denied = Answers(KafkaError.TOPIC_AUTHORIZATION_FAILED)
    with pytest.raises(KafkaException):
        kafka_reads.watermarks(denied, "t", [0])  # type: ignore[arg-type]
    assert denied.calls == 1
    stuck = Answers(*[KafkaError.NOT_LEADER_FOR_PARTITION] * 20)
    with pytest.raises(KafkaException):
        kafka_reads.watermarks(stuck, "t", [0])  # type: ignore[arg-type]
    assert stuck.calls == kafka_reads.WATERMARK_TRIES
