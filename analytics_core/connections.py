"""The open connections the core's I/O steps work with (lifecycle, reconciliation, trace,
batch planning, client moves), so a step never rebuilds them from settings.

Whoever calls a step owns its connections: the Dagster code location opens them from its
resources (analytics_pipeline/resources), a CLI or a test from a `Settings` read once at its
start (`open_connections`). Kafka clients are short-lived and made per read from the Kafka
settings (kafka_reads, dlq), so the bundle carries those settings rather than a client.

ClickHouse is a set of named targets (`Settings.clickhouse_targets()`): a client's database
lives on the target its registry row names (`clients.ch_target`), and `clickhouse_for` gives
that target's client. The `default` target also holds the shared ops database (router
accounting), so `clickhouse` (the default target's client) is what ops readers use.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import psycopg2.extensions
import redis
from clickhouse_connect.driver.client import Client

from analytics_core import client_cache, pg
from analytics_core.clickhouse import http_client
from analytics_core.placement import unknown_target_problem
from analytics_core.settings import (
    DEFAULT_TARGET,
    ClickHouseSettings,
    KafkaSettings,
    RedisSettings,
    Settings,
)

log = logging.getLogger(__name__)

# Drops a client's entry from the router cache (Redis and every router's local map).
CacheInvalidator = Callable[[str], None]


class UnknownTarget(LookupError):
    """A client is placed on a target these settings do not configure; the message names it.
    Never answered by using another target: a client's database does not move silently."""


@dataclass
class Connections:
    registry: psycopg2.extensions.connection  # the PostgreSQL registry (clients, ...)
    # Every configured ClickHouse target by name, the default first.
    targets: Mapping[str, ClickHouseSettings]
    open_clickhouse: Callable[[ClickHouseSettings], Client]  # a new client for a target
    invalidate_cache: CacheInvalidator
    kafka: KafkaSettings
    ops_database: str  # ClickHouse database of the router's accounting (default target)
    _clients: dict[str, Client] = field(default_factory=dict, init=False, repr=False)

    def target(self, name: str) -> ClickHouseSettings:
        """The settings of a configured target; UnknownTarget (naming it) otherwise."""
        found = self.targets.get(name)
        if found is None:
            raise UnknownTarget(unknown_target_problem(name, list(self.targets)))
        return found

    def clickhouse_for(self, target: str) -> Client:
        """The HTTP client of one target (any database: statements name theirs). Opened on
        first use, so an outage surfaces inside the step that needs that target, where it is
        an expected, transient failure; other targets are not touched."""
        client = self._clients.get(target)
        if client is None:
            client = self._clients[target] = self.open_clickhouse(self.target(target))
        return client

    @property
    def clickhouse(self) -> Client:
        """The default target's client: the ops database, and the clients placed there."""
        return self.clickhouse_for(DEFAULT_TARGET)

    def close_clickhouse(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()


def cache_invalidator(redis_settings: RedisSettings) -> CacheInvalidator:
    """An invalidator that never fails a lifecycle step: the cache TTL still bounds how long
    an old entry lives when Redis is unreachable."""

    def invalidate(client_id: str) -> None:
        try:
            client_cache.invalidate(redis_settings, client_id)
        except (redis.RedisError, OSError) as exc:
            log.warning(
                "cache invalidation failed for %s: %s; the routers' and capture's caches keep "
                "the old entry (and a rotated key works) until it expires, at most their TTL",
                client_id,
                exc,
            )

    return invalidate


@contextmanager
def open_connections(
    settings: Settings, *, clickhouse_timeout_s: int = 300
) -> Iterator[Connections]:
    """Connections from settings (CLIs, tests, benchmarks); closed on exit."""
    conn = pg.connect(settings.postgres)
    c = Connections(
        registry=conn,
        targets=settings.clickhouse_targets(),
        open_clickhouse=lambda ch: http_client(ch, timeout_s=clickhouse_timeout_s),
        invalidate_cache=cache_invalidator(settings.redis),
        kafka=settings.kafka,
        ops_database=settings.clickhouse.ops_database,
    )
    try:
        yield c
    finally:
        c.close_clickhouse()
        conn.close()
