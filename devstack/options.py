"""devstack's own knobs (environment variables), read with the helpers from settings.py."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from analytics_core.settings import (
    SettingsError,
    clickhouse_prefix,
    env_float,
    env_int,
    env_port,
    env_str,
)

from .service import StackError

ALL_SERVICES: tuple[str, ...] = ("postgres", "redis", "kafka", "clickhouse")
ALIASES: dict[str, str] = {"pg": "postgres", "postgresql": "postgres", "ch": "clickhouse"}
# Local Kafka nodes / ClickHouse servers one machine may run (each JVM/engine costs ~0.3 GiB).
MAX_KAFKA_BROKERS = 5
MAX_CLICKHOUSE_SERVERS = 4


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


def extra_target_names(servers: int) -> tuple[str, ...]:
    """The ClickHouse target names of the local servers after the first: ch2, ch3, ..."""
    return tuple(f"ch{k}" for k in range(2, servers + 1))


@dataclass(frozen=True)
class TargetPorts:
    """Ports one extra local ClickHouse server was given (None: derived from the default's)."""

    http_port: int | None
    native_port: int | None


@dataclass(frozen=True)
class Options:
    managed: tuple[str, ...]
    start_timeout: float
    kafka_jars_dir: Path | None
    pg_os_user: str
    pg_bin_dir: str
    kafka_brokers: int = 1
    clickhouse_servers: int = 1
    # Keyed by the names of extra_target_names(clickhouse_servers), from CLICKHOUSE_<NAME>_*.
    target_ports: Mapping[str, TargetPorts] = field(default_factory=dict)


def _bounded(e: Mapping[str, str], name: str, maximum: int) -> int:
    value = env_int(e, name, 1, minimum=1)
    if value > maximum:
        raise SettingsError(f"{name}={value} is above the maximum {maximum} for one machine")
    return value


def _quorum_size(e: Mapping[str, str], name: str) -> int:
    value = _bounded(e, name, MAX_KAFKA_BROKERS)
    if value % 2 == 0:
        raise SettingsError(
            f"{name}={value}: use an odd number (1, 3 or 5); every node is a KRaft controller "
            f"and a quorum of {value} survives no more failures than one of {value - 1}"
        )
    return value


def _optional_port(e: Mapping[str, str], name: str) -> int | None:
    return env_port(e, name, 1) if e.get(name) else None


def load_options(env: Mapping[str, str] | None = None) -> Options:
    e = os.environ if env is None else env
    raw = e.get("DEVSTACK_SERVICES")
    jars = e.get("KAFKA_JARS_DIR")
    try:
        servers = _bounded(e, "DEVSTACK_CLICKHOUSE_SERVERS", MAX_CLICKHOUSE_SERVERS)
        return Options(
            managed=tuple(parse_services(raw if raw not in (None, "") else None)),
            start_timeout=env_float(e, "DEVSTACK_START_TIMEOUT", 90.0, minimum=1.0),
            kafka_jars_dir=Path(jars).expanduser() if jars else None,
            pg_os_user=env_str(e, "DEVSTACK_PG_OS_USER", "postgres"),
            pg_bin_dir=env_str(e, "DEVSTACK_PG_BIN", ""),
            kafka_brokers=_quorum_size(e, "DEVSTACK_KAFKA_BROKERS"),
            clickhouse_servers=servers,
            target_ports={
                name: TargetPorts(
                    _optional_port(e, f"{clickhouse_prefix(name)}_HTTP_PORT"),
                    _optional_port(e, f"{clickhouse_prefix(name)}_NATIVE_PORT"),
                )
                for name in extra_target_names(servers)
            },
        )
    except SettingsError as exc:
        raise StackError(str(exc)) from None
