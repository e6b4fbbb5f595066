"""Kafka: the shared raw-events and dead-letter topics."""

from __future__ import annotations

from pydantic import Field

from analytics_core.settings import KafkaSettings
from analytics_pipeline.resources.env_defaults import EnvDefaultsResource, process_settings


class KafkaResource(EnvDefaultsResource):
    """Unset fields come from KAFKA_*. Kafka clients are short-lived and made per read by
    the core (bounded topic reads, the reprocessing), from these settings."""

    bootstrap_servers: str | None = Field(
        default=None, description="KAFKA_BOOTSTRAP_SERVERS when unset"
    )
    raw_topic: str | None = Field(default=None, description="KAFKA_RAW_TOPIC when unset")
    dead_letter_topic: str | None = Field(
        default=None, description="KAFKA_DEAD_LETTER_TOPIC when unset"
    )

    def settings(self) -> KafkaSettings:
        return self._overlay(process_settings().kafka)
