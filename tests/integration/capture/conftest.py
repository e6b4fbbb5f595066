"""Fixtures for the capture service's integration tests: real `python -m capture`
processes (their own ports), plus helpers to read what landed in ClickHouse.

The shared stack, clients and routers come from tests/conftest.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from analytics_core.clickhouse import http_client
from analytics_core.settings import Settings
from devstack.process import descendants
from tests.conftest import free_port, wait_for

REPO = Path(__file__).resolve().parents[3]


class CaptureProcess:
    """One `python -m capture` subprocess; its JSON log goes to `log_path`."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        full = dict(os.environ)
        full.update({"CAPTURE_PORT": str(self.port), "CAPTURE_CACHE_LOCAL_TTL_S": "0.5"})
        full.update(env)
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "capture"],
            env=full,
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_up(self, path: str = "/readyz", timeout_s: float = 60) -> CaptureProcess:
        def up() -> bool:
            assert self.proc.poll() is None, f"capture exited early: {self.log()}"
            try:
                return requests.get(self.url + path, timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_for(up, timeout_s, what=f"capture {path} at {self.url}")
        return self

    def post(self, path: str, body: bytes | str | None = None, **kw: Any) -> requests.Response:
        kw.setdefault("timeout", 30)
        return requests.post(self.url + path, data=body, **kw)

    def metrics(self) -> str:
        return requests.get(self.url + "/metrics", timeout=5).text

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample of /metrics (0 when absent)."""
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in self.metrics().splitlines():
            if line.startswith("#"):
                continue
            key, _, value = line.rpartition(" ")
            metric, _, label_text = key.partition("{")
            got = ",".join(sorted(label_text.rstrip("}").split(","))) if label_text else ""
            if metric == name and got == want:
                return float(value)
        return 0.0

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def crash(self) -> None:
        """SIGKILL every process of the service at once, as a crash or a container kill
        does. granian's worker outlives a master killed alone (it would go on serving the
        port and reconnecting to Kafka), so its children are killed too."""
        for pid in [*descendants(self.proc.pid), self.proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout_s: float = 40) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.crash()
                raise AssertionError(
                    f"capture did not stop within {timeout_s}s: {self.log()}"
                ) from None
        self._log.close()
        return int(self.proc.returncode)


@pytest.fixture
def start_capture(
    stack: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., CaptureProcess]]:
    """Start capture processes (env overrides as keywords); all stopped at the end."""
    started: list[CaptureProcess] = []

    def start(wait: str | None = "/readyz", **env: str) -> CaptureProcess:
        log_path = tmp_path_factory.mktemp("capture") / "capture.log"
        proc = CaptureProcess(env, log_path)
        started.append(proc)
        return proc.wait_up(wait) if wait else proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture(scope="module")
def capture(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CaptureProcess]:
    """One capture process with default settings, shared by a test module."""
    proc = CaptureProcess({}, tmp_path_factory.mktemp("capture-shared") / "capture.log")
    try:
        yield proc.wait_up()
    finally:
        assert proc.stop() == 0, proc.log()


def rows(settings: Settings, database: str, where: str = "1") -> list[dict[str, Any]]:
    """Every row of a client table (no FINAL: duplicates would show), oldest event first."""
    ch = http_client(settings.clickhouse)
    try:
        result = ch.query(
            "SELECT toString(event_id) AS event_id, event_name, user_id, "
            "toUnixTimestamp64Milli(event_timestamp) AS ts, event_properties, "
            "toUnixTimestamp64Milli(sent_at) AS sent_at "
            f"FROM `{database}`.events_base WHERE {where} ORDER BY event_timestamp, event_name"
        )
        return [dict(zip(result.column_names, r, strict=True)) for r in result.result_rows]
    finally:
        ch.close()


def counts(settings: Settings, database: str) -> tuple[int, int]:
    """(rows, distinct event ids), without FINAL."""
    ch = http_client(settings.clickhouse)
    try:
        r = ch.query(f"SELECT count(), uniqExact(event_id) FROM `{database}`.events_base")
        return int(r.result_rows[0][0]), int(r.result_rows[0][1])
    finally:
        ch.close()


def wait_rows(settings: Settings, database: str, n: int, timeout_s: float = 60) -> None:
    wait_for(lambda: counts(settings, database)[0] >= n, timeout_s, what=f"{n} rows in {database}")


def settle(settings: Settings, database: str, n: int, quiet_s: float = 2.0) -> tuple[int, int]:
    """Wait for `n` rows, then a little longer so extra (duplicate) rows would show too."""
    wait_rows(settings, database, n)
    time.sleep(quiet_s)
    return counts(settings, database)
