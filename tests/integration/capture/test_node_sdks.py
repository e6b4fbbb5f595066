"""The Node.js SDKs of Segment, PostHog and RudderStack from npm (bin/setup installs them),
pointed at the capture service unchanged but for the URL: their events land in the
client's ClickHouse database with the mapped fields."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from analytics_core.settings import Settings
from tests.conftest import ClientFixture
from tests.integration.capture.conftest import CaptureProcess, rows, wait_rows

pytestmark = pytest.mark.integration

# bin/setup.d/40-capture.sh installs the same versions.
NODE_SDKS = "@segment/analytics-node@3.1.0 posthog-node@5.74.0 @rudderstack/rudder-sdk-node@3.0.13"
NODE_DIR = Path.home() / ".cache" / "analytics-pipeline" / "node-sdks"
SCRIPT = Path(__file__).resolve().parents[2] / "fixtures" / "capture" / "node"
SCRIPT = SCRIPT / "send_with_node_sdks.cjs"


def test_segment_posthog_and_rudderstack_node_sdks(
    stack: Settings,
    capture: CaptureProcess,
    make_client,  # type: ignore[no-untyped-def]
    start_router,  # type: ignore[no-untyped-def]
) -> None:
    node = shutil.which("node")
    stamp = NODE_DIR / "versions.txt"
    if node is None or not stamp.is_file() or stamp.read_text() != NODE_SDKS:
        pytest.fail(f"missing Node.js or the SDKs {NODE_SDKS} in {NODE_DIR}: run bin/setup")
    client: ClientFixture = make_client("node")
    start_router()
    tag = uuid.uuid4().hex
    env = {**os.environ, "NODE_PATH": str(NODE_DIR / "node_modules")}
    sent = subprocess.run(
        [node, str(SCRIPT), capture.url, client.api_key, tag],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert sent.returncode == 0, sent.stdout + sent.stderr
    wait_rows(stack, client.database, 4, timeout_s=60)
    found = {r["event_name"]: r for r in rows(stack, client.database)}
    assert set(found) == {
        "node_segment_track",
        "$identify",
        "node_posthog_capture",
        "node_rudder_track",
    }
    assert all(r["user_id"] == "node-user" for r in found.values())
    props = {name: json.loads(r["event_properties"]) for name, r in found.items()}
    assert props["node_segment_track"]["tag"] == tag and props["node_segment_track"]["n"] == 1
    assert props["node_segment_track"]["$context"]["library"]["name"] == "@segment/analytics-node"
    assert props["$identify"]["$traits"] == {"plan": "pro"}
    assert props["node_posthog_capture"]["tag"] == tag
    assert props["node_posthog_capture"]["$lib"] == "posthog-node"
    assert props["node_rudder_track"]["tag"] == tag
    # Its time is the originalTimestamp, corrected by how long it took to be sent (ms here).
    original_ms = 1_795_773_600_250  # 2026-11-27T10:00:00.250Z
    assert 0 <= found["node_rudder_track"]["ts"] - original_ms < 60_000
    assert props["node_rudder_track"]["$originalTimestamp"] == "2026-11-27T10:00:00.250Z"
    assert props["node_rudder_track"]["$context"]["library"]["name"] == "analytics-node"
    assert client.api_key not in json.dumps(props)
