"""The wire-format mapping (README "Capture endpoint (HTTP)"), field by field, and that what
it produces is an event the router's contract parser accepts."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from analytics_core.event_contract import Origin, ValidEvent, hash_api_key, parse_message
from capture import posthog_format, segment_format
from capture.mapping import (
    CAPTURE_ID_NAMESPACE,
    EventOutcome,
    EventRejected,
    MapContext,
    MappedEvent,
    contract_check,
    event_id,
    uuid5,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "capture"
KEY_HASH = hash_api_key("key-acme")
RECEIVED_MS = 1_795_000_000_000
CTX = MapContext("acme", KEY_HASH, RECEIVED_MS, None, 256 * 1024)


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def ms(iso: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def mapped(outcome: object) -> dict[str, Any]:
    assert isinstance(outcome, MappedEvent), outcome
    doc: dict[str, Any] = orjson.loads(outcome.encoded)
    # The router reads exactly these bytes: they must be a valid contract v1 event.
    verdicts = parse_message(b"[" + outcome.encoded + b"]", Origin("t", 0, 0))
    assert isinstance(verdicts[0], ValidEvent), verdicts
    return doc


def segment_docs(ctx: MapContext = CTX) -> list[dict[str, Any]]:
    body = load("segment_batch_every_type.json")
    msgs = segment_format.messages(body, "batch")
    assert isinstance(msgs, list)
    sent = segment_format.batch_sent_at(body)
    ctx = MapContext(ctx.client_id, ctx.key_hash, ctx.received_ms, ms(str(sent)), 256 * 1024)
    return [mapped(segment_format.map_message(m, i, ctx)) for i, m in enumerate(msgs)]


def test_segment_track_maps_every_field() -> None:
    track = segment_docs()[0]
    assert track["client_id"] == "acme"
    assert track["api_key_hash"] == KEY_HASH
    assert "api_key" not in track
    assert track["event_id"] == "9f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f"  # a UUID message id is kept
    assert track["event_name"] == "Order Completed"
    assert track["user_id"] == "user-42"
    assert "anonymous_id" not in track  # userId wins; anonymousId is kept in properties
    assert track["timestamp"] == ms("2026-11-27T10:00:00.250+00:00")
    assert track["sent_at"] == ms("2026-11-27T10:00:06+00:00")  # batch sentAt
    props = track["properties"]
    assert props["url"] == "/checkout" and props["revenue"] == 12.5
    assert props["items"] == [{"sku": "a", "qty": 1}]
    assert props["$anonymousId"] == "anon-7"
    assert props["$context"] == {
        "library": {"name": "analytics-python", "version": "2.4.0"},
        "ip": "203.0.113.9",
    }
    assert props["$integrations"] == {"All": True}
    assert "must-not-be-stored" not in json.dumps(track)


def test_segment_other_types_map_to_dollar_event_names_and_keep_their_fields() -> None:
    _track, page, screen, identify, group, alias = segment_docs()
    assert page["event_name"] == "$page"
    assert page["anonymous_id"] == "anon-7" and "user_id" not in page
    assert page["properties"] == {
        "url": "https://example.test/pricing",
        "title": "Pricing",
        "$name": "Pricing",
        "$category": "Docs",
    }
    assert screen["event_name"] == "$screen" and screen["properties"]["$name"] == "Home"
    assert identify["event_name"] == "$identify"
    assert identify["properties"] == {"$traits": {"email": "ada@example.test", "plan": "pro"}}
    assert group["event_name"] == "$group"
    assert group["properties"] == {"$groupId": "org-9", "$traits": {"name": "Acme"}}
    assert alias["event_name"] == "$alias"
    assert alias["user_id"] == "user-42" and alias["properties"] == {"$previousId": "anon-7"}


def test_non_uuid_message_ids_become_stable_uuids_scoped_by_client() -> None:
    page = segment_docs()[1]
    expected = uuid.uuid5(CAPTURE_ID_NAMESPACE, "acme/ajs-next-5d41402abc4b2a76b9719d911017c592")
    assert page["event_id"] == str(expected)
    # the same message id of another client is another event
    other = segment_docs(MapContext("other", KEY_HASH, RECEIVED_MS, None, 1024))[1]
    assert other["event_id"] != page["event_id"]
    # an SDK retry maps to the same id
    assert segment_docs()[1]["event_id"] == page["event_id"]


def test_the_fast_uuid5_is_uuid5() -> None:
    for name in ("acme/m-1", "x" * 300, "client/é-ü", ""):
        assert uuid5(name) == str(uuid.uuid5(CAPTURE_ID_NAMESPACE, name))


def test_a_message_without_id_gets_an_id_from_its_content() -> None:
    msg = {"type": "track", "event": "x", "userId": "u", "timestamp": "2026-11-27T10:00:00Z"}
    first = event_id("acme", None, msg)
    assert first == event_id("acme", None, dict(msg))
    assert first != event_id("acme", None, dict(msg, event="y"))
    uuid.UUID(first)


def test_missing_timestamp_is_the_time_received_and_sent_at_is_optional() -> None:
    out = mapped(
        segment_format.map_message({"type": "track", "event": "e", "anonymousId": "a"}, 0, CTX)
    )
    assert out["timestamp"] == RECEIVED_MS
    assert "sent_at" not in out


def test_a_timestamp_without_zone_is_utc_and_numbers_are_epoch_ms() -> None:
    naive = {"type": "track", "event": "e", "userId": "u", "timestamp": "2026-11-27T10:00:00"}
    assert mapped(segment_format.map_message(naive, 0, CTX))["timestamp"] == ms(
        "2026-11-27T10:00:00+00:00"
    )
    epoch = dict(naive, timestamp=1_795_000_000_123)
    assert mapped(segment_format.map_message(epoch, 0, CTX))["timestamp"] == 1_795_000_000_123


def test_numeric_user_ids_are_strings() -> None:
    out = mapped(segment_format.map_message({"type": "track", "event": "e", "userId": 42}, 0, CTX))
    assert out["user_id"] == "42"


def test_one_bad_event_is_rejected_with_its_index_and_reason_the_others_map() -> None:
    body = load("segment_batch_one_bad_event.json")
    msgs = segment_format.messages(body, "batch")
    assert isinstance(msgs, list)
    outcomes = [segment_format.map_message(m, i, CTX) for i, m in enumerate(msgs)]
    good = [o for o in outcomes if isinstance(o, MappedEvent)]
    bad = {o.index: o.message for o in outcomes if isinstance(o, EventRejected)}
    assert [mapped(o)["event_name"] for o in good] == ["Signed Up", "Logged In"]
    assert set(bad) == {1, 2, 3, 4, 5}
    assert "event" in bad[1]
    assert "userId or anonymousId" in bad[2]
    assert "properties" in bad[3]
    assert "unknown-kind" in bad[4]
    assert "object" in bad[5]


def test_forged_client_id_and_keys_in_the_body_never_reach_the_event() -> None:
    msg = {
        "type": "track",
        "event": "e",
        "userId": "u",
        "client_id": "victim",
        "api_key": "victim-key",
        "writeKey": "victim-key",
        "token": "victim-key",
        "event_id": "00000000-0000-0000-0000-000000000000",
    }
    out = mapped(segment_format.map_message(msg, 0, CTX))
    assert out["client_id"] == "acme" and out["api_key_hash"] == KEY_HASH
    assert "victim-key" not in json.dumps(out)
    assert out["properties"]["$client_id"] == "victim"  # kept as data, never as routing


def checked(outcome: EventOutcome) -> EventOutcome:
    """The outcome once the contract has seen it (what the handler does per message)."""
    if isinstance(outcome, EventRejected):
        return outcome
    ok, refused = contract_check([outcome])
    return ok[0] if ok else refused[0]


def test_contract_limits_reject_the_event_with_the_contracts_reason() -> None:
    long_user = {"type": "track", "event": "e", "userId": "u" * 201}
    out = checked(segment_format.map_message(long_user, 3, CTX))
    assert isinstance(out, EventRejected) and out.index == 3 and "user_id" in out.message
    too_old = {"type": "track", "event": "e", "userId": "u", "timestamp": "1969-01-01T00:00:00Z"}
    assert isinstance(checked(segment_format.map_message(too_old, 0, CTX)), EventRejected)
    deep: Any = {}
    for _ in range(300):  # deeper than the contract (and the encoder) allows
        deep = {"d": deep}
    nested = {"type": "track", "event": "e", "userId": "u", "properties": deep}
    assert isinstance(checked(segment_format.map_message(nested, 0, CTX)), EventRejected)


def test_contract_check_keeps_the_valid_events_of_a_message_and_names_the_others() -> None:
    msgs = [
        {"type": "track", "event": "ok", "userId": "u"},
        {"type": "track", "event": "x" * 201, "userId": "u"},
        {"type": "track", "event": "ok2", "userId": "u"},
    ]
    mapped_events = [segment_format.map_message(m, i, CTX) for i, m in enumerate(msgs)]
    assert all(isinstance(m, MappedEvent) for m in mapped_events)
    ok, refused = contract_check(mapped_events)  # type: ignore[arg-type]
    assert [e.index for e in ok] == [0, 2]
    assert [(r.index, r.code) for r in refused] == [(1, "invalid_event")]
    assert "event_name" in refused[0].message


def test_an_event_over_the_size_limit_is_rejected() -> None:
    small = MapContext("acme", KEY_HASH, RECEIVED_MS, None, 1024)
    big = {"type": "track", "event": "e", "userId": "u", "properties": {"x": "y" * 2000}}
    out = segment_format.map_message(big, 0, small)
    assert isinstance(out, EventRejected) and out.code == "event_too_large"


@pytest.mark.parametrize(
    ("kind", "body", "problem"),
    [
        ("batch", [], "JSON object"),
        ("batch", {"batch": {}}, "'batch' array"),
        ("batch", {"batch": []}, "empty"),
    ],
)
def test_segment_bodies_without_messages_are_refused(kind: str, body: object, problem: str) -> None:
    out = segment_format.messages(body, kind)
    assert isinstance(out, str) and problem in out


def test_single_message_paths_imply_the_type() -> None:
    msgs = segment_format.messages({"userId": "u", "traits": {"a": 1}}, "identify")
    assert isinstance(msgs, list)
    assert mapped(segment_format.map_message(msgs[0], 0, CTX))["event_name"] == "$identify"
    short = segment_format.messages({"userId": "u", "event": "e"}, "t")
    assert isinstance(short, list) and short[0]["type"] == "track"


def test_segment_write_key_from_the_body() -> None:
    assert segment_format.body_key({"writeKey": "k", "batch": []}, []) == "k"
    assert segment_format.body_key({}, [{"writeKey": "k2"}]) == "k2"
    assert not isinstance(segment_format.body_key({}, [{"writeKey": "a"}, {"writeKey": "b"}]), str)


def posthog_docs(name: str) -> list[dict[str, Any]]:
    body = load(name)
    msgs = posthog_format.messages(body, "batch")
    assert isinstance(msgs, list)
    sent = posthog_format.batch_sent_at(body, "")
    ctx = MapContext("acme", KEY_HASH, RECEIVED_MS, ms(str(sent)) if sent else None, 256 * 1024)
    return [mapped(posthog_format.map_message(m, i, ctx)) for i, m in enumerate(msgs)]


def test_posthog_python_batch_maps_every_field() -> None:
    pageview, set_event, clicked = posthog_docs("posthog_python_batch.json")
    assert pageview["event_id"] == "0192b6e3-7c1a-7d3e-9f00-123456789abc"
    assert pageview["event_name"] == "$pageview"
    assert pageview["user_id"] == "user-42"
    assert pageview["timestamp"] == ms("2026-11-27T10:00:00.500+00:00")
    assert pageview["sent_at"] == ms("2026-11-27T10:00:09+00:00")
    assert pageview["properties"] == {
        "$current_url": "https://example.test/",
        "url": "/",
        "$lib": "posthog-python",
        "$type": "capture",
        "$library": "posthog-python",
    }
    assert set_event["event_id"] == str(uuid.uuid5(CAPTURE_ID_NAMESPACE, "acme/not-a-uuid-1"))
    assert set_event["properties"] == {"$set": {"email": "ada@example.test"}}
    assert clicked["user_id"] == "anon-3"  # from properties.distinct_id
    assert clicked["timestamp"] == RECEIVED_MS - 1500  # offset before the time received
    assert clicked["properties"] == {"distinct_id": "anon-3", "button": "buy"}  # token dropped
    assert "must-not-be-stored" not in json.dumps([pageview, set_event, clicked])


def test_posthog_js_array_body_and_its_key_in_properties() -> None:
    body = load("posthog_js_events_array.json")
    msgs = posthog_format.messages(body, "e")
    assert isinstance(msgs, list) and len(msgs) == 2
    assert posthog_format.body_key(body, msgs) == "must-not-be-stored"
    pageview, signup = posthog_docs("posthog_js_events_array.json")
    assert pageview["user_id"] == "0192b6e3-0000-7000-8000-000000000001"
    assert signup["properties"]["$set"] == {"email": "ada@example.test"}
    assert "token" not in signup["properties"]


def test_posthog_sent_at_falls_back_to_the_underscore_query_parameter() -> None:
    assert posthog_format.batch_sent_at([{}], "1795000000999") == 1_795_000_000_999
    assert posthog_format.batch_sent_at([{}], "") is None


def test_posthog_events_without_name_or_distinct_id_are_rejected() -> None:
    no_name = posthog_format.map_message({"distinct_id": "u"}, 0, CTX)
    assert isinstance(no_name, EventRejected) and "event" in no_name.message
    no_user = posthog_format.map_message({"event": "x", "properties": {}}, 1, CTX)
    assert isinstance(no_user, EventRejected) and "distinct_id" in no_user.message
    assert posthog_format.messages("text", "e") == "body must be a JSON object or array"
