"""The Python API over the local stack, used by the CLI, the test suite and other tools.

Every function reads devstack's options ($DEVSTACK_*) when called, unless given `options`
(`options.load_options(env)`), which is how a test runs a topology of its own.

- `ensure_up(settings)`: idempotent start + health wait; raises `StackError`.
- `stop_service(settings, "clickhouse")` / `start_service(...)`: e.g. fault-injection tests;
  one server of a family by its instance name too (`kafka-2`, `clickhouse-ch2`).
- `status(settings)`: one `ServiceStatus` (pid, health, RSS) per server.
- `stop(settings)` keeps the data; `reset(settings)` deletes it.
- `topology(settings)` / `environment(settings)`: the local Kafka nodes and ClickHouse
  servers, and the variables that point a process at them.

A selection (`services`) names families (postgres, redis, kafka, clickhouse; aliases pg, ch;
`all`), each meaning all its servers, or single servers by instance name.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from analytics_core.settings import Settings

from . import process
from .clickhouse import ClickHouseService
from .environment import exports
from .kafka import KafkaService
from .options import ALIASES, ALL_SERVICES, Options, load_options
from .postgres import PostgresService
from .redis_service import RedisService
from .service import Service, ServiceStatus, StackError, start_all
from .topology import Topology, plan

__all__ = [
    "ALL_SERVICES",
    "ServiceStatus",
    "StackError",
    "ensure_up",
    "environment",
    "logs",
    "managed_services",
    "reset",
    "service",
    "start_service",
    "status",
    "stop",
    "stop_service",
    "topology",
]

log = logging.getLogger("devstack")

Services = Iterable[str] | str | None


def _options(start_timeout: float | None = None, options: Options | None = None) -> Options:
    """The given options (tests, tools), else devstack's variables read now."""
    opts = options or load_options()
    return opts if start_timeout is None else replace(opts, start_timeout=start_timeout)


def _servers(settings: Settings, opts: Options, topo: Topology, family: str) -> list[Service]:
    if family == "kafka":
        return [KafkaService(settings, opts, node, topo.kafka) for node in topo.kafka.nodes]
    if family == "clickhouse":
        return [ClickHouseService(settings, opts, server) for server in topo.clickhouse]
    if family == "postgres":
        return [PostgresService(settings, opts)]
    return [RedisService(settings, opts)]


def _tokens(services: Services) -> list[str]:
    items = services.split(",") if isinstance(services, str) else list(services or [])
    return [t.strip().lower() for t in items if t.strip()]


def _resolve(settings: Settings, opts: Options, services: Services) -> list[Service]:
    """The servers a selection names (None: every server of $DEVSTACK_SERVICES), in stack order."""
    tokens = list(opts.managed) if services is None else _tokens(services)
    families = {ALIASES.get(t, t) for t in tokens} & set(ALL_SERVICES)
    if "all" in tokens:
        families = set(ALL_SERVICES)
    # A family named here is run locally even when $DEVSTACK_SERVICES leaves it out.
    topo = plan(settings, opts, set(opts.managed) | families | _families_of_instances(tokens))
    everything = [svc for fam in ALL_SERVICES for svc in _servers(settings, opts, topo, fam)]
    by_name = {svc.name: svc for svc in everything}
    for token in tokens:
        known = token == "all" or ALIASES.get(token, token) in ALL_SERVICES or token in by_name
        if not known:
            servers = ", ".join(by_name)
            raise StackError(
                f"unknown service {token!r}; choose from {', '.join(ALL_SERVICES)} (or pg, ch), "
                f"or one server: {servers}"
            )
    return [svc for svc in everything if svc.family in families or svc.name in tokens]


def _families_of_instances(tokens: list[str]) -> set[str]:
    """kafka-2 -> kafka, clickhouse-ch2 -> clickhouse (instance names name their family)."""
    return {t.split("-", 1)[0] for t in tokens if "-" in t} & set(ALL_SERVICES)


def service(
    settings: Settings,
    name: str,
    *,
    start_timeout: float | None = None,
    options: Options | None = None,
) -> Service:
    """The Service object for one server (postgres, redis, clickhouse, kafka; or kafka-2, ...)."""
    svcs = _resolve(settings, _options(start_timeout, options), [name])
    if len(svcs) != 1:
        names = ", ".join(s.name for s in svcs)
        raise StackError(f"{name!r} names {len(svcs)} servers ({names}); name one of them")
    return svcs[0]


def managed_services() -> list[str]:
    """The services devstack runs locally: $DEVSTACK_SERVICES, default all four."""
    return list(load_options().managed)


def topology(settings: Settings, *, options: Options | None = None) -> Topology:
    """The Kafka nodes and ClickHouse servers of these settings and $DEVSTACK_* options."""
    opts = _options(options=options)
    return plan(settings, opts, opts.managed)


def environment(settings: Settings, *, options: Options | None = None) -> list[tuple[str, str]]:
    """(name, value) of every variable that points a process at the local topology."""
    opts = _options(options=options)
    return exports(settings, opts, plan(settings, opts, opts.managed))


def ensure_up(
    settings: Settings,
    services: Services = None,
    *,
    start_timeout: float | None = None,
    options: Options | None = None,
) -> None:
    """Start every selected server that is not running and wait until all really answer.

    `services` defaults to $DEVSTACK_SERVICES (all four when unset). Already running servers
    are adopted. All are launched at once (start_all). Raises StackError (server name, port
    or log file in the message) on failure.
    """
    opts = _options(start_timeout, options)
    svcs = _resolve(settings, opts, services)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    with process.file_lock(settings.state_dir / ".devstack.lock"):
        # Fail fast: every port/tool problem is reported before anything is started.
        for svc in svcs:
            if svc.pid() is None:
                svc.check_can_start()
        start_all(svcs)


def start_service(
    settings: Settings,
    name: str,
    *,
    start_timeout: float | None = None,
    options: Options | None = None,
) -> None:
    """Start one service or server (no-op when already running) and wait until it answers."""
    ensure_up(settings, [name], start_timeout=start_timeout, options=options)


def stop(
    settings: Settings, services: Services = None, *, options: Options | None = None
) -> list[str]:
    """Stop the selected servers that devstack started (data kept); return those stopped."""
    opts = _options(options=options)
    svcs = _resolve(settings, opts, services)
    if not settings.state_dir.exists():
        return []
    # All at once: a Kafka node stopped after the others has no quorum left to confirm its
    # controlled shutdown and would wait for the SIGKILL timeout.
    with (
        process.file_lock(settings.state_dir / ".devstack.lock"),
        ThreadPoolExecutor(max(1, len(svcs)), thread_name_prefix="devstack-stop") as pool,
    ):
        done = list(pool.map(lambda svc: svc.stop(), svcs))
    return [svc.name for svc, was_running in zip(svcs, done, strict=True) if was_running]


def stop_service(settings: Settings, name: str, *, options: Options | None = None) -> bool:
    """Stop one service or server devstack started; True if it was running."""
    return bool(stop(settings, [name], options=options))


def reset(
    settings: Settings, services: Services = None, *, options: Options | None = None
) -> list[str]:
    """Stop the selected servers and delete their state dirs (<state>/<server>/)."""
    opts = _options(options=options)
    svcs = _resolve(settings, opts, services)
    stop(settings, [s.name for s in svcs], options=opts)
    removed: list[str] = []
    for svc in svcs:
        if svc.dir.exists() or svc.dir.is_symlink():
            svc.wipe()
            removed.append(svc.name)
            log.info("removed %s", svc.dir)
    return removed


def status(settings: Settings, *, options: Options | None = None) -> list[ServiceStatus]:
    """One entry per local server, and one per external service (probed at its address)."""
    opts = _options(options=options)
    topo = plan(settings, opts, opts.managed)
    out: list[ServiceStatus] = []
    for family in ALL_SERVICES:
        if family in opts.managed:
            out += [svc.status(managed=True) for svc in _servers(settings, opts, topo, family)]
        else:
            out.append(_servers(settings, opts, topo, family)[0].status(managed=False))
    return out


def logs(settings: Settings, name: str, lines: int = 50, *, options: Options | None = None) -> str:
    """The last `lines` lines of one server's log file (of each, when a family has several)."""
    svcs = _resolve(settings, _options(options=options), [name])
    parts = []
    for svc in svcs:
        if not svc.log_path.exists():
            raise StackError(f"{svc.name}: no log file at {svc.log_path} (never started here?)")
        text = process.tail(svc.log_path, lines)
        parts.append(text if len(svcs) == 1 else f"==> {svc.name} ({svc.log_path}) <==\n{text}")
    return "\n".join(parts)
