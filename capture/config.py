"""The capture service's typed settings, read once per process from environment variables."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from analytics_core.event_contract import MAX_MESSAGE_BYTES
from analytics_core.quotas import Quota
from analytics_core.settings import (
    MAX_MEMORY_MB,
    Settings,
    SettingsError,
    env_float,
    env_int,
    env_port,
    env_str,
)
from capture.sdk_settings import parse_public_url

# The largest event that still fits a Kafka message of its own (contract v1), with room
# for the enclosing array.
EVENT_BYTES_CEILING = MAX_MESSAGE_BYTES - 1024
# CAPTURE_NATIVE: the compiled fast path (capture.native_path) used when installed / never
# / or the start refused without it.
NATIVE_MODES = ("auto", "off", "required")

# name, default, meaning: the single source for --help and the README.
CAPTURE_ENV: tuple[tuple[str, str, str], ...] = (
    ("CAPTURE_HOST", "127.0.0.1", "Address to listen on (containers: 0.0.0.0)"),
    ("CAPTURE_PORT", "8000", "Port of the capture API, /healthz, /readyz and /metrics"),
    ("CAPTURE_MAX_BODY_BYTES", "5242880", "Largest request body on the wire (else 413)"),
    (
        "CAPTURE_MAX_DECODED_BYTES",
        "10485760",
        "Largest body after gzip/base64 decoding (else 413; stops gzip bombs)",
    ),
    ("CAPTURE_MAX_EVENT_BYTES", "262144", "Largest single event once mapped (else rejected)"),
    (
        "CAPTURE_MAX_INFLIGHT_MB",
        "256",
        "Request bodies held at once; above it new requests get 503 (bounds memory)",
    ),
    (
        "CAPTURE_MAX_CONCURRENT_REQUESTS",
        "4096",
        "Capture requests processed at once; above it new ones get 503 (bounds memory)",
    ),
    (
        "CAPTURE_MAX_CONNECTIONS",
        "8192",
        "Open client connections, idle keep-alive ones included; more wait in the "
        "accept queue (needs as many open files: the soft limit is raised, or the "
        "default lowered, to fit)",
    ),
    ("CAPTURE_ACK_TIMEOUT_MS", "10000", "Wait this long for Kafka's acknowledgement, else 503"),
    ("CAPTURE_RETRY_AFTER_S", "5", "Retry-After of 503 answers (Kafka or registry unavailable)"),
    ("CAPTURE_BODY_TIMEOUT_S", "30", "A request body must arrive within this (else 408)"),
    ("CAPTURE_HEADER_TIMEOUT_MS", "10000", "Request headers must arrive within this"),
    ("CAPTURE_KAFKA_LINGER_MS", "2", "Producer linger.ms (batching delay)"),
    (
        "CAPTURE_KAFKA_MESSAGE_TIMEOUT_MS",
        "300000",
        "Producer message.timeout.ms: how long a message may wait for Kafka to come back",
    ),
    ("CAPTURE_KAFKA_QUEUE_MB", "64", "Producer queue size; when full, requests get 503"),
    ("CAPTURE_QUOTA_EVENTS_PER_S", "2000", "Default quota: events per second per client"),
    ("CAPTURE_QUOTA_BURST", "20000", "Default quota: burst (token bucket size) per client"),
    ("CAPTURE_QUOTA_CACHE_S", "10", "How long a client's quota is cached in-process"),
    (
        "CAPTURE_QUOTA_LEASE_MS",
        "100",
        "Quota tokens a process takes from Redis ahead, in ms of the client's rate (0: none)",
    ),
    (
        "CAPTURE_RETRY_MEMORY_S",
        "600",
        "Remember event ids of unanswered or slow requests this long, so SDK retries of "
        "events already in Kafka are not produced twice",
    ),
    ("CAPTURE_RETRY_MEMORY_EVENTS", "1000000", "...at most this many event ids"),
    ("CAPTURE_RETRY_MEMORY_AFTER_MS", "1000", "...for requests answered later than this"),
    (
        "CAPTURE_RESTART_MEMORY_S",
        "120",
        "At start, remember the event ids written to the raw topic in the last N s as "
        "acknowledged: retries of a killed process's requests are not written twice (0: off)",
    ),
    ("CAPTURE_CORS_ORIGINS", "*", "Comma-separated origins allowed by CORS (* = any)"),
    (
        "CAPTURE_PUBLIC_URL",
        "",
        "URL browsers reach this service at (behind a proxy or TLS terminator), named in "
        "the settings analytics-next loads; unset: the request's own scheme and Host",
    ),
    (
        "CAPTURE_REGISTRY_WAIT_MS",
        "1000",
        "A request waits this long for a registry lookup (write key, quota); past it the "
        "last known verdict or quota holds, and a key never seen gets 503",
    ),
    ("CAPTURE_CACHE_LOCAL_TTL_S", "2", "In-process client and write-key cache TTL"),
    ("CAPTURE_CACHE_TTL_S", "60", "Redis client and write-key cache TTL"),
    ("CAPTURE_CACHE_NEGATIVE_TTL_S", "10", "Redis TTL of unknown clients and write keys"),
    ("CAPTURE_SHUTDOWN_TIMEOUT_S", "20", "SIGTERM: finish in-flight requests within this"),
    (
        "CAPTURE_NATIVE",
        "auto",
        "Compiled fast path for Segment batches (native/): auto (used when installed), "
        "off, required (refuse to start without it)",
    ),
)


def _listen_address(host: str) -> str:
    """CAPTURE_HOST as granian binds it: an IP address, not a name."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise SettingsError(
            f"CAPTURE_HOST={host!r} is not an IP address; use one such as 127.0.0.1 "
            "(this machine only), 0.0.0.0 (every IPv4 interface) or ::"
        ) from None
    return host


@dataclass(frozen=True)
class CaptureSettings:
    common: Settings = field(default_factory=Settings)
    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = 5 * 2**20
    max_decoded_bytes: int = 10 * 2**20
    max_event_bytes: int = 256 * 2**10
    max_inflight_bytes: int = 256 * 2**20
    max_concurrent_requests: int = 4096
    max_connections: int = 8192
    max_connections_explicit: bool = False  # set by the operator: never lowered to fit
    ack_timeout_s: float = 10.0
    retry_after_s: int = 5
    body_timeout_s: float = 30.0
    header_timeout_ms: int = 10_000
    kafka_linger_ms: int = 2
    kafka_message_timeout_ms: int = 300_000
    kafka_queue_kbytes: int = 64 * 1024
    default_quota: Quota = field(default_factory=lambda: Quota(2000.0, 20_000))
    quota_cache_s: float = 10.0
    quota_lease_s: float = 0.1
    retry_memory_s: float = 600.0
    retry_memory_events: int = 1_000_000
    retry_memory_after_s: float = 1.0
    restart_memory_s: float = 120.0
    cors_origins: tuple[str, ...] = ("*",)
    public_url: str = ""  # "" = each settings request's own scheme and Host
    registry_wait_s: float = 1.0
    cache_local_ttl_s: float = 2.0
    cache_ttl_s: int = 60
    cache_negative_ttl_s: int = 10
    shutdown_timeout_s: float = 20.0
    native: str = "auto"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> CaptureSettings:
        e = os.environ if env is None else env
        settings = cls(
            common=Settings.from_env(e),
            host=_listen_address(env_str(e, "CAPTURE_HOST", "127.0.0.1")),
            port=env_port(e, "CAPTURE_PORT", 8000),
            max_body_bytes=env_int(e, "CAPTURE_MAX_BODY_BYTES", 5 * 2**20, minimum=1024),
            max_decoded_bytes=env_int(e, "CAPTURE_MAX_DECODED_BYTES", 10 * 2**20, minimum=1024),
            max_event_bytes=env_int(e, "CAPTURE_MAX_EVENT_BYTES", 256 * 2**10, minimum=256),
            max_inflight_bytes=env_int(
                e, "CAPTURE_MAX_INFLIGHT_MB", 256, minimum=1, maximum=MAX_MEMORY_MB
            )
            * 2**20,
            max_concurrent_requests=env_int(e, "CAPTURE_MAX_CONCURRENT_REQUESTS", 4096, minimum=1),
            max_connections=env_int(e, "CAPTURE_MAX_CONNECTIONS", 8192, minimum=16),
            max_connections_explicit=bool(e.get("CAPTURE_MAX_CONNECTIONS", "").strip()),
            ack_timeout_s=env_int(e, "CAPTURE_ACK_TIMEOUT_MS", 10_000, minimum=100) / 1000,
            retry_after_s=env_int(e, "CAPTURE_RETRY_AFTER_S", 5, minimum=1),
            body_timeout_s=env_float(e, "CAPTURE_BODY_TIMEOUT_S", 30.0, minimum=0.1),
            header_timeout_ms=env_int(e, "CAPTURE_HEADER_TIMEOUT_MS", 10_000, minimum=100),
            kafka_linger_ms=env_int(e, "CAPTURE_KAFKA_LINGER_MS", 2),
            kafka_message_timeout_ms=env_int(
                e, "CAPTURE_KAFKA_MESSAGE_TIMEOUT_MS", 300_000, minimum=1000
            ),
            kafka_queue_kbytes=env_int(
                e, "CAPTURE_KAFKA_QUEUE_MB", 64, minimum=1, maximum=2_097_151
            )
            * 1024,
            default_quota=Quota(
                env_float(e, "CAPTURE_QUOTA_EVENTS_PER_S", 2000.0, minimum=0.001),
                env_int(e, "CAPTURE_QUOTA_BURST", 20_000, minimum=1),
            ),
            quota_cache_s=env_float(e, "CAPTURE_QUOTA_CACHE_S", 10.0),
            quota_lease_s=env_int(e, "CAPTURE_QUOTA_LEASE_MS", 100, minimum=0) / 1000,
            retry_memory_s=env_float(e, "CAPTURE_RETRY_MEMORY_S", 600.0),
            retry_memory_events=env_int(e, "CAPTURE_RETRY_MEMORY_EVENTS", 1_000_000),
            retry_memory_after_s=env_int(e, "CAPTURE_RETRY_MEMORY_AFTER_MS", 1000) / 1000,
            restart_memory_s=env_float(e, "CAPTURE_RESTART_MEMORY_S", 120.0),
            cors_origins=tuple(
                o.strip() for o in env_str(e, "CAPTURE_CORS_ORIGINS", "*").split(",") if o.strip()
            ),
            public_url=parse_public_url("CAPTURE_PUBLIC_URL", e.get("CAPTURE_PUBLIC_URL", "")),
            registry_wait_s=env_int(e, "CAPTURE_REGISTRY_WAIT_MS", 1000, minimum=10) / 1000,
            cache_local_ttl_s=env_float(e, "CAPTURE_CACHE_LOCAL_TTL_S", 2.0),
            cache_ttl_s=env_int(e, "CAPTURE_CACHE_TTL_S", 60, minimum=1),
            cache_negative_ttl_s=env_int(e, "CAPTURE_CACHE_NEGATIVE_TTL_S", 10, minimum=1),
            shutdown_timeout_s=env_float(e, "CAPTURE_SHUTDOWN_TIMEOUT_S", 20.0, minimum=1.0),
            native=env_str(e, "CAPTURE_NATIVE", "auto").strip().lower(),
        )
        if settings.native not in NATIVE_MODES:
            raise SettingsError(
                f"CAPTURE_NATIVE={settings.native!r}: use one of {', '.join(NATIVE_MODES)}"
            )
        if settings.max_event_bytes > EVENT_BYTES_CEILING:
            raise SettingsError(
                f"CAPTURE_MAX_EVENT_BYTES={settings.max_event_bytes} is above "
                f"{EVENT_BYTES_CEILING}: an event must fit one Kafka message (contract v1)"
            )
        if settings.max_decoded_bytes < settings.max_body_bytes:
            raise SettingsError(
                "CAPTURE_MAX_DECODED_BYTES must be at least CAPTURE_MAX_BODY_BYTES "
                f"({settings.max_decoded_bytes} < {settings.max_body_bytes})"
            )
        return settings
