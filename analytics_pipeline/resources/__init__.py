"""ConfigurableResources for the pipeline's servers, configured from the router's env vars.

Resource keys (stable: other assets and sensors depend on them):
`postgres`, `clickhouse`, `redis`, `kafka`.
"""

from __future__ import annotations

from analytics_pipeline.resources.clickhouse import ClickHouseResource
from analytics_pipeline.resources.kafka import KafkaResource
from analytics_pipeline.resources.postgres import PostgresMetadataResource
from analytics_pipeline.resources.redis import RedisResource
from analytics_pipeline.resources.settings import pipeline_settings

__all__ = [
    "ClickHouseResource",
    "KafkaResource",
    "PostgresMetadataResource",
    "RedisResource",
    "default_resources",
    "pipeline_settings",
]


def default_resources() -> dict[str, object]:
    """Every resource with no configuration: all values from the environment."""
    return {
        "postgres": PostgresMetadataResource(),
        "clickhouse": ClickHouseResource(),
        "redis": RedisResource(),
        "kafka": KafkaResource(),
    }
