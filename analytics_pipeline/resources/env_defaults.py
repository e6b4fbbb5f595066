"""The rule every resource follows: a field left unset takes its value from the environment.

Defaults come from `analytics_core.settings.Settings.from_env()` (the one place environment
variables are read), so a resource with no configuration talks to exactly the servers the
router talks to. A field set in Dagster config overrides the environment for that field only.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any, TypeVar

from dagster import ConfigurableResource

S = TypeVar("S")


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
