"""ConfigurableResources for the servers every domain uses, configured from the router's
environment variables (read once per process, see env_defaults).

Resource keys (stable: assets, checks, jobs and sensors depend on them):
`postgres`, `clickhouse`, `redis`, `kafka`. Domain-only resources live in their domain
folder (`defs/<domain>/resources.py`).
"""

from __future__ import annotations

from analytics_pipeline.resources.clickhouse import ClickHouseResource
from analytics_pipeline.resources.connections import open_connections
from analytics_pipeline.resources.env_defaults import process_settings
from analytics_pipeline.resources.kafka import KafkaResource
from analytics_pipeline.resources.postgres import PostgresMetadataResource
from analytics_pipeline.resources.redis import RedisResource

__all__ = [
    "ClickHouseResource",
    "KafkaResource",
    "PostgresMetadataResource",
    "RedisResource",
    "default_resources",
    "open_connections",
    "process_settings",
]


def default_resources() -> dict[str, object]:
    """Every shared resource with no configuration: all values from the environment."""
    return {
        "postgres": PostgresMetadataResource(),
        "clickhouse": ClickHouseResource(),
        "redis": RedisResource(),
        "kafka": KafkaResource(),
    }
