"""ClickHouse (the per-client databases) and the migration files applied to them."""

from __future__ import annotations

from importlib.resources.abc import Traversable
from pathlib import Path

from clickhouse_connect.driver.client import Client
from pydantic import Field

from analytics_core import package_data
from analytics_core.clickhouse import http_client
from analytics_core.migrations import files
from analytics_core.migrations.files import MigrationFile
from analytics_core.settings import ClickHouseSettings, Settings
from analytics_pipeline.resources.env_defaults import EnvDefaultsResource


class ClickHouseResource(EnvDefaultsResource):
    """Unset fields come from CLICKHOUSE_*; `migrations_dir` defaults to clickhouse/migrations."""

    host: str | None = Field(default=None, description="CLICKHOUSE_HOST when unset")
    http_port: int | None = Field(default=None, description="CLICKHOUSE_HTTP_PORT when unset")
    native_port: int | None = Field(default=None, description="CLICKHOUSE_NATIVE_PORT when unset")
    user: str | None = Field(default=None, description="CLICKHOUSE_USER when unset")
    password: str | None = Field(default=None, description="CLICKHOUSE_PASSWORD when unset")
    secure: bool | None = Field(default=None, description="CLICKHOUSE_SECURE when unset")
    migrations_dir: str | None = Field(
        default=None,
        description="Directory of vNNN_<name>.sql migration files (default: clickhouse/migrations)",
    )

    def settings(self) -> ClickHouseSettings:
        return self._overlay(Settings.from_env().clickhouse)

    def migrations_path(self) -> Traversable:
        """The configured directory, else the migrations shipped in the package."""
        if self.migrations_dir:
            return Path(self.migrations_dir)
        return package_data.clickhouse_migrations()

    def load_migrations(self) -> list[MigrationFile]:
        """Base schema + migration files in version order; raises MigrationFileError."""
        return files.load(self.migrations_path())

    def client(self, database: str | None = None) -> Client:
        """An HTTP client; the caller closes it."""
        return http_client(self.settings(), database=database)
