"""PostgreSQL metadata registry (clients, schema_versions, client_audit_log)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2.extensions
from pydantic import Field

from analytics_core import pg, registry
from analytics_core.settings import PostgresSettings
from analytics_pipeline.resources.env_defaults import EnvDefaultsResource, process_settings

# Databases whose metadata schema this process has already ensured (host, port, dbname).
_schema_ready: set[tuple[str, int, str]] = set()
_schema_lock = threading.Lock()


class PostgresMetadataResource(EnvDefaultsResource):
    """The registry database; unset fields come from POSTGRES_* and DAGSTER_POSTGRES_DB."""

    host: str | None = Field(default=None, description="POSTGRES_HOST when unset")
    port: int | None = Field(default=None, description="POSTGRES_PORT when unset")
    dbname: str | None = Field(default=None, description="POSTGRES_DB when unset")
    user: str | None = Field(default=None, description="POSTGRES_USER when unset")
    password: str | None = Field(default=None, description="POSTGRES_PASSWORD when unset")
    dagster_dbname: str | None = Field(
        default=None, description="DAGSTER_POSTGRES_DB when unset (Dagster's own storage)"
    )

    def settings(self) -> PostgresSettings:
        return self._overlay(process_settings().postgres)

    @contextmanager
    def connect(self) -> Iterator[psycopg2.extensions.connection]:
        """A connection to the registry; the first one in a process applies postgres/sql
        (idempotent, serialised by an advisory lock), so a fresh database just works."""
        settings = self.settings()
        conn = pg.connect(settings)
        try:
            key = (settings.host, settings.port, settings.dbname)
            with _schema_lock:
                if key not in _schema_ready:
                    registry.apply_metadata_schema(conn)
                    _schema_ready.add(key)
            yield conn
        finally:
            conn.close()
