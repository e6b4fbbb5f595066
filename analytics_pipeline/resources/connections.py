"""The core's `Connections` bundle, opened from the resources of a run or a tick.

Resources own their connections: an asset, check, op or sensor asks for the bundle here and
passes it to the core (lifecycle steps, reconciliation, trace, batch planning), which never
rebuilds settings or opens connections of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from analytics_core.connections import Connections
from analytics_pipeline.resources.clickhouse import ClickHouseResource
from analytics_pipeline.resources.kafka import KafkaResource
from analytics_pipeline.resources.postgres import PostgresMetadataResource
from analytics_pipeline.resources.redis import RedisResource


def _no_cache(client_id: str) -> None:
    raise RuntimeError(
        f"cache invalidation for {client_id} requested without a Redis resource; "
        "pass `redis` to open_connections"
    )


@contextmanager
def open_connections(
    postgres: PostgresMetadataResource,
    clickhouse: ClickHouseResource,
    *,
    redis: RedisResource | None = None,
    kafka: KafkaResource | None = None,
) -> Iterator[Connections]:
    """Registry and ClickHouse connections (ClickHouse opened on first use; both closed on
    exit), the cache invalidator when
    `redis` is given, and the Kafka settings (the process's when `kafka` is not given)."""
    kafka_settings = (kafka or KafkaResource()).settings()
    with postgres.connect() as conn:
        c = Connections(
            registry=conn,
            targets=clickhouse.targets(),
            open_clickhouse=clickhouse.open_client,
            invalidate_cache=redis.invalidator() if redis is not None else _no_cache,
            kafka=kafka_settings,
            ops_database=clickhouse.settings().ops_database,
        )
        try:
            yield c
        finally:
            c.close_clickhouse()
