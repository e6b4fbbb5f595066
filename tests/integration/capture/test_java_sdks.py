"""The JVM SDKs of Segment (analytics-java), RudderStack and PostHog (posthog-server) from
Maven Central (bin/setup fetches them), pointed at the capture service unchanged but for the
URL: their events land in the client's ClickHouse database with the mapped fields, and a
wrong key reaches the SDKs' error callbacks with the reason."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from analytics_core.settings import Settings
from tests.conftest import ClientFixture, wait_for
from tests.integration.capture.conftest import CaptureProcess, counts, rows, settle

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "capture" / "java"
JAVA_DIR = Path.home() / ".cache" / "analytics-pipeline" / "java-sdks"


def send(java: str, url: str, key: str, tag: str, arrived: Callable[[], bool]) -> tuple[int, str]:
    """Runs SendWithJavaSdks.java from source (Java 11+) with the SDKs' jars, keeps it up
    until `arrived()` (PostHog's SDK sends from daemon threads and reports nothing, so the
    JVM must outlive its request) or the program ends; then (exit status, its output)."""
    jars = f"{JAVA_DIR / 'lib'}/*"
    program = str(FIXTURE / "SendWithJavaSdks.java")
    proc = subprocess.Popen(
        [java, "-cp", jars, program, url, key, tag],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: proc.poll() is not None or arrived(), 120, what="the JVM SDKs' requests")
        out, err = proc.communicate(timeout=60)  # closes its standard input: it exits
    finally:
        proc.kill()
    return proc.returncode, out + err


def test_segment_rudderstack_and_posthog_jvm_sdks(
    stack: Settings,
    capture: CaptureProcess,
    make_client,  # type: ignore[no-untyped-def]
    start_router,  # type: ignore[no-untyped-def]
) -> None:
    java = shutil.which("java")
    stamp = JAVA_DIR / "pom.sha256"
    wanted = hashlib.sha256((FIXTURE / "pom.xml").read_bytes()).hexdigest()
    if java is None or not stamp.is_file() or stamp.read_text() != wanted:
        pytest.fail(
            f"missing Java or the SDKs of {FIXTURE / 'pom.xml'} in {JAVA_DIR}: run bin/setup"
        )
    client: ClientFixture = make_client("jvm")
    start_router()
    tag = uuid.uuid4().hex
    paths = (("segment:import", "200"), ("posthog:batch", "200"))
    before = {p: capture.metric("capture_requests_total", route=p[0], status=p[1]) for p in paths}
    status, output = send(
        java, capture.url, client.api_key, tag, lambda: counts(stack, client.database)[0] >= 4
    )
    assert status == 0 and "queued" in output, output
    assert settle(stack, client.database, 4) == (4, 4)
    found = {r["event_name"]: r for r in rows(stack, client.database)}
    assert set(found) == {
        "java_segment_track",
        "$identify",
        "java_rudder_track",
        "java_posthog_capture",
    }
    assert all(r["user_id"] == "java-user" for r in found.values())
    props = {name: json.loads(r["event_properties"]) for name, r in found.items()}
    assert props["java_segment_track"]["tag"] == tag and props["java_segment_track"]["n"] == 1
    assert props["$identify"]["$traits"] == {"plan": "pro"}
    assert props["java_rudder_track"]["tag"] == tag
    assert props["java_rudder_track"]["$context"]["library"]["name"] == "analytics-java"
    assert props["java_posthog_capture"]["tag"] == tag
    assert props["java_posthog_capture"]["$lib"] == "posthog-server"
    # Each event's time is the one its SDK stamped: within the run, not the epoch or later.
    now_ms = int(time.time() * 1000)
    assert all(now_ms - 120_000 < r["ts"] <= now_ms for r in found.values())
    assert client.api_key not in json.dumps(props)
    # The paths the SDKs used: Segment's /v1/import, PostHog's /batch (RudderStack: /v1/batch).
    for path in paths:
        assert (
            capture.metric("capture_requests_total", route=path[0], status=path[1]) > before[path]
        )

    # A wrong key: refused, and each SDK's error callback gets the reason (none lands).
    def refused(route: str) -> float:
        return capture.metric("capture_requests_total", route=route, status="401")

    routes = ("segment:import", "segment:batch", "posthog:batch")
    refused_before = {route: refused(route) for route in routes}
    status, output = send(
        java,
        capture.url,
        f"{client.api_key}-wrong",
        tag,
        lambda: all(refused(route) > refused_before[route] for route in routes),
    )
    assert status == 1, output
    assert all(refused(route) > refused_before[route] for route in routes), output
    for sdk in ("segment", "rudderstack"):
        assert f"{sdk}: java.io.IOException:" in output, output
    assert '"code":"invalid_write_key"' in output
    assert counts(stack, client.database)[0] == 4
