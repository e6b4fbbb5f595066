"""The Python API over the local stack, used by the CLI, the test suite and other tools.

- `ensure_up(settings)`: idempotent start + health wait; raises `StackError`.
- `stop_service(settings, "clickhouse")` / `start_service(...)`: e.g. fault-injection tests.
- `status(settings)`: one `ServiceStatus` (pid, health, RSS) per service.
- `stop(settings)` keeps the data; `reset(settings)` deletes it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import replace

from analytics_core.settings import Settings

from . import process
from .clickhouse import ClickHouseService
from .kafka import KafkaService
from .options import ALL_SERVICES, Options, load_options, parse_services
from .postgres import PostgresService
from .redis_service import RedisService
from .service import Service, ServiceStatus, StackError

__all__ = [
    "ALL_SERVICES",
    "ServiceStatus",
    "StackError",
    "ensure_up",
    "logs",
    "managed_services",
    "reset",
    "service",
    "start_service",
    "status",
    "stop",
    "stop_service",
]

log = logging.getLogger("devstack")

_CLASSES: dict[str, type[Service]] = {
    "postgres": PostgresService,
    "redis": RedisService,
    "kafka": KafkaService,
    "clickhouse": ClickHouseService,
}

Services = Iterable[str] | str | None


def _options(start_timeout: float | None) -> Options:
    opts = load_options()
    return opts if start_timeout is None else replace(opts, start_timeout=start_timeout)


def _select(services: Services, opts: Options) -> list[str]:
    return list(opts.managed) if services is None else parse_services(services)


def service(settings: Settings, name: str, *, start_timeout: float | None = None) -> Service:
    """The Service object for one name (postgres, redis, kafka, clickhouse; aliases pg, ch)."""
    names = parse_services([name])
    if len(names) != 1:
        raise StackError(f"name one service, not {name!r}")
    return _CLASSES[names[0]](settings, _options(start_timeout))


def managed_services() -> list[str]:
    """The services devstack runs locally: $DEVSTACK_SERVICES, default all four."""
    return list(load_options().managed)


def ensure_up(
    settings: Settings, services: Services = None, *, start_timeout: float | None = None
) -> None:
    """Start every selected service that is not running and wait until all really answer.

    `services` defaults to $DEVSTACK_SERVICES (all four when unset). Already running services
    are adopted. Raises StackError (service name, port or log file in the message) on failure.
    """
    opts = _options(start_timeout)
    names = _select(services, opts)
    svcs = [_CLASSES[n](settings, opts) for n in names]
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    with process.file_lock(settings.state_dir / ".devstack.lock"):
        # Fail fast: every port/tool problem is reported before anything is started.
        for svc in svcs:
            if svc.pid() is None:
                svc.check_can_start()
        for svc in svcs:
            svc.start()


def start_service(settings: Settings, name: str, *, start_timeout: float | None = None) -> None:
    """Start one service (no-op when already running) and wait until it answers."""
    ensure_up(settings, [name], start_timeout=start_timeout)


def stop(settings: Settings, services: Services = None) -> list[str]:
    """Stop the selected services that devstack started (data kept); return those stopped."""
    opts = _options(None)
    names = _select(services, opts)
    stopped: list[str] = []
    if not settings.state_dir.exists():
        return stopped
    with process.file_lock(settings.state_dir / ".devstack.lock"):
        # Reverse order: consumers of others (none today) first, Postgres last.
        for name in reversed(names):
            if _CLASSES[name](settings, opts).stop():
                stopped.append(name)
    return stopped


def stop_service(settings: Settings, name: str) -> bool:
    """Stop one service devstack started; True if it was running."""
    return bool(stop(settings, [name]))


def reset(settings: Settings, services: Services = None) -> list[str]:
    """Stop the selected services and delete their state dirs (<state>/<service>/)."""
    opts = _options(None)
    names = _select(services, opts)
    stop(settings, names)
    removed: list[str] = []
    for name in names:
        svc = _CLASSES[name](settings, opts)
        if svc.dir.exists() or svc.dir.is_symlink():
            svc.wipe()
            removed.append(name)
            log.info("removed %s", svc.dir)
    return removed


def status(settings: Settings) -> list[ServiceStatus]:
    """One entry per service (managed or external): address, pid, health, RSS."""
    opts = _options(None)
    return [
        _CLASSES[name](settings, opts).status(managed=name in opts.managed) for name in ALL_SERVICES
    ]


def logs(settings: Settings, name: str, lines: int = 50) -> str:
    """The last `lines` lines of one service's log file."""
    svc = service(settings, name)
    if not svc.log_path.exists():
        raise StackError(f"{svc.name}: no log file at {svc.log_path} (never started here?)")
    return process.tail(svc.log_path, lines)
