"""`bin/dev` on the real stack: it brings up the router, the capture API and `dagster dev`,
restarts a service that dies, and a SIGINT or SIGTERM stops all of them and every child, also
when bin/dev was started in the background (SIGINT ignored at entry, as a background job of
a script has it).

Isolation: a sandbox registry and Dagster storage (tests/dagster_sandbox.py), private raw and
dead-letter topics, free ports; bin/setup is skipped (bin/test has just run it).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from analytics_core.settings import REPO_ROOT, Settings
from devstack import api
from tests.conftest import free_port
from tests.dagster_dev_support import (
    GraphQL,
    location_loaded,
    processes_of,
    running,
    wait_for,
)
from tests.dagster_sandbox import Sandbox, private_topics, sandbox

pytestmark = pytest.mark.integration


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[Sandbox]:
    api.ensure_up(Settings.from_env())
    with sandbox(tmp_path / "dagster_home", prefix="tdev") as box:
        yield box


@pytest.fixture
def topics(sb: Sandbox) -> Iterator[tuple[str, str]]:
    with private_topics(sb.settings, "tdev") as names:
        yield names


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _ignore_int_and_term() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_bin_dev_stops_every_service_and_child_on_a_signal(
    sb: Sandbox, topics: tuple[str, str], tmp_path: Path, stop: signal.Signals
) -> None:
    raw, dead = topics
    ports = {name: free_port() for name in ("DAGSTER_PORT", "ROUTER_METRICS_PORT", "CAPTURE_PORT")}
    env = {
        **os.environ,
        **sb.env(),
        **{name: str(port) for name, port in ports.items()},
        "KAFKA_RAW_TOPIC": raw,
        "KAFKA_DEAD_LETTER_TOPIC": dead,
        "ROUTER_GROUP_ID": f"tdev-{uuid.uuid4().hex[:8]}",
        "DEV_SKIP_SETUP": "1",
    }
    log_path = tmp_path / "dev.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(REPO_ROOT / "bin" / "dev")],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            # As `bin/dev &` in a script (SIGINT ignored from the start), from a parent that
            # left SIGTERM ignored too (CI's test runner did): bin/dev must still stop on both.
            preexec_fn=_ignore_int_and_term,
            start_new_session=True,
        )
    everyone: set[int] = set()
    try:
        gql = GraphQL(ports["DAGSTER_PORT"])
        wait_for(lambda: proc.poll() is not None or location_loaded(gql), "dagster dev", 300)
        assert proc.poll() is None, log_path.read_text()[-3000:]
        router = f"http://127.0.0.1:{ports['ROUTER_METRICS_PORT']}/healthz"
        wait_for(lambda: http_ok(router), "the router", 60)
        if (REPO_ROOT / "capture" / "__main__.py").exists():
            capture = f"http://127.0.0.1:{ports['CAPTURE_PORT']}/healthz"
            wait_for(lambda: http_ok(capture), "the capture API", 60)
        everyone = processes_of(proc.pid)
        names = {Path(f"/proc/{p}/cmdline").read_bytes() for p in running(everyone)}
        assert any(b"dagster_webserver" in n for n in names), "no webserver found"
        assert any(b"dagster._daemon" in n for n in names), "no daemon found"
        if stop is signal.SIGTERM:
            # A service killed outright is restarted; the others keep running.
            [router_pid] = [
                p
                for p in running(everyone)
                if Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")[1:3] == [b"-m", b"router"]
            ]
            os.kill(router_pid, signal.SIGKILL)
            wait_for(lambda: "router restarted" in log_path.read_text(), "the restart", 30)
            wait_for(lambda: http_ok(router), "the restarted router", 60)
            assert "router exited (status 137)" in log_path.read_text()
            assert proc.poll() is None and location_loaded(gql)
            everyone |= processes_of(proc.pid)

        proc.send_signal(stop)
        code = proc.wait(90)
        assert code == 128 + stop.value, (code, log_path.read_text()[-3000:])
        deadline = time.monotonic() + 10
        while running(everyone) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = running(everyone)
        assert not left, {p: Path(f"/proc/{p}/cmdline").read_bytes()[:120] for p in left}
    finally:
        for pid in running(everyone | {proc.pid}):
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.wait(10)
    output = log_path.read_text()
    assert "[dev] stopped" in output
    # The demo's state as the registry has it when bin/dev starts (not a fixed text).
    [demo_line] = [line for line in output.splitlines() if line.startswith("[dev] demo client")]
    assert demo_line.endswith(
        ("(pending until the provisioning sensor runs, within a minute)", "(active)")
    ), demo_line
    # No warning printed over and over (a PreviewWarning used to appear dozens of times).
    warnings = Counter(
        re.sub(r"^.*?(\w+Warning)", r"\1", line).strip()
        for line in output.splitlines()
        if "Warning:" in line
    )
    assert all(n == 1 for n in warnings.values()), warnings
    # dagster dev runs where the instance's dagster.yaml is, so it does not tell a newcomer
    # that the project's dagster.yaml is ignored.
    assert "will not be used to configure Dagster" not in output
    # Nor that `dagster dev`, the command the README documents, is superseded by `dg dev`.
    assert "SupersessionWarning" not in output


def test_a_sandbox_drops_only_the_databases_it_created(tmp_path: Path) -> None:
    """bin/dev seeds `demo` in every registry it runs on, sandboxes included, and its
    database name is the real demo's: leaving a sandbox dropped the developer's client_demo
    (running bin/test beside bin/dev broke the demo). Only what the sandbox created goes."""
    from analytics_core import lifecycle
    from analytics_core.clickhouse import http_client
    from analytics_core.clients import ClientStatus
    from analytics_core.naming import database_name_for

    settings = Settings.from_env()
    api.ensure_up(settings)
    there, fresh = f"tpre-{uuid.uuid4().hex[:8]}", f"tpre-{uuid.uuid4().hex[:8]}"
    ch = http_client(settings.clickhouse)
    try:
        ch.command(f"CREATE DATABASE `{database_name_for(there)}`")
        with sandbox(tmp_path / "dagster_home", prefix="tpre") as box:
            for client_id in (there, fresh):
                box.add_client(client_id, "key", ClientStatus.PENDING)
                with box.connections() as c:
                    assert isinstance(lifecycle.provision(c, client_id), lifecycle.Provisioned)

        def exists(client_id: str) -> bool:
            name = database_name_for(client_id)
            return bool(int(ch.command(f"EXISTS DATABASE `{name}`")))  # type: ignore[arg-type]

        assert exists(there) and not exists(fresh)
    finally:
        ch.command(f"DROP DATABASE IF EXISTS `{database_name_for(there)}`")
        ch.close()
