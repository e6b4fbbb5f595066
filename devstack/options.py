"""devstack's own knobs (environment variables), read with the helpers from settings.py."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from analytics_core.settings import SettingsError, env_float, env_str

from .service import StackError

ALL_SERVICES: tuple[str, ...] = ("postgres", "redis", "kafka", "clickhouse")
ALIASES: dict[str, str] = {"pg": "postgres", "postgresql": "postgres", "ch": "clickhouse"}


def parse_services(raw: str | Iterable[str] | None) -> list[str]:
    """Normalise a comma list / iterable of service names (aliases pg, ch) in canonical order."""
    if raw is None:
        return list(ALL_SERVICES)
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    chosen: set[str] = set()
    for item in items:
        name = item.strip().lower()
        if not name:
            continue
        if name == "all":
            chosen.update(ALL_SERVICES)
            continue
        name = ALIASES.get(name, name)
        if name not in ALL_SERVICES:
            known = ", ".join(ALL_SERVICES)
            raise StackError(f"unknown service {item.strip()!r}; choose from {known} (or pg, ch)")
        chosen.add(name)
    return [s for s in ALL_SERVICES if s in chosen]


@dataclass(frozen=True)
class Options:
    managed: tuple[str, ...]
    start_timeout: float
    kafka_jars_dir: Path | None
    pg_os_user: str
    pg_bin_dir: str


def load_options(env: Mapping[str, str] | None = None) -> Options:
    e = os.environ if env is None else env
    raw = e.get("DEVSTACK_SERVICES")
    jars = e.get("KAFKA_JARS_DIR")
    try:
        return Options(
            managed=tuple(parse_services(raw if raw not in (None, "") else None)),
            start_timeout=env_float(e, "DEVSTACK_START_TIMEOUT", 90.0, minimum=1.0),
            kafka_jars_dir=Path(jars).expanduser() if jars else None,
            pg_os_user=env_str(e, "DEVSTACK_PG_OS_USER", "postgres"),
            pg_bin_dir=env_str(e, "DEVSTACK_PG_BIN", ""),
        )
    except SettingsError as exc:
        raise StackError(str(exc)) from None
