"""Run config that refuses a bad value instead of crashing the step.

Dagster checks run config against its own schema at launch (types, required fields), which
has no ranges: a pydantic constraint (`Field(gt=0)`, `ge=1`) is only checked when Dagster
builds the config object, inside the step and inside its retry policy. A value out of range
then failed as a raw pydantic error, was retried, and alerted as critical.

`RefusingConfig` is the base of every run config with such constraints. Invariant: building
it either succeeds or raises a refusal (`analytics_pipeline.failures.refusal`: never retried,
a warning alert) whose description names each bad field, what it must be and what it got.
"""

from __future__ import annotations

from typing import Any

from dagster import Config
from pydantic import ValidationError

from analytics_pipeline.failures import refusal


def config_problems(exc: ValidationError) -> list[str]:
    """One line per bad field: `since_hours should be greater than 0 (got 0)`."""
    out = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "config"
        message = str(error["msg"])
        message = message.replace("Input should", f"{field} should", 1)
        if not message.startswith(field):
            message = f"{field}: {message}"
        out.append(f"{message} (got {error.get('input')!r})")
    return out


class RefusingConfig(Config):
    """A `Config` whose constraint violations are refusals (see the module docstring)."""

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            problems = config_problems(exc)
            raise refusal(
                "run config refused, nothing was done: " + "; ".join(problems),
                config_problems="; ".join(problems),
            ) from None
