"""Redis: the router's client-metadata cache."""

from __future__ import annotations

from pydantic import Field

from analytics_core import client_cache
from analytics_core.settings import RedisSettings, Settings
from analytics_pipeline.resources.env_defaults import EnvDefaultsResource


class RedisResource(EnvDefaultsResource):
    """Unset fields come from REDIS_*."""

    host: str | None = Field(default=None, description="REDIS_HOST when unset")
    port: int | None = Field(default=None, description="REDIS_PORT when unset")
    db: int | None = Field(default=None, description="REDIS_DB when unset")
    password: str | None = Field(default=None, description="REDIS_PASSWORD when unset")

    def settings(self) -> RedisSettings:
        return self._overlay(Settings.from_env().redis)

    def invalidate(self, client_id: str) -> None:
        """Drop the client's cache entry in Redis and in every router's local map."""
        client_cache.invalidate(self.settings(), client_id)
