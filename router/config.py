"""The router's typed settings, from environment variables (see `python -m router --help`)."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

from analytics_core.settings import (
    MAX_MEMORY_MB,
    Settings,
    SettingsError,
    env_bool,
    env_float,
    env_int,
    env_port,
    env_str,
)

# name, default, meaning: the single source for --help and README's table.
ROUTER_ENV: tuple[tuple[str, str, str], ...] = (
    ("ROUTER_GROUP_ID", "analytics-router", "Kafka consumer group shared by all router processes"),
    ("ROUTER_INSTANCE_ID", "<hostname>-<pid>", "Name written to each row's router_instance"),
    (
        "ROUTER_GROUP_INSTANCE_ID",
        "(none)",
        "Static group membership: a stable id unique per router; a restart under it takes "
        "its partitions back at once",
    ),
    (
        "ROUTER_SESSION_TIMEOUT_MS",
        "6000",
        "A router silent this long is dead: its partitions go to the others",
    ),
    ("ROUTER_FLUSH_MAX_ROWS", "1000000", "Flush the biggest clients when this many rows are open"),
    (
        "ROUTER_FLUSH_INTERVAL_MS",
        "1000",
        "Offsets whose events are durable are committed (accounting row first) this often",
    ),
    ("ROUTER_CLIENT_MIN_ROWS", "1000", "A client's rows are inserted once it has this many..."),
    ("ROUTER_CLIENT_MAX_WAIT_MS", "5000", "...or once its oldest buffered row is this old"),
    (
        "ROUTER_CATCHUP_MIN_ROWS",
        "50000",
        "While a Kafka backlog is drained: a client's rows are inserted at this many...",
    ),
    (
        "ROUTER_CATCHUP_MAX_WAIT_MS",
        "30000",
        "...or this old (or under memory pressure): fewer, bigger INSERTs",
    ),
    ("ROUTER_INSERT_CONCURRENCY", "4", "INSERTs in flight at once (one per client batch)"),
    ("ROUTER_MAX_BUFFERED_ROWS", "2000000", "Pause consumption while holding this many rows"),
    (
        "ROUTER_MAX_BUFFERED_MB",
        "256",
        "...or when rows held take this much memory (compressed); the biggest clients flush "
        "at 2/3 of it",
    ),
    ("ROUTER_DESTINATION_MAX_ATTEMPTS", "5", "Attempts before a rejected batch is dead-lettered"),
    (
        "ROUTER_RETRY_BACKOFF_MS",
        "500",
        "First retry delay; doubles up to ROUTER_RETRY_BACKOFF_MAX_MS",
    ),
    ("ROUTER_RETRY_BACKOFF_MAX_MS", "10000", "Longest retry delay for outages and rejections"),
    (
        "ROUTER_CACHE_LOCAL_TTL_S",
        "2",
        "In-process client cache TTL (invalidation clears it at once)",
    ),
    ("ROUTER_CACHE_TTL_S", "60", "Redis client cache TTL"),
    ("ROUTER_CACHE_NEGATIVE_TTL_S", "10", "Redis TTL of 'unknown client' entries"),
    ("ROUTER_REDIS_TIMEOUT_MS", "250", "Bound of one Redis call (connect or reply); no retries"),
    (
        "ROUTER_BREAKER_FAILURES",
        "3",
        "Consecutive Redis/PostgreSQL failures that open the circuit (calls skipped)",
    ),
    (
        "ROUTER_BREAKER_RETRY_S",
        "5",
        "An open circuit lets one probe call through after this long",
    ),
    (
        "PIPELINE_REPLAY_KEY",
        "(development key on loopback)",
        "Secret that signs dead-letter replays (shared with the reprocessing job)",
    ),
    ("ROUTER_METRICS_PORT", "9108", "Port of /metrics, /healthz and /readyz (0 disables)"),
    ("ROUTER_METRICS_HOST", "127.0.0.1", "Address of that port (containers: 0.0.0.0)"),
    ("ROUTER_SHUTDOWN_TIMEOUT_S", "20", "SIGTERM: flush, commit and exit within this bound"),
    ("ROUTER_RECONCILIATION", "on", "Write per-range accounting to pipeline_ops (on/off)"),
)


@dataclass(frozen=True)
class RouterSettings:
    common: Settings = field(default_factory=Settings)
    group_id: str = "analytics-router"
    instance_id: str = "router"
    group_instance_id: str = ""  # empty: dynamic membership
    session_timeout_ms: int = 6000
    flush_max_rows: int = 1_000_000
    flush_interval_s: float = 1.0
    max_buffered_rows: int = 2_000_000
    max_buffered_bytes: int = 256 * 2**20
    client_min_rows: int = 1000
    client_max_wait_s: float = 5.0
    catchup_min_rows: int = 50_000
    catchup_max_wait_s: float = 30.0
    insert_concurrency: int = 4
    destination_max_attempts: int = 5
    retry_backoff_s: float = 0.5
    retry_backoff_max_s: float = 10.0
    cache_local_ttl_s: float = 2.0
    cache_ttl_s: int = 60
    cache_negative_ttl_s: int = 10
    redis_timeout_s: float = 0.25
    breaker_failures: int = 3
    breaker_retry_s: float = 5.0
    metrics_port: int = 9108
    metrics_host: str = "127.0.0.1"
    shutdown_timeout_s: float = 20.0
    reconciliation: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RouterSettings:
        e = os.environ if env is None else env
        metrics_raw = e.get("ROUTER_METRICS_PORT", "")
        settings = cls(
            common=Settings.from_env(e),
            group_id=env_str(e, "ROUTER_GROUP_ID", "analytics-router"),
            instance_id=env_str(e, "ROUTER_INSTANCE_ID", f"{socket.gethostname()}-{os.getpid()}"),
            group_instance_id=e.get("ROUTER_GROUP_INSTANCE_ID", "").strip(),
            session_timeout_ms=env_int(
                e, "ROUTER_SESSION_TIMEOUT_MS", 6000, minimum=1000, maximum=3_600_000
            ),
            flush_max_rows=env_int(e, "ROUTER_FLUSH_MAX_ROWS", 1_000_000, minimum=1),
            flush_interval_s=env_int(e, "ROUTER_FLUSH_INTERVAL_MS", 1000, minimum=10) / 1000,
            max_buffered_rows=env_int(e, "ROUTER_MAX_BUFFERED_ROWS", 2_000_000, minimum=1),
            max_buffered_bytes=env_int(
                e, "ROUTER_MAX_BUFFERED_MB", 256, minimum=1, maximum=MAX_MEMORY_MB
            )
            * 2**20,
            client_min_rows=env_int(e, "ROUTER_CLIENT_MIN_ROWS", 1000, minimum=1),
            client_max_wait_s=env_int(e, "ROUTER_CLIENT_MAX_WAIT_MS", 5000, minimum=0) / 1000,
            catchup_min_rows=env_int(e, "ROUTER_CATCHUP_MIN_ROWS", 50_000, minimum=1),
            catchup_max_wait_s=env_int(e, "ROUTER_CATCHUP_MAX_WAIT_MS", 30_000, minimum=0) / 1000,
            insert_concurrency=env_int(e, "ROUTER_INSERT_CONCURRENCY", 4, minimum=1),
            destination_max_attempts=env_int(e, "ROUTER_DESTINATION_MAX_ATTEMPTS", 5, minimum=1),
            retry_backoff_s=env_int(e, "ROUTER_RETRY_BACKOFF_MS", 500, minimum=1) / 1000,
            retry_backoff_max_s=env_int(e, "ROUTER_RETRY_BACKOFF_MAX_MS", 10_000, minimum=1) / 1000,
            cache_local_ttl_s=env_float(e, "ROUTER_CACHE_LOCAL_TTL_S", 2.0),
            cache_ttl_s=env_int(e, "ROUTER_CACHE_TTL_S", 60, minimum=1),
            cache_negative_ttl_s=env_int(e, "ROUTER_CACHE_NEGATIVE_TTL_S", 10, minimum=1),
            redis_timeout_s=env_int(e, "ROUTER_REDIS_TIMEOUT_MS", 250, minimum=10) / 1000,
            breaker_failures=env_int(e, "ROUTER_BREAKER_FAILURES", 3, minimum=1),
            breaker_retry_s=env_float(e, "ROUTER_BREAKER_RETRY_S", 5.0, minimum=0.1),
            metrics_port=0 if metrics_raw == "0" else env_port(e, "ROUTER_METRICS_PORT", 9108),
            metrics_host=env_str(e, "ROUTER_METRICS_HOST", "127.0.0.1"),
            shutdown_timeout_s=env_float(e, "ROUTER_SHUTDOWN_TIMEOUT_S", 20.0, minimum=1.0),
            reconciliation=env_bool(e, "ROUTER_RECONCILIATION", True),
        )
        problem = settings.common.replay_key_problem()
        if problem is not None:
            raise SettingsError(problem)
        if settings.max_buffered_rows < settings.flush_max_rows:
            raise SettingsError(
                f"ROUTER_MAX_BUFFERED_ROWS={settings.max_buffered_rows} is below "
                f"ROUTER_FLUSH_MAX_ROWS={settings.flush_max_rows}; raise it or lower the flush size"
            )
        return settings
