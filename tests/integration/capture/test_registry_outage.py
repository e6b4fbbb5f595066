"""The capture service with its registry hung: PostgreSQL SIGSTOPped on an open connection.

A request never waits on the registry for longer than CAPTURE_REGISTRY_WAIT_MS: a key
known before the hang keeps its last verdict (200, its events in Kafka), a key never seen
gets 503 + Retry-After (the SDK retries; nothing is lost), and once PostgreSQL answers
again the unknown key gets its real answer (401). Before the bound, one lookup on the hung
connection held the single registry thread, and with it every client's requests, until
PostgreSQL came back.
"""

from __future__ import annotations

import json
import time

import pytest
import requests

from analytics_core import pg, registry
from analytics_core.event_contract import hash_api_key
from analytics_core.settings import Settings
from tests.conftest import frozen, unique_id
from tests.integration.capture.conftest import CaptureProcess
from tests.integration.router_support import end_offsets, private_topics

pytestmark = pytest.mark.integration

BODY = json.dumps({"batch": [{"type": "track", "event": "hung", "userId": "u"}]}).encode()


def test_hung_registry_costs_a_request_at_most_the_registry_wait(
    stack: Settings,
    start_capture,
    private_services,  # type: ignore[no-untyped-def]
) -> None:
    private, env = private_services("postgres", "redis")
    known = unique_id("hung")
    conn = pg.connect(private.postgres)
    try:
        registry.add_client(conn, known, hash_api_key("hung-key"))
    finally:
        conn.close()
    with private_topics(stack, "hung") as topics:
        cap: CaptureProcess = start_capture(
            POSTGRES_PORT=env["POSTGRES_PORT"],
            REDIS_PORT=env["REDIS_PORT"],
            KAFKA_RAW_TOPIC=topics.kafka.raw_topic,
            POSTGRES_CALL_TIMEOUT_S="2",
            CAPTURE_REGISTRY_WAIT_MS="300",
        )

        def post(key: str) -> tuple[requests.Response, float]:
            started = time.monotonic()
            r = cap.post("/v1/batch", BODY, auth=(key, ""), timeout=30)
            return r, time.monotonic() - started

        assert post("hung-key")[0].status_code == 200
        # An unknown key is looked up in PostgreSQL: the registry's connection is open.
        assert post("never-seen-0")[0].status_code == 401
        accepted = 1
        with frozen(private, "postgres"):
            time.sleep(1.2)  # the known key's verdict (1 s) and local cache entries expire
            # An unknown key: its lookup hangs on the open connection (up to 2 s); the
            # request gets 503 after the registry wait (0.3 s).
            r, took = post("never-seen-0b")
            assert r.status_code == 503 and took < 1.5, (r.status_code, took)
            # The known key's lookup now queues behind the hung one: its last verdict holds.
            r, took = post("hung-key")
            assert r.status_code == 200 and took < 1.5, (r.status_code, took)
            accepted += 1
            assert cap.metric("capture_auth_stale_verdicts_total") >= 1
            deadline = time.monotonic() + 5  # past every cache TTL of the known key
            i = 0
            while time.monotonic() < deadline:
                i += 1
                r, took = post("hung-key")
                assert r.status_code == 200, r.text
                assert took < 1.5, f"a known key waited {took:.2f}s on the hung registry"
                accepted += 1
                r, took = post(f"never-seen-{i}")
                assert r.status_code == 503, r.text
                assert r.json()["code"] == "registry_unavailable"
                assert int(r.headers["Retry-After"]) >= 1
                assert took < 1.5, f"an unknown key waited {took:.2f}s on the hung registry"
            assert cap.alive()
        assert i >= 3
        # PostgreSQL answers again: the unknown keys get their real answer.
        deadline = time.monotonic() + 20
        while (status := post("never-seen-again")[0].status_code) == 503:
            assert time.monotonic() < deadline, "still 503 20s after PostgreSQL came back"
            time.sleep(0.5)
        assert status == 401
        assert post("hung-key")[0].status_code == 200
        accepted += 1
        assert sum(end_offsets(topics, topics.kafka.raw_topic).values()) == accepted
        assert "PostgreSQL did not answer within 2 s" in cap.log_path.read_text(), cap.log()
        assert cap.metric("capture_unavailable_total", cause="registry") >= i + 1
