"""Third-party SDKs from PyPI pointed at the capture service, unchanged but for the URL:
their events land in the right client's ClickHouse database with the mapped fields."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from analytics_core.settings import Settings
from capture.mapping import CAPTURE_ID_NAMESPACE
from tests.conftest import ClientFixture
from tests.integration.capture.conftest import CaptureProcess, rows, settle

pytestmark = pytest.mark.integration

WHEN = datetime(2026, 11, 27, 10, 0, 0, 250_000, tzinfo=UTC)
WHEN_MS = int(WHEN.timestamp() * 1000)


def by_name(found: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["event_name"]: r for r in found}


def test_segment_python_sdk(
    stack: Settings,
    capture: CaptureProcess,
    make_client,
    start_router,  # type: ignore[no-untyped-def]
) -> None:
    from segment.analytics import Client

    client: ClientFixture = make_client("seg")
    other: ClientFixture = make_client("segother")
    start_router()
    natively = capture.metric("capture_native_batches_total", path="native")
    errors: list[object] = []
    sdk = Client(
        client.api_key, host=capture.url, gzip=True, on_error=lambda e, b: errors.append(e)
    )
    sdk.track(
        "user-1",
        "Order Completed",
        {"url": "/checkout", "revenue": 9.5},
        context={"ip": "203.0.113.9"},
        timestamp=WHEN,
        message_id="order-msg-1",
    )
    sdk.identify("user-1", {"email": "ada@example.test"}, timestamp=WHEN)
    sdk.page("user-1", "Docs", "Pricing", {"url": "/pricing"}, timestamp=WHEN)
    sdk.screen("user-1", "App", "Home", timestamp=WHEN)
    sdk.group("user-1", "org-9", {"name": "Acme"}, timestamp=WHEN)
    sdk.alias(previous_id="anon-1", user_id="user-1", timestamp=WHEN)
    sdk.flush()
    sdk.shutdown()
    assert not errors
    assert settle(stack, client.database, 6) == (6, 6)
    found = by_name(rows(stack, client.database))
    assert set(found) == {"Order Completed", "$identify", "$page", "$screen", "$group", "$alias"}
    order = found["Order Completed"]
    assert order["event_id"] == str(
        uuid.uuid5(CAPTURE_ID_NAMESPACE, f"{client.client_id}/order-msg-1")
    )
    assert order["user_id"] == "user-1"
    assert order["ts"] == WHEN_MS
    assert order["sent_at"] is not None and order["sent_at"] >= WHEN_MS
    props = json.loads(order["event_properties"])
    assert props["url"] == "/checkout" and props["revenue"] == 9.5
    assert props["$context"]["ip"] == "203.0.113.9"
    assert props["$context"]["library"]["name"] == "analytics-python"
    assert json.loads(found["$identify"]["event_properties"])["$traits"] == {
        "email": "ada@example.test"
    }
    page = json.loads(found["$page"]["event_properties"])
    assert (page["$name"], page["$category"], page["url"]) == ("Pricing", "Docs", "/pricing")
    assert json.loads(found["$group"]["event_properties"])["$groupId"] == "org-9"
    assert json.loads(found["$alias"]["event_properties"])["$previousId"] == "anon-1"
    assert client.api_key not in json.dumps(list(found.values()))
    assert rows(stack, other.database) == []
    # The SDK's batches took the compiled fast path (capture.native_path), and what it
    # stored is what the assertions above read.
    assert capture.metric("capture_native_batches_total", path="native") > natively


def test_rudderstack_python_sdk(
    stack: Settings,
    capture: CaptureProcess,
    make_client,
    start_router,  # type: ignore[no-untyped-def]
) -> None:
    from rudderstack.analytics.client import Client

    client: ClientFixture = make_client("rud")
    start_router()
    natively = capture.metric("capture_native_batches_total", path="native")
    errors: list[object] = []
    sdk = Client(client.api_key, host=capture.url, on_error=lambda e, b: errors.append(e))
    assert sdk.gzip  # RudderStack's SDK compresses by default
    for i in range(20):
        sdk.track(f"user-{i % 3}", "Song Played", {"n": i}, timestamp=WHEN, anonymous_id="anon-r")
    sdk.identify("user-0", {"plan": "free"}, timestamp=WHEN)
    sdk.flush()
    sdk.shutdown()
    assert not errors
    assert settle(stack, client.database, 21) == (21, 21)
    found = rows(stack, client.database)
    played = [r for r in found if r["event_name"] == "Song Played"]
    assert sorted(json.loads(r["event_properties"])["n"] for r in played) == list(range(20))
    assert {r["user_id"] for r in played} == {"user-0", "user-1", "user-2"}
    assert all(json.loads(r["event_properties"])["$anonymousId"] == "anon-r" for r in played)
    assert all(r["ts"] == WHEN_MS for r in found)
    # RudderStack's SDK sends identify traits inside context, and that is where they stay.
    identify = json.loads(by_name(found)["$identify"]["event_properties"])
    assert identify["$context"]["traits"] == {"plan": "free"}
    assert capture.metric("capture_native_batches_total", path="native") > natively


def test_posthog_python_sdk(
    stack: Settings,
    capture: CaptureProcess,
    make_client,
    start_router,  # type: ignore[no-untyped-def]
) -> None:
    from posthog import Posthog

    client: ClientFixture = make_client("ph")
    start_router()
    sdk = Posthog(client.api_key, host=capture.url, gzip=True, max_retries=5)
    ids = [str(uuid.uuid4()) for _ in range(3)]
    sdk.capture(
        "$pageview", distinct_id="user-7", properties={"url": "/home"}, timestamp=WHEN, uuid=ids[0]
    )
    sdk.capture(
        "signed_up", distinct_id="user-7", properties={"plan": "pro"}, timestamp=WHEN, uuid=ids[1]
    )
    sdk.set(distinct_id="user-7", properties={"email": "ada@example.test"}, uuid=ids[2])
    sdk.flush()
    sdk.shutdown()
    assert settle(stack, client.database, 3) == (3, 3)
    found = by_name(rows(stack, client.database))
    assert {found[n]["event_id"] for n in found} == set(ids)
    pageview = found["$pageview"]
    assert pageview["user_id"] == "user-7" and pageview["ts"] == WHEN_MS
    props = json.loads(pageview["event_properties"])
    assert props["url"] == "/home" and props["$lib"] == "posthog-python"
    assert json.loads(found["signed_up"]["event_properties"])["plan"] == "pro"
    assert json.loads(found["$set"]["event_properties"])["$set"] == {"email": "ada@example.test"}
    assert client.api_key not in json.dumps(list(found.values()))


def test_posthog_python_sdk_feature_flags_are_all_off_without_errors(
    capture: CaptureProcess,
    make_client,  # type: ignore[no-untyped-def]
) -> None:
    """There are no feature flags here: /flags answers "none" (every flag off), so the
    SDK's flag calls return at once without an error instead of failing on a 404."""
    from posthog import Posthog

    before = capture.metric("capture_requests_total", route="posthog:flags", status="200")
    errors: list[object] = []
    client: ClientFixture = make_client("flags")
    sdk = Posthog(client.api_key, host=capture.url, on_error=lambda e, b: errors.append(e))
    try:
        flags = sdk.evaluate_flags("user-1")
        assert not flags.is_enabled("new-ui") and flags.get_flag("new-ui") is None
        assert sdk.get_all_flags("user-1") == {}
    finally:
        sdk.shutdown()
    assert not errors
    after = capture.metric("capture_requests_total", route="posthog:flags", status="200")
    assert after >= before + 2
