"""librdkafka's own lines from the pipeline's Kafka clients (Dagster jobs, tools): through
Python logging, each shape once a minute, never raw on stderr. A real librdkafka client
against a port nobody listens on: no broker is needed to make it complain."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from analytics_core import kafka_clients
from analytics_core.logging_setup import RepeatedLines
from analytics_core.settings import KafkaSettings

FAST_RECONNECTS = {"reconnect.backoff.ms": 10, "reconnect.backoff.max.ms": 50}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_consumer_with_kafka_away_logs_through_python_once_per_shape(
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The filter's memory is the process's: Kafka clients of earlier tests in the same run
    # may have logged this shape within its minute already. This test starts it afresh.
    monkeypatch.setattr(kafka_clients.KAFKA_LOG, "filters", [RepeatedLines()])
    monkeypatch.setattr(kafka_clients.KAFKA_LOG, "disabled", False)
    caplog.set_level(logging.INFO, logger="analytics.kafka")
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{closed_port()}")
    consumer = kafka_clients.consumer(kafka, "logs-test", **FAST_RECONNECTS)
    consumer.subscribe(["anything"])
    deadline = time.monotonic() + 3  # dozens of reconnect attempts at these backoffs
    while time.monotonic() < deadline:
        consumer.poll(0.2)
    consumer.close()
    del consumer  # librdkafka's handle destroyed here, not in a later test

    stderr = capfd.readouterr().err
    assert not re.search(r"^%\d\|", stderr, re.M), stderr[:500]
    lines = [r.getMessage() for r in caplog.records if r.name == "analytics.kafka"]
    assert any("Connection refused" in line for line in lines), lines
    shapes = [re.sub(r"\d+", "#", line) for line in lines]
    assert len(shapes) == len(set(shapes)), lines


def test_a_producer_given_its_own_logger_logs_there(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{closed_port()}")
    mine = logging.getLogger("tests.kafka-logs")
    producer = kafka_clients.producer(kafka, logger=mine, **FAST_RECONNECTS)
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        producer.poll(0.2)
    assert producer.flush(0) == 0  # nothing was produced: nothing is left behind
    del producer  # librdkafka's handle destroyed here, not in a later test

    assert not re.search(r"^%\d\|", capfd.readouterr().err, re.M)
    names = {r.name for r in caplog.records if "Connection refused" in r.getMessage()}
    assert names == {"tests.kafka-logs"}


def test_router_and_capture_started_with_kafka_away_wait_saying_so_in_json() -> None:
    """Their start-up check of Kafka (an admin client) logs through Python too: a process
    started while Kafka is away says so in JSON, once, waits, and stops cleanly on SIGTERM
    (LOG_LEVEL in lower case is a level, not a traceback)."""
    env = dict(
        os.environ,
        KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{closed_port()}",
        LOG_LEVEL="info",
        ROUTER_METRICS_PORT="0",
        CAPTURE_PORT=str(closed_port()),
    )
    started = [
        subprocess.Popen(
            [sys.executable, "-m", service],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for service in ("router", "capture")
    ]
    try:
        for process in started:
            check_waits_then_stops(process)
    finally:
        for process in started:  # a failed check must not leave a service waiting for good
            if process.poll() is None:
                process.kill()
                process.wait(30)


def check_waits_then_stops(process: subprocess.Popen[str]) -> None:
    assert process.stderr is not None
    said: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any("waiting for it" in x for x in said):
        said.append(process.stderr.readline())
    process.send_signal(signal.SIGTERM)
    _, rest = process.communicate(timeout=30)
    assert process.returncode == 0, rest
    lines = [line for line in [*said, *rest.splitlines()] if line.strip()]
    assert lines and all(line.startswith("{") for line in lines), lines[:20]
    warnings = [json.loads(line) for line in lines if '"level":"warning"' in line]
    assert len(warnings) == 1 and "is unreachable" in warnings[0]["msg"], warnings
    assert not [line for line in lines if '"level":"error"' in line]
