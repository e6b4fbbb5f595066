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
from pathlib import Path

import pytest

from analytics_core.settings import Settings
from tests.conftest import ClientFixture
from tests.integration.capture.conftest import CaptureProcess, counts, rows, settle

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "capture" / "java"
JAVA_DIR = Path.home() / ".cache" / "analytics-pipeline" / "java-sdks"


def send(java: str, url: str, key: str, tag: str) -> subprocess.CompletedProcess[str]:
    """SendWithJavaSdks.java, run from source by the JVM (Java 11+), with the SDKs' jars."""
    return subprocess.run(
        [
            java,
            "-cp",
            f"{JAVA_DIR / 'lib'}/*",
            str(FIXTURE / "SendWithJavaSdks.java"),
            url,
            key,
            tag,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


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
    paths = (("segment:import", "200"), ("posthog:batch", "200"), ("segment:batch", "401"))
    before = {p: capture.metric("capture_requests_total", route=p[0], status=p[1]) for p in paths}
    sent = send(java, capture.url, client.api_key, tag)
    assert sent.returncode == 0, sent.stdout + sent.stderr
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
    for path in paths[:2]:
        assert (
            capture.metric("capture_requests_total", route=path[0], status=path[1]) > before[path]
        )

    # A wrong key: refused, and each SDK's error callback gets the reason (none lands).
    refused = send(java, capture.url, f"{client.api_key}-wrong", tag)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    for sdk in ("segment", "rudderstack"):
        assert f"{sdk}: java.io.IOException:" in refused.stderr, refused.stderr
    assert '"code":"invalid_write_key"' in refused.stderr
    refused_rudder = capture.metric("capture_requests_total", route="segment:batch", status="401")
    assert refused_rudder > before[paths[2]]
    assert counts(stack, client.database)[0] == 4
