"""Kafka stopped while SDKs send: the capture service answers 503 (never 200 for events that
are not in Kafka), the SDKs retry, and once Kafka is back every event arrives exactly once:
`count() == uniqExact(event_id)` on the table itself (no FINAL).

The rule that makes this hold: a request's events are only acknowledged (200) once Kafka
acknowledged every message carrying them; events of a request answered otherwise are
remembered with the fate of their message (capture.retry_memory), so the SDK's retry waits
for, or counts, the first copy instead of producing a second one.

Runs on a private Kafka (own ports and state dir) so the shared one is never stopped. The
router starts once Kafka is back and the SDKs are done: this test is about the capture
service, and a router living through the broker restart is the router's own test.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import KafkaException

from analytics_core.settings import Settings
from devstack import api
from tests.conftest import (
    ClientFixture,
    RouterThread,
    free_port,
    fresh_group,
    router_env,
    wait_for,
)
from tests.integration.capture.conftest import CaptureProcess, counts, wait_rows

pytestmark = pytest.mark.integration

EVENTS_PER_SDK = 150


@pytest.fixture
def private_kafka(
    stack: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, dict[str, str]]]:
    env = {
        "PIPELINE_STATE_DIR": str(tmp_path_factory.mktemp("private-kafka")),
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "KAFKA_CONTROLLER_PORT": str(free_port()),
    }
    private = Settings.from_env({**os.environ, **env})
    api.ensure_up(private, ["kafka"])
    try:
        yield private, env
    finally:
        api.reset(private, ["kafka"])


def _try_fresh_group(settings: Settings) -> str | None:
    try:
        return fresh_group(settings, "capture-outage")
    except KafkaException:
        return None


def send_with(sdk_name: str, key: str, url: str, run: str, errors: list[object]) -> None:
    """Send EVENTS_PER_SDK events over ~6 s through one SDK, then flush."""
    if sdk_name == "segment":
        from segment.analytics import Client

        seg = Client(key, host=url, on_error=lambda e, b: errors.append(e), upload_interval=0.2)
        for i in range(EVENTS_PER_SDK):
            seg.track(f"u{i % 5}", "outage", {"run": run, "sdk": sdk_name, "i": i})
            time.sleep(0.04)
        seg.flush()
        seg.shutdown()
    elif sdk_name == "rudderstack":
        from rudderstack.analytics.client import Client as RudderClient

        rud = RudderClient(
            key,
            host=url,
            on_error=lambda e, b: errors.append(e),
            upload_interval=0.2,
            max_retries=15,
        )
        for i in range(EVENTS_PER_SDK):
            rud.track(f"u{i % 5}", "outage", {"run": run, "sdk": sdk_name, "i": i})
            time.sleep(0.04)
        rud.flush()
        rud.shutdown()
    else:
        from posthog import Posthog

        ph = Posthog(key, host=url, max_retries=15, flush_interval=0.2)
        for i in range(EVENTS_PER_SDK):
            ph.capture(
                "outage", distinct_id=f"u{i % 5}", properties={"run": run, "sdk": sdk_name, "i": i}
            )
            time.sleep(0.04)
        ph.flush()
        ph.shutdown()


def test_kafka_stopped_while_sdks_send_loses_and_duplicates_nothing(
    stack: Settings,
    private_kafka,
    make_client,
    start_capture,  # type: ignore[no-untyped-def]
) -> None:
    private, kafka_env = private_kafka
    client: ClientFixture = make_client("kout")
    # A brand-new broker elects its partition leaders a moment after it answers.
    # A brand-new broker elects its partition leaders a moment after it answers.
    group = str(wait_for(lambda: _try_fresh_group(private), 60, what="partition leaders"))
    cap: CaptureProcess = start_capture(
        CAPTURE_ACK_TIMEOUT_MS="2000", CAPTURE_RETRY_AFTER_S="1", **kafka_env
    )
    run = uuid.uuid4().hex[:8]
    errors: list[object] = []
    senders = [
        threading.Thread(target=send_with, args=(name, client.api_key, cap.url, run, errors))
        for name in ("segment", "rudderstack", "posthog")
    ]
    for t in senders:
        t.start()
    wait_for(
        lambda: cap.metric("capture_events_accepted_total", client_id=client.client_id) >= 10,
        60,
        what="events flowing before the outage",
    )
    api.stop_service(private, "kafka")
    wait_for(
        lambda: cap.metric("capture_unavailable_total", cause="kafka") > 0,
        30,
        what="503s while Kafka is down",
    )
    time.sleep(3)  # the SDKs keep sending and retrying against 503s
    api.start_service(private, "kafka")
    for t in senders:
        t.join(180)
        assert not t.is_alive(), "an SDK did not finish sending"
    assert errors == []  # every SDK got its events acknowledged in the end
    expected = 3 * EVENTS_PER_SDK
    assert cap.metric("capture_events_accepted_total", client_id=client.client_id) >= expected
    assert cap.metric("capture_requests_total", route="segment:batch", status="503") > 0
    assert cap.alive()
    router = RouterThread(router_env(group, **kafka_env)).start()
    try:
        wait_rows(stack, client.database, expected, timeout_s=120)
        time.sleep(3)  # a duplicate arriving late would show now
        assert counts(stack, client.database) == (expected, expected)
    finally:
        router.stop(60)
