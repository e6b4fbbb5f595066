"""One typed settings object per process, read from environment variables.

Every variable has a documented default that points at the local stack
(`python -m devstack up`). Users with their own servers override the
connection variables; `.env.example` lists them all. Secrets are held in
fields whose `repr` is masked so they never reach a log line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from analytics_core.dead_letter import ReplayKeys

REPO_ROOT = Path(__file__).resolve().parent.parent


class SettingsError(ValueError):
    """A configuration value is missing or malformed; the message says what to fix."""


def _env_str(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name)
    return default if value is None or value == "" else value


def _env_int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer; set it to a whole number") from None
    if value < minimum:
        raise SettingsError(f"{name}={value} is below the minimum {minimum}")
    return value


def _env_float(env: Mapping[str, str], name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
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


def _env_port(env: Mapping[str, str], name: str, default: int) -> int:
    port = _env_int(env, name, default, minimum=1)
    if port > 65535:
        raise SettingsError(f"{name}={port} is not a TCP port (1-65535)")
    return port


@dataclass(frozen=True)
class PostgresSettings:
    host: str = "127.0.0.1"
    port: int = 55432
    dbname: str = "analytics_meta"
    user: str = "analytics"
    password: str = field(default="", repr=False)
    dagster_dbname: str = "dagster"

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
        return " ".join(parts)


@dataclass(frozen=True)
class RedisSettings:
    host: str = "127.0.0.1"
    port: int = 56379
    db: int = 0
    password: str = field(default="", repr=False)


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap_servers: str = "127.0.0.1:59092"
    raw_topic: str = "shared_raw_events"
    dead_letter_topic: str = "shared_dead_letter"
    topic_partitions: int = 6
    # Only used by the local stack: the KRaft controller listener.
    controller_port: int = 59093


@dataclass(frozen=True)
class ClickHouseSettings:
    host: str = "127.0.0.1"
    http_port: int = 58123
    native_port: int = 59000
    user: str = "default"
    password: str = field(default="", repr=False)
    secure: bool = False
    # Shared database for pipeline bookkeeping (router accounting); never a client's.
    ops_database: str = "pipeline_ops"


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
    for server in bootstrap.split(","):
        server = server.strip().split("://")[-1]
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

    def replay_key_problem(self) -> str | None:
        """Why the replay key can not be used here, or None. Processes that sign or verify
        replays (router, reprocessing) refuse to start on a problem."""
        key = self.replay.key
        if key == DEVELOPMENT_REPLAY_KEY:
            hosts = [
                self.postgres.host,
                self.redis.host,
                self.clickhouse.host,
                *_kafka_hosts(self.kafka.bootstrap_servers),
            ]
            remote = sorted({h for h in hosts if not _is_loopback(h)})
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
                port=_env_port(e, "POSTGRES_PORT", 55432),
                dbname=_env_str(e, "POSTGRES_DB", "analytics_meta"),
                user=_env_str(e, "POSTGRES_USER", "analytics"),
                password=e.get("POSTGRES_PASSWORD", ""),
                dagster_dbname=_env_str(e, "DAGSTER_POSTGRES_DB", "dagster"),
            ),
            redis=RedisSettings(
                host=_env_str(e, "REDIS_HOST", "127.0.0.1"),
                port=_env_port(e, "REDIS_PORT", 56379),
                db=_env_int(e, "REDIS_DB", 0),
                password=e.get("REDIS_PASSWORD", ""),
            ),
            kafka=KafkaSettings(
                bootstrap_servers=_env_str(e, "KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:59092"),
                raw_topic=_env_str(e, "KAFKA_RAW_TOPIC", "shared_raw_events"),
                dead_letter_topic=_env_str(e, "KAFKA_DEAD_LETTER_TOPIC", "shared_dead_letter"),
                topic_partitions=_env_int(e, "KAFKA_TOPIC_PARTITIONS", 6, minimum=1),
                controller_port=_env_port(e, "KAFKA_CONTROLLER_PORT", 59093),
            ),
            clickhouse=ClickHouseSettings(
                host=_env_str(e, "CLICKHOUSE_HOST", "127.0.0.1"),
                http_port=_env_port(e, "CLICKHOUSE_HTTP_PORT", 58123),
                native_port=_env_port(e, "CLICKHOUSE_NATIVE_PORT", 59000),
                user=_env_str(e, "CLICKHOUSE_USER", "default"),
                password=e.get("CLICKHOUSE_PASSWORD", ""),
                secure=_env_bool(e, "CLICKHOUSE_SECURE", False),
                ops_database=_env_str(e, "PIPELINE_OPS_DATABASE", "pipeline_ops"),
            ),
            replay=ReplaySettings(
                key=_env_str(e, "PIPELINE_REPLAY_KEY", DEVELOPMENT_REPLAY_KEY),
                previous_key=e.get("PIPELINE_REPLAY_KEY_PREVIOUS", ""),
            ),
            state_dir=Path(_env_str(e, "PIPELINE_STATE_DIR", str(REPO_ROOT / ".state"))),
        )


def describe(settings: object) -> dict[str, object]:
    """A log-safe view of a settings dataclass: secrets are masked."""
    out: dict[str, object] = {}
    for f in fields(settings):  # type: ignore[arg-type]
        value = getattr(settings, f.name)
        if not f.repr:
            out[f.name] = "***" if value else ""
        elif hasattr(value, "__dataclass_fields__"):
            out[f.name] = describe(value)
        else:
            out[f.name] = str(value) if isinstance(value, Path) else value
    return out


# Re-exported helpers for other settings objects (router, devstack) built on the same rules.
env_str = _env_str
env_int = _env_int
env_float = _env_float
env_bool = _env_bool
env_port = _env_port
