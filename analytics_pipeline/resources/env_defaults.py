"""The rule every resource follows: a field left unset takes its value from the process's
settings, read from the environment once per process.

`process_settings()` is `analytics_core.settings.Settings.from_env()` read on first use (never
at import) and kept for the life of the process: the code server reads it when it first
needs a connection, each run worker when its run starts. A resource with no configuration
therefore talks to exactly the servers the router talks to; a field set in Dagster config
overrides the environment for that field only. Secrets stay unset in Dagster config, so the
UI never shows them.
"""

from __future__ import annotations

import functools
from dataclasses import fields, replace
from typing import Any, TypeVar

from dagster import ConfigurableResource

from analytics_core.settings import Settings

S = TypeVar("S")


@functools.cache
def process_settings() -> Settings:
    """The environment's settings, read once per process (tests: `cache_clear()`)."""
    return Settings.from_env()


class EnvDefaultsResource(ConfigurableResource):
    """Base class: fields named like the settings dataclass fields; None means 'from env'."""

    def _overlay(self, base: S) -> S:
        """`base` with every field that is set on this resource replaced by the resource's value."""
        changes: dict[str, Any] = {}
        for f in fields(base):  # type: ignore[arg-type]
            value = getattr(self, f.name, None)
            if value is not None:
                changes[f.name] = value
        return replace(base, **changes)  # type: ignore[type-var]
