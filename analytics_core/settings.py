"""One typed settings object per process, read from environment variables.

Every variable has a documented default that points at the local stack
(`python -m devstack up`). Users with their own servers override the
connection variables; `.env.example` lists them all. Secrets are held in
fields whose `repr` is masked so they never reach a log line.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

from analytics_core.naming import IDENTIFIER_PATTERN

if TYPE_CHECKING:
    from analytics_core.dead_letter import ReplayKeys

REPO_ROOT = Path(__file__).resolve().parent.parent


class SettingsError(ValueError):
    """A configuration value is missing or malformed; the message says what to fix."""


# Whole-number settings fit a signed 64-bit integer with room (librdkafka, ClickHouse and
# PostgreSQL take them as such; the largest meaningful one is bytes of memory).
MAX_SETTING_INT = 2**53
MAX_MEMORY_MB = 2**20  # a memory bound in MiB: at most 1 TiB


def _env_str(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name)
    return default if value is None or value == "" else value


def _env_int(
    env: Mapping[str, str],
    name: str,
    default: int,
    *,
    minimum: int = 0,
    maximum: int = MAX_SETTING_INT,
) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer; set it to a whole number") from None
    if value < minimum:
        raise SettingsError(f"{name}={value} is below the minimum {minimum}")
    if value > maximum:
        raise SettingsError(f"{name}={value} is above the maximum {maximum}")
    return value


def _env_float(env: Mapping[str, str], name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if not math.isfinite(value):
        raise SettingsError(f"{name}={raw!r} is not a finite number")
    if value < minimum:
        raise SettingsError(f"{name}={value} is below the minimum {minimum}")
    return value


def _env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name}={raw!r} is not a boolean; use true or false")


def _env_identifier(env: Mapping[str, str], name: str, default: str) -> str:
    """A ClickHouse database name (analytics_core.naming's identifier rule)."""
    value = _env_str(env, name, default)
    if not IDENTIFIER_PATTERN.fullmatch(value):
        raise SettingsError(
            f"{name}={value!r} is not a database name: use letters, digits and '_', "
            "starting with a letter or '_', at most 64 characters"
        )
    return value


_KAFKA_PROTOCOLS = ("plaintext://", "ssl://", "sasl_plaintext://", "sasl_ssl://")
_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):([0-9]{1,5})")


def _bootstrap_entries(bootstrap: str) -> list[tuple[str, str]]:
    """(listener protocol with its "://", or "", server) of each entry of a bootstrap
    list ("host:port,SSL://host:port")."""
    entries = []
    for entry in bootstrap.split(","):
        protocol, separator, server = entry.strip().rpartition("://")
        entries.append((protocol + separator, server))
    return entries


def _env_bootstrap(env: Mapping[str, str], name: str, default: str) -> str:
    """A comma-separated list of host:port (an optional Kafka listener protocol first)."""
    value = _env_str(env, name, default)
    for protocol, server in _bootstrap_entries(value):
        match = _HOST_PORT.fullmatch(server)
        if (
            (protocol and protocol.lower() not in _KAFKA_PROTOCOLS)
            or match is None
            or not 1 <= int(match.group(2)) <= 65535
        ):
            raise SettingsError(
                f"{name}={value!r}: {protocol + server!r} is not host:port (port 1-65535); "
                "use a comma-separated list such as 127.0.0.1:29192,kafka-2:9092"
            )
    return value


def _env_port(env: Mapping[str, str], name: str, default: int) -> int:
    port = _env_int(env, name, default, minimum=1)
    if port > 65535:
        raise SettingsError(f"{name}={port} is not a TCP port (1-65535)")
    return port


POSTGRES_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


@dataclass(frozen=True)
class PostgresSettings:
    host: str = "127.0.0.1"
    port: int = 25432
    dbname: str = "analytics_meta"
    user: str = "analytics"
    password: str = field(default="", repr=False)
    dagster_dbname: str = "dagster"
    sslmode: str = "prefer"  # libpq sslmode (its default), one of POSTGRES_SSLMODES
    sslrootcert: str = ""  # CA file for verify-ca / verify-full
    # The router and capture give up on one PostgreSQL call after this (a hung server).
    call_timeout_s: float = 3.0

    def dsn(self, dbname: str | None = None) -> str:
        """libpq keyword DSN; values are quoted so passwords with spaces work."""

        def q(value: str) -> str:
            return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"

        parts = [
            f"host={q(self.host)}",
            f"port={self.port}",
            f"dbname={q(dbname or self.dbname)}",
            f"user={q(self.user)}",
        ]
        if self.password:
            parts.append(f"password={q(self.password)}")
        parts.append(f"sslmode={self.sslmode}")
        if self.sslrootcert:
            parts.append(f"sslrootcert={q(self.sslrootcert)}")
        return " ".join(parts)


@dataclass(frozen=True)
class RedisSettings:
    host: str = "127.0.0.1"
    port: int = 26379
    db: int = 0
    password: str = field(default="", repr=False)
    tls: bool = False
    ca_cert: str = ""  # CA file to verify the server with TLS (default: the system's)


KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap_servers: str = "127.0.0.1:29192"
    raw_topic: str = "shared_raw_events"
    dead_letter_topic: str = "shared_dead_letter"
    topic_partitions: int = 6
    # Only used by the local stack: the KRaft controller listener.
    controller_port: int = 29193
    security_protocol: str = "PLAINTEXT"  # one of KAFKA_SECURITY_PROTOCOLS
    ssl_ca_location: str = ""  # CA file for SSL / SASL_SSL (default: the system's)
    sasl_mechanism: str = ""  # one of KAFKA_SASL_MECHANISMS when the protocol is SASL_*
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)


@dataclass(frozen=True)
class ClickHouseSettings:
    host: str = "127.0.0.1"
    http_port: int = 28123
    native_port: int = 29000
    user: str = "default"
    password: str = field(default="", repr=False)
    secure: bool = False
    # Shared database for pipeline bookkeeping (router accounting); never a client's.
    ops_database: str = "pipeline_ops"
    ca_cert: str = ""  # CA file to verify the server with `secure` (default: the system's)
    verify: bool = True  # verify the server's certificate with `secure`
    # The name of the target these settings describe (CLICKHOUSE_TARGETS); "default" is
    # the one configured by the plain CLICKHOUSE_* variables.
    target: str = "default"
    # A ClickHouse cluster name: DDL runs ON CLUSTER with replicated engines. Empty: one server.
    cluster: str = ""


DEFAULT_TARGET = "default"
_TARGET_NAME = re.compile(r"[a-z][a-z0-9_]{0,30}")


# The local stack's replay key: public, so it is accepted only while every service is on
# loopback (`Settings.replay_key_problem`); anywhere else PIPELINE_REPLAY_KEY is required.
DEVELOPMENT_REPLAY_KEY = "local-stack-replay-key-not-a-secret"
MIN_REPLAY_KEY_CHARS = 32
_LOOPBACK = re.compile(r"localhost|127(\.[0-9]{1,3}){3}|::1|\[::1\]", re.IGNORECASE)


@dataclass(frozen=True)
class ReplaySettings:
    """The HMAC key that signs dead-letter replays (reprocessing job) and verifies them
    (router); only those two hold it. `previous_key` still verifies during a rotation."""

    key: str = field(default=DEVELOPMENT_REPLAY_KEY, repr=False)
    previous_key: str = field(default="", repr=False)

    def keys(self) -> ReplayKeys:
        from analytics_core.dead_letter import ReplayKeys  # the envelope imports settings-free

        return ReplayKeys(self.key.encode(), self.previous_key.encode() or None)


def _is_loopback(host: str) -> bool:
    return bool(_LOOPBACK.fullmatch(host.strip()))


def _kafka_hosts(bootstrap: str) -> list[str]:
    """Host names of a bootstrap list ("host:port,[::1]:port,SSL://host:port")."""
    hosts = []
    for _protocol, server in _bootstrap_entries(bootstrap):
        with_port = server.count(":") == 1 or "]" in server
        hosts.append(server.rsplit(":", 1)[0] if with_port else server)
    return hosts


@dataclass(frozen=True)
class Settings:
    postgres: PostgresSettings = field(default_factory=PostgresSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    clickhouse: ClickHouseSettings = field(default_factory=ClickHouseSettings)
    replay: ReplaySettings = field(default_factory=ReplaySettings)
    state_dir: Path = REPO_ROOT / ".state"
    # Extra ClickHouse targets by name (CLICKHOUSE_TARGETS); `clickhouse` is the default one.
    extra_targets: tuple[ClickHouseSettings, ...] = ()

    def clickhouse_targets(self) -> dict[str, ClickHouseSettings]:
        """Every configured ClickHouse target by name, the default first."""
        return {DEFAULT_TARGET: self.clickhouse, **{t.target: t for t in self.extra_targets}}

    def remote_servers(self) -> list[tuple[str, str]]:
        """(variable, host) for every configured server that is not on this machine's
        loopback, in the order of the settings: PostgreSQL, Redis, Kafka's bootstrap
        servers, each ClickHouse target."""
        named = [("POSTGRES_HOST", self.postgres.host), ("REDIS_HOST", self.redis.host)]
        named += [
            ("KAFKA_BOOTSTRAP_SERVERS", h) for h in _kafka_hosts(self.kafka.bootstrap_servers)
        ]
        for target in self.clickhouse_targets().values():
            named.append((f"{clickhouse_prefix(target.target)}_HOST", target.host))
        return [(variable, host) for variable, host in named if not _is_loopback(host)]

    def replay_key_problem(self) -> str | None:
        """Why the replay key can not be used here, or None. Processes that sign or verify
        replays (router, reprocessing) refuse to start on a problem."""
        key = self.replay.key
        if key == DEVELOPMENT_REPLAY_KEY:
            remote = sorted({host for _variable, host in self.remote_servers()})
            if remote:
                return (
                    "PIPELINE_REPLAY_KEY is not set: the built-in development key is only "
                    f"accepted while every service is on loopback, and {', '.join(remote)} "
                    f"is not; set PIPELINE_REPLAY_KEY to a secret of {MIN_REPLAY_KEY_CHARS}+ "
                    "characters shared by the router and the reprocessing job"
                )
            return None
        if len(key) < MIN_REPLAY_KEY_CHARS:
            return (
                f"PIPELINE_REPLAY_KEY is {len(key)} characters; use at least "
                f"{MIN_REPLAY_KEY_CHARS} (e.g. python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))')"
            )
        return None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        e = os.environ if env is None else env
        return cls(
            postgres=PostgresSettings(
                host=_env_str(e, "POSTGRES_HOST", "127.0.0.1"),
                port=_env_port(e, "POSTGRES_PORT", 25432),
                dbname=_env_str(e, "POSTGRES_DB", "analytics_meta"),
                user=_env_str(e, "POSTGRES_USER", "analytics"),
                password=e.get("POSTGRES_PASSWORD", ""),
                dagster_dbname=_env_str(e, "DAGSTER_POSTGRES_DB", "dagster"),
                sslmode=_env_choice(e, "POSTGRES_SSLMODE", "prefer", POSTGRES_SSLMODES),
                sslrootcert=_env_file(e, "POSTGRES_SSLROOTCERT"),
                call_timeout_s=_env_float(e, "POSTGRES_CALL_TIMEOUT_S", 3.0, minimum=0.1),
            ),
            redis=RedisSettings(
                host=_env_str(e, "REDIS_HOST", "127.0.0.1"),
                port=_env_port(e, "REDIS_PORT", 26379),
                db=_env_int(e, "REDIS_DB", 0),
                password=e.get("REDIS_PASSWORD", ""),
                tls=_env_bool(e, "REDIS_TLS", False),
                ca_cert=_env_file(e, "REDIS_CA_CERT"),
            ),
            kafka=_kafka_from_env(e),
            clickhouse=_clickhouse_from_env(e, "CLICKHOUSE", DEFAULT_TARGET),
            replay=ReplaySettings(
                key=_env_str(e, "PIPELINE_REPLAY_KEY", DEVELOPMENT_REPLAY_KEY),
                previous_key=e.get("PIPELINE_REPLAY_KEY_PREVIOUS", ""),
            ),
            state_dir=Path(_env_str(e, "PIPELINE_STATE_DIR", str(REPO_ROOT / ".state"))),
            extra_targets=_extra_targets_from_env(e),
        )


def _env_choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = _env_str(env, name, default)
    if value not in choices:
        raise SettingsError(f"{name}={value!r} is not one of {', '.join(choices)}")
    return value


def _env_file(env: Mapping[str, str], name: str) -> str:
    """A path to a file that must exist (CA bundles): checked at start, not at first use."""
    value = env.get(name, "")
    if value and not Path(value).is_file():
        raise SettingsError(f"{name}={value!r} is not a readable file")
    return value


def _kafka_from_env(e: Mapping[str, str]) -> KafkaSettings:
    protocol = _env_str(e, "KAFKA_SECURITY_PROTOCOL", "PLAINTEXT").upper()
    if protocol not in KAFKA_SECURITY_PROTOCOLS:
        raise SettingsError(
            f"KAFKA_SECURITY_PROTOCOL={protocol!r} is not one of "
            f"{', '.join(KAFKA_SECURITY_PROTOCOLS)}"
        )
    mechanism = e.get("KAFKA_SASL_MECHANISM", "")
    if protocol.startswith("SASL_"):
        if mechanism not in KAFKA_SASL_MECHANISMS:
            raise SettingsError(
                f"KAFKA_SECURITY_PROTOCOL={protocol} needs KAFKA_SASL_MECHANISM, one of "
                f"{', '.join(KAFKA_SASL_MECHANISMS)} (got {mechanism!r})"
            )
        if not e.get("KAFKA_SASL_USERNAME") or not e.get("KAFKA_SASL_PASSWORD"):
            raise SettingsError(
                f"KAFKA_SECURITY_PROTOCOL={protocol} needs KAFKA_SASL_USERNAME and "
                "KAFKA_SASL_PASSWORD"
            )
    elif mechanism:
        raise SettingsError(
            f"KAFKA_SASL_MECHANISM={mechanism!r} is set but KAFKA_SECURITY_PROTOCOL={protocol} "
            "uses no SASL; use SASL_SSL (or SASL_PLAINTEXT)"
        )
    return KafkaSettings(
        bootstrap_servers=_env_bootstrap(e, "KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:29192"),
        raw_topic=_env_str(e, "KAFKA_RAW_TOPIC", "shared_raw_events"),
        dead_letter_topic=_env_str(e, "KAFKA_DEAD_LETTER_TOPIC", "shared_dead_letter"),
        topic_partitions=_env_int(e, "KAFKA_TOPIC_PARTITIONS", 6, minimum=1),
        controller_port=_env_port(e, "KAFKA_CONTROLLER_PORT", 29193),
        security_protocol=protocol,
        ssl_ca_location=_env_file(e, "KAFKA_SSL_CA_LOCATION"),
        sasl_mechanism=mechanism,
        sasl_username=e.get("KAFKA_SASL_USERNAME", ""),
        sasl_password=e.get("KAFKA_SASL_PASSWORD", ""),
    )


def _clickhouse_from_env(e: Mapping[str, str], prefix: str, target: str) -> ClickHouseSettings:
    """One ClickHouse target from `<prefix>_*` variables (CLICKHOUSE_* is the default one;
    an extra target NAME uses CLICKHOUSE_<NAME>_*). Every target keeps its bookkeeping in
    the same ops database name."""
    default = ClickHouseSettings()
    return ClickHouseSettings(
        host=_env_str(e, f"{prefix}_HOST", default.host),
        http_port=_env_port(e, f"{prefix}_HTTP_PORT", default.http_port),
        native_port=_env_port(e, f"{prefix}_NATIVE_PORT", default.native_port),
        user=_env_str(e, f"{prefix}_USER", default.user),
        password=e.get(f"{prefix}_PASSWORD", ""),
        secure=_env_bool(e, f"{prefix}_SECURE", False),
        ops_database=_env_identifier(e, "PIPELINE_OPS_DATABASE", default.ops_database),
        ca_cert=_env_file(e, f"{prefix}_CA_CERT"),
        verify=_env_bool(e, f"{prefix}_VERIFY", True),
        target=target,
        cluster=e.get(f"{prefix}_CLUSTER", ""),
    )


def clickhouse_prefix(target: str) -> str:
    """The variables' prefix of a ClickHouse target: CLICKHOUSE for the default one,
    CLICKHOUSE_<NAME> for an extra target of CLICKHOUSE_TARGETS."""
    return "CLICKHOUSE" if target == DEFAULT_TARGET else f"CLICKHOUSE_{target.upper()}"


def _extra_targets_from_env(e: Mapping[str, str]) -> tuple[ClickHouseSettings, ...]:
    names = [n.strip() for n in e.get("CLICKHOUSE_TARGETS", "").split(",") if n.strip()]
    targets: list[ClickHouseSettings] = []
    for name in names:
        if not _TARGET_NAME.fullmatch(name) or name == DEFAULT_TARGET:
            raise SettingsError(
                f"CLICKHOUSE_TARGETS: {name!r} is not a target name; use lower-case letters, "
                f"digits and '_' (starting with a letter), and not {DEFAULT_TARGET!r}, which "
                "the plain CLICKHOUSE_* variables configure"
            )
        if any(t.target == name for t in targets):
            raise SettingsError(f"CLICKHOUSE_TARGETS names {name!r} twice")
        prefix = clickhouse_prefix(name)
        if not e.get(f"{prefix}_HOST"):
            raise SettingsError(
                f"CLICKHOUSE_TARGETS names {name!r} but {prefix}_HOST is not set "
                f"(also {prefix}_HTTP_PORT, {prefix}_NATIVE_PORT, {prefix}_USER, ...)"
            )
        targets.append(_clickhouse_from_env(e, prefix, name))
    return tuple(targets)


def describe(settings: object) -> dict[str, object]:
    """A log-safe view of a settings dataclass: secrets are masked."""
    out: dict[str, object] = {}
    for f in fields(settings):  # type: ignore[arg-type]
        value = getattr(settings, f.name)
        if not f.repr:
            out[f.name] = "***" if value else ""
        elif hasattr(value, "__dataclass_fields__"):
            out[f.name] = describe(value)
        elif isinstance(value, tuple) and all(hasattr(v, "__dataclass_fields__") for v in value):
            out[f.name] = [describe(v) for v in value]
        else:
            out[f.name] = str(value) if isinstance(value, Path) else value
    return out


# Re-exported helpers for other settings objects (router, devstack) built on the same rules.
env_str = _env_str
env_int = _env_int
env_float = _env_float
env_bool = _env_bool
env_port = _env_port


# The servers every process shares, as (variable, default, meaning): the single source of
# the services' --help (each adds its own topics and settings). "/" joins variables of one
# server given together.
SERVER_ENV: tuple[tuple[str, str, str], ...] = (
    ("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:29192", "Kafka brokers: host:port[,host:port...]"),
    ("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT", ", ".join(KAFKA_SECURITY_PROTOCOLS)),
    ("KAFKA_SASL_MECHANISM/USERNAME/PASSWORD", "//", "SASL_*: " + ", ".join(KAFKA_SASL_MECHANISMS)),
    ("KAFKA_SSL_CA_LOCATION", "", "CA file of the brokers' certificates (SSL, SASL_SSL)"),
    (
        "POSTGRES_HOST/PORT/DB/USER/PASSWORD",
        "127.0.0.1/25432/analytics_meta/analytics/",
        "Registry (clients, schema versions, quotas)",
    ),
    ("POSTGRES_SSLMODE/SSLROOTCERT", "prefer/", "libpq: " + ", ".join(POSTGRES_SSLMODES)),
    ("POSTGRES_CALL_TIMEOUT_S", "3.0", "One registry call gives up after this (hung server)"),
    ("REDIS_HOST/PORT/DB/PASSWORD", "127.0.0.1/26379/0/", "Client cache (and capture's quotas)"),
    ("REDIS_TLS/CA_CERT", "false/", "TLS to Redis, and its CA file"),
    (
        "CLICKHOUSE_HOST/HTTP_PORT/NATIVE_PORT/USER/PASSWORD",
        "127.0.0.1/28123/29000/default/",
        "Warehouse: the default target",
    ),
    ("CLICKHOUSE_SECURE/CA_CERT/VERIFY", "false//true", "HTTPS to ClickHouse, CA file, verify"),
    ("CLICKHOUSE_CLUSTER", "", "ON CLUSTER name for the default target's DDL (none: one server)"),
    ("CLICKHOUSE_TARGETS", "", "Extra targets by name; target N reads CLICKHOUSE_<N>_*"),
    ("PIPELINE_OPS_DATABASE", "pipeline_ops", "ClickHouse database of the pipeline's bookkeeping"),
    (
        "PIPELINE_REPLAY_KEY/_PREVIOUS",
        "<development key>/",
        "Signs dead-letter replays; required (32+ characters) off loopback",
    ),
    ("LOG_LEVEL", "INFO", "Log level of the JSON logs on stderr (any case)"),
)
