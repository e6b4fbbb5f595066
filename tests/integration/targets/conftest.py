"""One private pair of ClickHouse servers (targets `default` and `ch2`) for every test in this
folder, beside the shared PostgreSQL, Redis and Kafka.

The pair is started once per session (two chdb-core servers on free ports, their own state
dir) and reset afterwards, so stopping `ch2` in a fault test never disturbs the shared stack.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from subprocess import Popen
from typing import IO

import pytest
from clickhouse_connect.driver.client import Client

from analytics_core.clickhouse import http_client
from analytics_core.settings import REPO_ROOT, Settings
from devstack import api
from devstack.options import Options, load_options
from tests.conftest import free_port_block


@dataclass(frozen=True)
class TwoTargets:
    settings: Settings  # both targets configured (CLICKHOUSE_TARGETS=ch2)
    options: Options
    env: dict[str, str]  # for subprocesses: the shared stack plus both targets

    def ch(self, target: str) -> Client:
        return http_client(self.settings.clickhouse_targets()[target], timeout_s=120)

    def scalar(self, target: str, sql: str, **params: object) -> object:
        ch = self.ch(target)
        try:
            return ch.query(sql, parameters=params).result_rows[0][0]
        finally:
            ch.close()

    def event_ids(self, target: str, database: str) -> list[str]:
        """Every row's event id in a client's events table on `target` (duplicates kept)."""
        ch = self.ch(target)
        try:
            rows = ch.query(f"SELECT toString(event_id) FROM `{database}`.events_base").result_rows
        finally:
            ch.close()
        return [str(r[0]) for r in rows]

    def has_database(self, target: str, database: str) -> bool:
        found = self.scalar(
            target, "SELECT count() FROM system.databases WHERE name = {d:String}", d=database
        )
        return bool(found)

    def start_move(self, client_id: str, dest: str, grace_s: float, log: IO[bytes]) -> Popen[bytes]:
        """`admin move-client` started in the background (a test kills it mid-move)."""
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "analytics_core.admin",
                "move-client",
                client_id,
                "--to",
                dest,
                "--grace-s",
                str(grace_s),
            ],
            cwd=REPO_ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def admin(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "analytics_core.admin", *args],
            cwd=REPO_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


@pytest.fixture(scope="session")
def two_targets(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoTargets]:
    state = tmp_path_factory.mktemp("two-targets") / "state"
    ports = free_port_block(4)
    base = {
        **os.environ,
        "PIPELINE_STATE_DIR": str(state),
        "DEVSTACK_CLICKHOUSE_SERVERS": "2",
        "CLICKHOUSE_HTTP_PORT": str(ports),
        "CLICKHOUSE_NATIVE_PORT": str(ports + 2),
    }
    for name in [k for k in base if k.startswith("CLICKHOUSE_CH") or k == "CLICKHOUSE_TARGETS"]:
        del base[name]  # the pair's second server is derived from the first
    settings, options = Settings.from_env(base), load_options(base)
    api.ensure_up(settings, ["clickhouse"], options=options)
    # The shared stack's PostgreSQL, Redis and Kafka; the pair as the two ClickHouse targets.
    env = {**base, **dict(api.environment(settings, options=options))}
    try:
        yield TwoTargets(Settings.from_env(env), options, env)
    finally:
        api.reset(settings, ["clickhouse"], options=options)
