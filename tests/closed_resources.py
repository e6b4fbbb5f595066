"""Dagster resources that all point at a closed port (9, discard): a test that uses them
fails if a step tries to connect, so refusals are proven to come before any connection."""

from __future__ import annotations

from typing import Any

from analytics_pipeline.resources import (
    ClickHouseResource,
    KafkaResource,
    PostgresMetadataResource,
    RedisResource,
)

CLOSED_RESOURCES: dict[str, Any] = {
    "postgres": PostgresMetadataResource(host="127.0.0.1", port=9),
    "clickhouse": ClickHouseResource(host="127.0.0.1", http_port=9),
    "redis": RedisResource(host="127.0.0.1", port=9),
    "kafka": KafkaResource(bootstrap_servers="127.0.0.1:9"),
}
