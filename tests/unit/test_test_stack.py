"""bin/test runs on a stack of its own (bin/test-stack-env): never the one bin/dev shows, so
the tests' clients, runs and databases stay out of the developer's Dagster UI, and the two
commands can run at the same time."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

from analytics_core.settings import REPO_ROOT, Settings
from tests.conftest import FREE_PORTS

SCRIPT = REPO_ROOT / "bin" / "test-stack-env"
COMPOSE_PUBLISHED = {15432, 18123, 19092}  # deploy/local/docker-compose.yml's defaults


def exports(**env: str) -> dict[str, str]:
    base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/")}
    out = subprocess.run(
        [str(SCRIPT)], env={**base, **env}, capture_output=True, text=True, check=True
    ).stdout
    pairs = {}
    for line in out.splitlines():
        word, assignment = shlex.split(line)
        assert word == "export", line
        name, _, value = assignment.partition("=")
        pairs[name] = value
    return pairs


def ports_of(settings: Settings, brokers: int = 3, clickhouse_servers: int = 2) -> set[int]:
    """Every port the stack may listen on, with the larger topologies devstack can run
    (brokers and controllers interleave upwards; a second ClickHouse sits one above)."""
    k, ch = settings.kafka, settings.clickhouse
    kafka = int(k.bootstrap_servers.rsplit(":", 1)[1])
    found = {settings.postgres.port, settings.redis.port}
    found |= {kafka + i for i in range(2 * brokers)} | {
        k.controller_port + 2 * i for i in range(brokers)
    }
    found |= {ch.http_port + i for i in range(clickhouse_servers)}
    found |= {ch.native_port + i for i in range(clickhouse_servers)}
    return found


def test_the_tests_get_their_own_state_dir_and_ports() -> None:
    env = exports()
    assert Path(env["PIPELINE_STATE_DIR"]) == REPO_ROOT / ".state-test"
    assert env["TEST_OWN_STACK"] == "1"  # bin/test stops what it started
    test_stack, dev_stack = Settings.from_env(env), Settings.from_env({})
    assert test_stack.state_dir != dev_stack.state_dir
    mine, dev = ports_of(test_stack), ports_of(dev_stack)
    # No two services share a port (Kafka's controllers sit between its brokers).
    assert len(mine) == 2 + 6 + 4, sorted(mine)
    assert not mine & dev, sorted(mine & dev)
    assert not mine & COMPOSE_PUBLISHED
    # The tests' private servers take ports from FREE_PORTS; outgoing connections take the
    # kernel's ephemeral ports: neither may ever hold one the test stack listens on.
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    assert all(p not in FREE_PORTS and not low <= p <= high for p in mine), sorted(mine)


def test_a_variable_already_set_wins_and_that_stack_is_not_stopped() -> None:
    env = exports(PIPELINE_STATE_DIR="/srv/stack", POSTGRES_PORT="5432")
    assert "PIPELINE_STATE_DIR" not in env and "TEST_OWN_STACK" not in env
    assert env["POSTGRES_PORT"] == "5432" and env["REDIS_PORT"] == "14379"


def test_bin_test_uses_it_and_git_ignores_its_state() -> None:
    assert 'eval "$(bin/test-stack-env)"' in (REPO_ROOT / "bin" / "test").read_text()
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", ".state-test/postgres"], cwd=REPO_ROOT, check=False
    )
    assert ignored.returncode == 0
