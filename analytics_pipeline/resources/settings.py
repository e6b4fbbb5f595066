"""One `analytics_core.settings.Settings` from the configured resources.

Lifecycle code (`analytics_core.lifecycle`) takes a whole Settings object; assets build it
here so the code shared with the CLI and the router is reused, never copied.
"""

from __future__ import annotations

from dataclasses import replace

from analytics_core.settings import Settings
from analytics_pipeline.resources.clickhouse import ClickHouseResource
from analytics_pipeline.resources.kafka import KafkaResource
from analytics_pipeline.resources.postgres import PostgresMetadataResource
from analytics_pipeline.resources.redis import RedisResource


def pipeline_settings(
    *,
    postgres: PostgresMetadataResource,
    clickhouse: ClickHouseResource,
    redis: RedisResource,
    kafka: KafkaResource | None = None,
) -> Settings:
    base = Settings.from_env()
    return replace(
        base,
        postgres=postgres.settings(),
        clickhouse=clickhouse.settings(),
        redis=redis.settings(),
        kafka=kafka.settings() if kafka is not None else base.kafka,
    )
