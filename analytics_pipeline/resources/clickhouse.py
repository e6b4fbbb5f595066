"""ClickHouse (the per-client databases on their targets, the ops database) and the migration
files."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources.abc import Traversable
from pathlib import Path

from clickhouse_connect.driver.client import Client
from pydantic import Field

from analytics_core import package_data
from analytics_core.clickhouse import http_client
from analytics_core.migrations import files
from analytics_core.migrations.files import MigrationFile
from analytics_core.settings import DEFAULT_TARGET, ClickHouseSettings
from analytics_pipeline.resources.env_defaults import EnvDefaultsResource, process_settings


class ClickHouseResource(EnvDefaultsResource):
    """Unset fields come from CLICKHOUSE_* and PIPELINE_OPS_DATABASE; `migrations_dir`
    defaults to the migrations shipped in the package (clickhouse/migrations).

    The fields describe the `default` target (which also holds the ops database); the other
    targets come from CLICKHOUSE_TARGETS and CLICKHOUSE_<NAME>_* (`targets()`), like the
    router's, so every process agrees on where each client's database lives."""

    host: str | None = Field(default=None, description="CLICKHOUSE_HOST when unset")
    http_port: int | None = Field(default=None, description="CLICKHOUSE_HTTP_PORT when unset")
    native_port: int | None = Field(default=None, description="CLICKHOUSE_NATIVE_PORT when unset")
    user: str | None = Field(default=None, description="CLICKHOUSE_USER when unset")
    password: str | None = Field(default=None, description="CLICKHOUSE_PASSWORD when unset")
    secure: bool | None = Field(default=None, description="CLICKHOUSE_SECURE when unset")
    ops_database: str | None = Field(
        default=None, description="PIPELINE_OPS_DATABASE when unset (router accounting)"
    )
    migrations_dir: str | None = Field(
        default=None,
        description="Directory of vNNN_<name>.sql migration files (default: clickhouse/migrations)",
    )

    def settings(self) -> ClickHouseSettings:
        """The default target's settings."""
        return self._overlay(process_settings().clickhouse)

    def targets(self) -> dict[str, ClickHouseSettings]:
        """Every configured target by name, the default first."""
        return {**process_settings().clickhouse_targets(), DEFAULT_TARGET: self.settings()}

    def migrations_path(self) -> Traversable:
        """The configured directory, else the migrations shipped in the package."""
        if self.migrations_dir:
            return Path(self.migrations_dir)
        return package_data.clickhouse_migrations()

    def load_migrations(self) -> list[MigrationFile]:
        """Base schema + migration files in version order; raises MigrationFileError."""
        return files.load(self.migrations_path())

    def open_client(
        self, target: ClickHouseSettings | None = None, *, timeout_s: int = 300
    ) -> Client:
        """An HTTP client for any database of one target (default: the default target); the
        caller closes it."""
        return http_client(target or self.settings(), timeout_s=timeout_s)

    @contextmanager
    def connect(
        self, target: ClickHouseSettings | None = None, *, timeout_s: int = 300
    ) -> Iterator[Client]:
        """An HTTP client for any database of one target (closed on exit)."""
        client = self.open_client(target, timeout_s=timeout_s)
        try:
            yield client
        finally:
            client.close()
