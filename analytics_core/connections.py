"""The open connections the core's I/O steps work with (lifecycle, reconciliation, trace,
batch planning), so a step never rebuilds them from settings.

Whoever calls a step owns its connections: the Dagster code location opens them from its
resources (analytics_pipeline/resources), a CLI or a test from a `Settings` read once at its
start (`open_connections`). Kafka clients are short-lived and made per read from the Kafka
settings (topic_scan, dlq), so the bundle carries those settings rather than a client.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import psycopg2.extensions
import redis
from clickhouse_connect.driver.client import Client

from analytics_core import client_cache, pg
from analytics_core.clickhouse import http_client
from analytics_core.settings import KafkaSettings, RedisSettings, Settings

log = logging.getLogger(__name__)

# Drops a client's entry from the router cache (Redis and every router's local map).
CacheInvalidator = Callable[[str], None]


@dataclass
class Connections:
    registry: psycopg2.extensions.connection  # the PostgreSQL registry (clients, ...)
    open_clickhouse: Callable[[], Client]  # opens the ClickHouse client on first use
    invalidate_cache: CacheInvalidator
    kafka: KafkaSettings
    ops_database: str  # ClickHouse database of the router's accounting
    _clickhouse: Client | None = field(default=None, init=False, repr=False)

    @property
    def clickhouse(self) -> Client:
        """The ClickHouse HTTP client (any database: statements name theirs, or pass
        settings={"database": ...}). Opened on first use, so an outage surfaces inside the
        step that needs ClickHouse, where it is an expected, transient failure."""
        if self._clickhouse is None:
            self._clickhouse = self.open_clickhouse()
        return self._clickhouse

    def close_clickhouse(self) -> None:
        if self._clickhouse is not None:
            self._clickhouse.close()
            self._clickhouse = None


def cache_invalidator(redis_settings: RedisSettings) -> CacheInvalidator:
    """An invalidator that never fails a lifecycle step: the cache TTL still bounds how long
    an old entry lives when Redis is unreachable."""

    def invalidate(client_id: str) -> None:
        try:
            client_cache.invalidate(redis_settings, client_id)
        except (redis.RedisError, OSError) as exc:
            log.warning("cache invalidation failed for %s: %s", client_id, exc)

    return invalidate


@contextmanager
def open_connections(
    settings: Settings, *, clickhouse_timeout_s: int = 300
) -> Iterator[Connections]:
    """Connections from settings (CLIs, tests, benchmarks); closed on exit."""
    conn = pg.connect(settings.postgres)
    c = Connections(
        registry=conn,
        open_clickhouse=lambda: http_client(settings.clickhouse, timeout_s=clickhouse_timeout_s),
        invalidate_cache=cache_invalidator(settings.redis),
        kafka=settings.kafka,
        ops_database=settings.clickhouse.ops_database,
    )
    try:
        yield c
    finally:
        c.close_clickhouse()
        conn.close()
