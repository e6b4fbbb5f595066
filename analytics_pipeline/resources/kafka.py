"""Kafka: the shared raw-events and dead-letter topics."""

from __future__ import annotations

from typing import Any

from confluent_kafka import Consumer, Producer
from pydantic import Field

from analytics_core.settings import KafkaSettings, Settings
from analytics_pipeline.resources.env_defaults import EnvDefaultsResource


class KafkaResource(EnvDefaultsResource):
    """Unset fields come from KAFKA_*."""

    bootstrap_servers: str | None = Field(
        default=None, description="KAFKA_BOOTSTRAP_SERVERS when unset"
    )
    raw_topic: str | None = Field(default=None, description="KAFKA_RAW_TOPIC when unset")
    dead_letter_topic: str | None = Field(
        default=None, description="KAFKA_DEAD_LETTER_TOPIC when unset"
    )

    def settings(self) -> KafkaSettings:
        return self._overlay(Settings.from_env().kafka)

    def producer(self, **overrides: Any) -> Producer:
        """An idempotent producer (acks=all); the caller flushes it."""
        config = {
            "bootstrap.servers": self.settings().bootstrap_servers,
            "acks": "all",
            "enable.idempotence": True,
        }
        return Producer({**config, **overrides})

    def consumer(self, group_id: str, **overrides: Any) -> Consumer:
        """A consumer: manual commits, from the earliest offset; the caller closes it."""
        config = {
            "bootstrap.servers": self.settings().bootstrap_servers,
            "group.id": group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
        return Consumer({**config, **overrides})
