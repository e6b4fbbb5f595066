"""Scratch topologies for tests: a private state dir and free ports for devstack's servers.

Kafka nodes and extra ClickHouse servers take ports at fixed offsets from the first ones
(devstack/topology.py), so a scratch topology needs a block of consecutive free ports.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from analytics_core.settings import Settings
from devstack import api
from devstack.options import Options, load_options
from tests.conftest import free_port_block


@dataclass(frozen=True)
class Scratch:
    settings: Settings
    options: Options
    env: dict[str, str]  # os.environ plus the scratch topology (for subprocesses)

    def topology_env(self) -> dict[str, str]:
        """`env` with what `devstack env` prints (every broker, every ClickHouse target)."""
        return {**self.env, **dict(api.environment(self.settings, options=self.options))}


def scratch_env(
    state_dir: Path, *, kafka_brokers: int = 1, clickhouse_servers: int = 1
) -> dict[str, str]:
    """Environment for a private topology: Kafka and ClickHouse on fresh free ports."""
    kafka = free_port_block(2 * kafka_brokers)
    ch = free_port_block(2 * clickhouse_servers)
    return {
        "PIPELINE_STATE_DIR": str(state_dir),
        "DEVSTACK_KAFKA_BROKERS": str(kafka_brokers),
        "DEVSTACK_CLICKHOUSE_SERVERS": str(clickhouse_servers),
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka}",
        "KAFKA_CONTROLLER_PORT": str(kafka + 1),
        # ClickHouse servers k = 1..M: HTTP at ch + k - 1, native at ch + M + k - 1.
        "CLICKHOUSE_HTTP_PORT": str(ch),
        "CLICKHOUSE_NATIVE_PORT": str(ch + clickhouse_servers),
    }


@contextmanager
def scratch_topology(
    state_dir: Path, services: list[str], overrides: Mapping[str, str]
) -> Iterator[Scratch]:
    """Start `services` in a private state dir with `overrides`; reset them afterwards."""
    env = {**os.environ, **overrides}
    scratch = Scratch(Settings.from_env(env), load_options(env), env)
    try:
        api.ensure_up(scratch.settings, services, options=scratch.options)
        yield scratch
    finally:
        api.reset(scratch.settings, services, options=scratch.options)
