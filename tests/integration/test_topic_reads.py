"""Bounded reads of exact offsets (the router's way back to a rejected row's original)."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import NewTopic

from analytics_core import kafka_clients
from analytics_core.kafka_reads import read_messages
from analytics_core.settings import KafkaSettings, Settings
from tests.conftest import Kafka, free_port, unique_id

pytestmark = pytest.mark.integration


def test_reads_the_wanted_offsets_and_leaves_out_those_not_in_the_topic(
    stack: Settings, kafka: Kafka
) -> None:
    topic = unique_id("reads").replace("-", "_")
    admin = kafka_clients.admin(stack.kafka)
    for f in admin.create_topics([NewTopic(topic, 2, 1)]).values():
        f.result(30)
    try:
        for i in range(6):
            kafka.producer.produce(topic, value=f"m{i}".encode(), partition=i % 2)
        kafka.producer.produce(topic, value=None, partition=0)  # a tombstone at offset 3
        kafka.producer.flush(30)
        found = read_messages(stack.kafka, topic, {0: {1, 3, 40}, 1: {0, 2}})
        # Partition 0 holds m0 m2 m4 None; partition 1 holds m1 m3 m5. Offset 40 does not exist.
        assert found == {(0, 1): b"m2", (0, 3): None, (1, 0): b"m1", (1, 2): b"m5"}
        assert read_messages(stack.kafka, topic, {0: set()}) == {}
    finally:
        for f in admin.delete_topics([topic]).values():
            f.result(30)


def test_an_unreachable_broker_is_an_error_not_an_empty_answer() -> None:
    nowhere = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}")
    with pytest.raises(KafkaException):
        read_messages(nowhere, "shared_raw_events", {0: {1}}, stall_timeout_s=2)
