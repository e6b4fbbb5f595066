"""bin/test with a shell's exported production servers: it refuses before it starts or
writes anything, and says what to change (tests/server_guard.py)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from analytics_core.settings import REPO_ROOT


def test_bin_test_refuses_servers_off_this_machine_before_starting_anything(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    env = {
        **os.environ,
        "PIPELINE_STATE_DIR": str(state),
        "KAFKA_BOOTSTRAP_SERVERS": "kafka.prod.example:9092",
        "CLICKHOUSE_HOST": "clickhouse.prod.example",
    }
    env.pop("TEST_EXTERNAL_SERVERS", None)
    done = subprocess.run(
        [str(REPO_ROOT / "bin" / "test"), "-k", "nothing_should_run"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "KAFKA_BOOTSTRAP_SERVERS: kafka.prod.example" in done.stderr
    assert "CLICKHOUSE_HOST: clickhouse.prod.example" in done.stderr
    assert "TEST_EXTERNAL_SERVERS=1" in done.stderr
    # Refused before the stack, the checks and pytest: nothing was started or written.
    assert "ruff" not in done.stdout and "stack up" not in done.stderr
    assert not state.exists() or not any(state.iterdir())
