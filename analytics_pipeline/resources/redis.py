"""Redis: the router's client-metadata cache."""

from __future__ import annotations

from pydantic import Field

from analytics_core.connections import CacheInvalidator, cache_invalidator
from analytics_core.settings import RedisSettings
from analytics_pipeline.resources.env_defaults import EnvDefaultsResource, process_settings


class RedisResource(EnvDefaultsResource):
    """Unset fields come from REDIS_*."""

    host: str | None = Field(default=None, description="REDIS_HOST when unset")
    port: int | None = Field(default=None, description="REDIS_PORT when unset")
    db: int | None = Field(default=None, description="REDIS_DB when unset")
    password: str | None = Field(default=None, description="REDIS_PASSWORD when unset")

    def settings(self) -> RedisSettings:
        return self._overlay(process_settings().redis)

    def invalidator(self) -> CacheInvalidator:
        """Drops a client's entry in Redis and in every router's local map (never raises)."""
        return cache_invalidator(self.settings())
