"""Per-client quotas: stored in PostgreSQL, enforced across capture processes through Redis,
429 + Retry-After, other clients unaffected; Redis down keeps events flowing (per-process
limits)."""

from __future__ import annotations

import json

import pytest

from analytics_core import pg
from analytics_core.quotas import get_quota, set_quota
from analytics_core.settings import Settings
from devstack import api
from tests.conftest import ClientFixture
from tests.integration.capture.conftest import CaptureProcess

pytestmark = pytest.mark.integration


def batch_of(n: int) -> bytes:
    return json.dumps(
        {"batch": [{"type": "track", "event": "q", "userId": "u"} for _ in range(n)]}
    ).encode()


def give_quota(settings: Settings, client_id: str, rate: float, burst: int) -> None:
    conn = pg.connect(settings.postgres)
    try:
        set_quota(conn, client_id, rate, burst)
        stored = get_quota(conn, client_id)
        assert stored is not None and (stored.events_per_s, stored.burst) == (rate, burst)
    finally:
        conn.close()


def test_quota_is_shared_by_two_capture_processes_and_spares_other_clients(
    stack: Settings,
    make_client,
    start_capture,  # type: ignore[no-untyped-def]
) -> None:
    limited: ClientFixture = make_client("qlim")
    other: ClientFixture = make_client("qoth")
    give_quota(stack, limited.client_id, rate=1.0, burst=100)
    first: CaptureProcess = start_capture()
    second: CaptureProcess = start_capture()
    statuses = []
    for i in range(20):  # 200 events alternately through both processes, in about a second
        cap = first if i % 2 == 0 else second
        r = cap.post("/v1/batch", batch_of(10), auth=(limited.api_key, ""))
        statuses.append(r.status_code)
        if r.status_code == 429:
            assert int(r.headers["Retry-After"]) >= 1
            assert r.json()["code"] == "rate_limited"
    # The burst (100) is shared: ~10 requests pass in total, not ~10 per process.
    assert 9 <= statuses.count(200) <= 11, statuses
    assert statuses.count(429) == 20 - statuses.count(200)
    for cap in (first, second):
        assert cap.post("/v1/batch", batch_of(50), auth=(other.api_key, "")).status_code == 200
    refused = first.metric("capture_quota_refusals_total", client_id=limited.client_id)
    refused += second.metric("capture_quota_refusals_total", client_id=limited.client_id)
    assert refused == statuses.count(429)


def test_redis_down_keeps_accepting_with_per_process_limits(
    stack: Settings,
    make_client,
    start_capture,
    private_services,  # type: ignore[no-untyped-def]
) -> None:
    client: ClientFixture = make_client("qred")
    give_quota(stack, client.client_id, rate=0.1, burst=30)
    private, env = private_services("redis")
    cap: CaptureProcess = start_capture(REDIS_PORT=env["REDIS_PORT"])
    assert cap.post("/v1/batch", batch_of(10), auth=(client.api_key, "")).status_code == 200
    api.stop_service(private, "redis")
    statuses = [
        cap.post("/v1/batch", batch_of(10), auth=(client.api_key, "")).status_code for _ in range(6)
    ]
    # Durability first: Redis down never refuses events by itself; the process still
    # enforces the client's quota with its own bucket (30 events of burst).
    assert statuses[:3] == [200, 200, 200], statuses
    assert 429 in statuses, statuses
    assert cap.alive()
