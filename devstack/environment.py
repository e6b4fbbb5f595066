"""The environment that points a process at the local topology (`python -m devstack env`).

Pure: settings + options + topology in, (name, value) pairs out. The pairs cover the state
dir, devstack's size options (so a later `devstack status` in the same shell sees the same
topology) and every connection variable the application reads, including the extra
ClickHouse targets (CLICKHOUSE_TARGETS, CLICKHOUSE_<NAME>_*).
Passwords are never printed: the local servers have none, and an external server's password
is already in the environment of whoever runs the command.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from analytics_core.settings import Settings

from .options import Options
from .topology import ClickHouseServer, Topology


def exports(settings: Settings, options: Options, topo: Topology) -> list[tuple[str, str]]:
    pg, rd, k = settings.postgres, settings.redis, settings.kafka
    pairs: list[tuple[str, str]] = [
        ("PIPELINE_STATE_DIR", str(settings.state_dir)),
        ("DEVSTACK_SERVICES", ",".join(options.managed)),
        ("DEVSTACK_KAFKA_BROKERS", str(options.kafka_brokers)),
        ("DEVSTACK_CLICKHOUSE_SERVERS", str(options.clickhouse_servers)),
        ("POSTGRES_HOST", pg.host),
        ("POSTGRES_PORT", str(pg.port)),
        ("POSTGRES_DB", pg.dbname),
        ("POSTGRES_USER", pg.user),
        ("DAGSTER_POSTGRES_DB", pg.dagster_dbname),
        ("REDIS_HOST", rd.host),
        ("REDIS_PORT", str(rd.port)),
        ("REDIS_DB", str(rd.db)),
    ]
    local_kafka = "kafka" in options.managed
    pairs += [
        (
            "KAFKA_BOOTSTRAP_SERVERS",
            topo.kafka.bootstrap_servers if local_kafka else k.bootstrap_servers,
        ),
        ("KAFKA_CONTROLLER_PORT", str(k.controller_port)),
        ("KAFKA_RAW_TOPIC", k.raw_topic),
        ("KAFKA_DEAD_LETTER_TOPIC", k.dead_letter_topic),
        ("KAFKA_TOPIC_PARTITIONS", str(k.topic_partitions)),
    ]
    default, *extra = topo.clickhouse
    pairs += _clickhouse(default)
    pairs.append(("PIPELINE_OPS_DATABASE", settings.clickhouse.ops_database))
    if "clickhouse" in options.managed:
        # External ClickHouse: the user's own CLICKHOUSE_TARGETS stay as they are.
        pairs.append(("CLICKHOUSE_TARGETS", ",".join(s.target for s in extra)))
        for server in extra:
            pairs += _clickhouse(server)
    return pairs


def _clickhouse(s: ClickHouseServer) -> list[tuple[str, str]]:
    p = s.env_prefix
    return [
        (f"{p}HOST", s.host),
        (f"{p}HTTP_PORT", str(s.http_port)),
        (f"{p}NATIVE_PORT", str(s.native_port)),
        (f"{p}USER", s.user),
        (f"{p}SECURE", "true" if s.secure else "false"),
    ]


def render_sh(pairs: Sequence[tuple[str, str]]) -> str:
    """`export NAME=value` lines, values quoted for POSIX shells (eval-safe)."""
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in pairs)
