"""The tests refuse servers off this machine unless TEST_EXTERNAL_SERVERS=1 (tests.server_guard)."""

from __future__ import annotations

import subprocess
import sys

from analytics_core.settings import REPO_ROOT, Settings
from tests import server_guard


def test_the_local_stacks_addresses_are_accepted() -> None:
    local = {
        "POSTGRES_HOST": "localhost",
        "REDIS_HOST": "127.0.0.1",
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:14192,[::1]:14194,PLAINTEXT://localhost:14196",
        "CLICKHOUSE_HOST": "::1",
        "CLICKHOUSE_TARGETS": "ch2",
        "CLICKHOUSE_CH2_HOST": "127.0.0.2",
    }
    settings = Settings.from_env(local)
    assert settings.remote_servers() == []
    assert server_guard.refusal(settings, local) is None
    assert server_guard.refusal(Settings.from_env({}), {}) is None  # the defaults


def test_every_server_off_loopback_is_named_with_its_variable() -> None:
    env = {
        "POSTGRES_HOST": "db.internal",
        "REDIS_HOST": "127.0.0.1",
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092,SSL://kafka-2.prod:9093",
        "CLICKHOUSE_HOST": "10.0.0.5",
        "CLICKHOUSE_TARGETS": "ch2",
        "CLICKHOUSE_CH2_HOST": "ch2.prod",
    }
    settings = Settings.from_env(env)
    assert settings.remote_servers() == [
        ("POSTGRES_HOST", "db.internal"),
        ("KAFKA_BOOTSTRAP_SERVERS", "kafka-2.prod"),
        ("CLICKHOUSE_HOST", "10.0.0.5"),
        ("CLICKHOUSE_CH2_HOST", "ch2.prod"),
    ]
    problem = server_guard.refusal(settings, env)
    assert problem is not None
    for line in ("POSTGRES_HOST: db.internal", "KAFKA_BOOTSTRAP_SERVERS: kafka-2.prod"):
        assert f"\n  {line}\n" in problem
    assert "REDIS_HOST" not in problem and "TEST_EXTERNAL_SERVERS=1" in problem
    # An explicit yes, and only "1", lets them run there.
    assert server_guard.refusal(settings, {**env, "TEST_EXTERNAL_SERVERS": "1"}) is None
    assert server_guard.refusal(settings, {**env, "TEST_EXTERNAL_SERVERS": "yes"}) is not None


def test_the_command_exits_2_with_the_reason_and_0_on_loopback() -> None:
    def run(**env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tests.server_guard"],
            cwd=REPO_ROOT,
            env={"PATH": "/usr/bin:/bin", **env},
            capture_output=True,
            text=True,
            timeout=60,
        )

    refused = run(REDIS_HOST="cache.prod")
    assert refused.returncode == 2, refused
    assert "REDIS_HOST: cache.prod" in refused.stderr and "TEST_EXTERNAL_SERVERS" in refused.stderr
    assert run(REDIS_HOST="cache.prod", TEST_EXTERNAL_SERVERS="1").returncode == 0
    assert run().returncode == 0
    bad = run(POSTGRES_PORT="abc")
    assert bad.returncode == 2 and "POSTGRES_PORT" in bad.stderr, bad
