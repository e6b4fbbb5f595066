"""Operating the capture service: --help, fail-fast configuration, health and readiness,
/metrics, CORS preflight, and SIGTERM draining the requests in flight."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from analytics_core.settings import Settings
from devstack.process import descendants
from tests.conftest import ClientFixture, free_port, wait_for
from tests.integration.capture.conftest import REPO, CaptureProcess, rows, settle

pytestmark = pytest.mark.integration


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "capture", *args],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_help_and_fail_fast_configuration(stack: Settings) -> None:
    helped = run_cli("--help")
    assert helped.returncode == 0
    for name in (
        "CAPTURE_PORT",
        "CAPTURE_QUOTA_EVENTS_PER_S",
        "CAPTURE_PUBLIC_URL",
        "/v1/batch",
        "/readyz",
        "/v1/projects/<writeKey>/settings",
        "/array/<token>/config",
        "/sourceConfig/",
    ):
        assert name in helped.stdout
    bad = run_cli(CAPTURE_PORT="eighty")
    assert bad.returncode == 2 and "CAPTURE_PORT" in bad.stderr
    # (Kafka unreachable is an outage, waited for: tests/integration/test_start_without_kafka.py)
    no_topic = run_cli(KAFKA_RAW_TOPIC="no_such_raw_topic", CAPTURE_PORT=str(free_port()))
    assert no_topic.returncode == 2 and "'no_such_raw_topic' does not exist" in no_topic.stderr


def test_health_metrics_and_cors(
    stack: Settings,
    capture: CaptureProcess,
    make_client,  # type: ignore[no-untyped-def]
) -> None:
    client: ClientFixture = make_client("ops")
    assert requests.get(capture.url + "/healthz", timeout=5).text == "ok\n"
    assert requests.get(capture.url + "/readyz", timeout=5).status_code == 200
    origin = "http://app.example.test"
    pre = requests.options(
        capture.url + "/e/",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
        timeout=5,
    )
    assert pre.status_code == 204
    assert pre.headers["Access-Control-Allow-Origin"] == origin
    assert "POST" in pre.headers["Access-Control-Allow-Methods"]
    assert pre.headers["Access-Control-Allow-Headers"] == "content-type"
    body = json.dumps({"event": "cors", "distinct_id": "u", "api_key": client.api_key})
    sent = capture.post("/capture/", body, headers={"Origin": origin})
    assert sent.status_code == 200 and sent.headers["Access-Control-Allow-Origin"] == origin
    text = capture.metrics()
    for name in (
        "capture_requests_total",
        "capture_request_duration_seconds_bucket",
        "capture_request_bytes_total",
        "capture_events_accepted_total",
        "capture_kafka_up",
        "capture_up",
    ):
        assert name in text, name
    assert capture.metric("capture_events_accepted_total", client_id=client.client_id) == 1
    assert capture.metric("capture_requests_total", route="posthog:capture", status="200") >= 1


def test_sigterm_drains_requests_in_flight(
    stack: Settings,
    start_capture,
    make_client,
    start_router,  # type: ignore[no-untyped-def]
) -> None:
    client: ClientFixture = make_client("drain")
    start_router()
    cap: CaptureProcess = start_capture()
    body = json.dumps({"batch": [{"type": "track", "event": "drained", "userId": "u"}]}).encode()
    head = (
        f"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n"
        f"Authorization: Basic "
    ).encode()
    import base64

    head += base64.b64encode(f"{client.api_key}:".encode()) + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", cap.port), timeout=30) as sock:
        sock.sendall(head + body[:10])  # the request is in flight, its body half sent
        time.sleep(0.5)
        cap.proc.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        sock.sendall(body[10:])
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert cap.proc.wait(40) == 0
    assert settle(stack, client.database, 1, quiet_s=0.5) == (1, 1)
    assert rows(stack, client.database)[0]["event_name"] == "drained"


def test_a_master_killed_alone_takes_its_worker_down_gracefully(
    stack: Settings,
    start_capture,  # type: ignore[no-untyped-def]
) -> None:
    """`kill -9` of the capture process (granian's master): its worker gets SIGTERM from
    the kernel, drains and flushes, instead of serving the port forever."""
    cap: CaptureProcess = start_capture()
    [worker] = descendants(cap.proc.pid)
    cap.proc.kill()
    cap.proc.wait(10)

    def worker_gone() -> bool:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            return True
        stat = Path(f"/proc/{worker}/stat").read_text()
        return stat[stat.rindex(")") + 2] == "Z"  # exited, not reaped yet

    wait_for(worker_gone, 30, what="the worker to stop after its master")
    with pytest.raises(requests.ConnectionError):
        requests.get(cap.url + "/healthz", timeout=2)
    assert "capture stopped" in cap.log()
