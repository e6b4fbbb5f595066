"""The wire-format mapping (README "Capture endpoint (HTTP)"), field by field, and that what
it produces is an event the router's contract parser accepts."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest

from analytics_core.event_contract import Origin, ValidEvent, hash_api_key, parse_message
from capture import posthog_format, segment_format
from capture.body import BodyProblem
from capture.chunks import pack
from capture.mapping import (
    CAPTURE_ID_NAMESPACE,
    EventRejected,
    MapContext,
    Parsed,
    event_id,
    map_all,
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


def parsed(fmt: Any, body: object, kind: str = "batch") -> Parsed[Any]:
    out = fmt.parse(body if isinstance(body, bytes) else json.dumps(body).encode(), kind)
    assert isinstance(out, Parsed), out
    return out


@dataclass(frozen=True)
class MappedEvent:
    """One event as it goes to Kafka: its position in the request and its JSON bytes."""

    index: int
    encoded: bytes


EventOutcome = MappedEvent | EventRejected


def outcomes(
    fmt: Any, body: object, ctx: MapContext = CTX, kind: str = "batch"
) -> list[EventOutcome]:
    """Every message of a body, mapped or rejected, in request order (what the handler does:
    parse, map, pack into Kafka messages)."""
    p = parsed(fmt, body, kind)
    mapped, rejected = map_all(p.items, fmt.map_item, ctx)
    messages, too_large = pack(mapped, ctx.max_event_bytes)
    sent = {eid for m in messages for eid in m.event_ids}
    found: list[EventOutcome] = [*rejected, *p.rejected, *too_large]
    for index, event in zip(mapped.indices, mapped.events, strict=True):
        if event.event_id in sent:
            found.append(MappedEvent(index, msgspec.json.encode(event)))
    return sorted(found, key=lambda o: o.index)


def segment_one(msg: object, ctx: MapContext = CTX) -> EventOutcome:
    return outcomes(segment_format, {"batch": [msg]}, ctx)[0]


def posthog_one(msg: object, ctx: MapContext = CTX) -> EventOutcome:
    return outcomes(posthog_format, {"batch": [msg]}, ctx)[0]


def mapped(outcome: object) -> dict[str, Any]:
    assert isinstance(outcome, MappedEvent), outcome
    doc: dict[str, Any] = orjson.loads(outcome.encoded)
    # The router reads exactly these bytes: they must be a valid contract v1 event.
    verdicts = parse_message(b"[" + outcome.encoded + b"]", Origin("t", 0, 0))
    assert isinstance(verdicts[0], ValidEvent), verdicts
    return doc


def segment_docs(ctx: MapContext = CTX) -> list[dict[str, Any]]:
    body = load("segment_batch_every_type.json")
    sent = parsed(segment_format, body).sent_at
    ctx = MapContext(ctx.client_id, ctx.key_hash, ctx.received_ms, ms(str(sent)), 256 * 1024)
    return [mapped(o) for o in outcomes(segment_format, body, ctx)]


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

    def id_of(m: dict[str, Any]) -> str:
        return event_id("acme", None, json.dumps(m).encode())

    first = id_of(msg)
    assert first == id_of(dict(msg))
    assert first == id_of(dict(reversed(msg.items())))  # the same fields in another order
    assert first != id_of(dict(msg, event="y"))
    uuid.UUID(first)
    assert mapped(segment_one(msg))["event_id"] == first  # what the mapper derives


def test_missing_timestamp_is_the_time_received_and_sent_at_is_optional() -> None:
    out = mapped(segment_one({"type": "track", "event": "e", "anonymousId": "a"}))
    assert out["timestamp"] == RECEIVED_MS
    assert "sent_at" not in out


def test_without_timestamp_the_original_timestamp_corrected_by_the_send_time() -> None:
    """RudderStack's SDKs send `originalTimestamp` (the device's clock) and no `timestamp`:
    the event time is received - (sentAt - originalTimestamp), as Segment and RudderStack
    compute it, so a device clock that is off does not move the event."""
    original = "2026-11-27T10:00:00.000Z"
    sent = "2026-11-27T10:05:00.000Z"  # sent 5 minutes after, by the same (wrong) clock
    msg = {"type": "track", "event": "e", "userId": "u", "originalTimestamp": original}
    out = mapped(segment_one(dict(msg, sentAt=sent)))
    assert out["timestamp"] == RECEIVED_MS - 5 * 60_000
    assert json.loads(json.dumps(out["properties"]))["$originalTimestamp"] == original
    # The batch's sentAt stands in for the message's.
    body = {"batch": [msg], "sentAt": sent}
    ctx = MapContext("acme", KEY_HASH, RECEIVED_MS, ms(sent), 256 * 1024)
    assert mapped(outcomes(segment_format, body, ctx)[0])["timestamp"] == RECEIVED_MS - 300_000
    # No send time: the device's time as is; epoch ms too.
    assert mapped(segment_one(msg))["timestamp"] == ms("2026-11-27T10:00:00+00:00")
    epoch = dict(msg, originalTimestamp=1_795_000_000_123)
    assert mapped(segment_one(epoch))["timestamp"] == 1_795_000_000_123
    # An explicit timestamp wins; an unreadable or out-of-range original is the time received
    # (the field is optional: the event is kept).
    explicit = dict(msg, timestamp="2026-11-27T09:00:00Z", sentAt=sent)
    assert mapped(segment_one(explicit))["timestamp"] == ms("2026-11-27T09:00:00+00:00")
    for bad in ("garbage", "", None, True, {"a": 1}, "9999-01-01T00:00:00Z"):
        out = mapped(segment_one(dict(msg, originalTimestamp=bad)))
        assert out["timestamp"] == RECEIVED_MS, bad
    # A correction that would land before 1970 is out of range too.
    far = dict(msg, originalTimestamp="1970-01-01T00:00:00Z", sentAt="2200-01-01T00:00:00Z")
    assert mapped(segment_one(far))["timestamp"] == RECEIVED_MS


def test_a_timestamp_without_zone_is_utc_and_numbers_are_epoch_ms() -> None:
    naive = {"type": "track", "event": "e", "userId": "u", "timestamp": "2026-11-27T10:00:00"}
    assert mapped(segment_one(naive))["timestamp"] == ms("2026-11-27T10:00:00+00:00")
    epoch = dict(naive, timestamp=1_795_000_000_123)
    assert mapped(segment_one(epoch))["timestamp"] == 1_795_000_000_123


def test_numeric_user_ids_are_strings() -> None:
    out = mapped(segment_one({"type": "track", "event": "e", "userId": 42}))
    assert out["user_id"] == "42"


def test_one_bad_event_is_rejected_with_its_index_and_reason_the_others_map() -> None:
    body = load("segment_batch_one_bad_event.json")
    found = outcomes(segment_format, body)
    good = [o for o in found if isinstance(o, MappedEvent)]
    bad = {o.index: o.message for o in found if isinstance(o, EventRejected)}
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
    # An event that claims another client is refused by index, never stored anywhere.
    forged = segment_one(msg)
    assert isinstance(forged, EventRejected) and forged.code == "wrong_client"
    assert "victim" in forged.message and "acme" in forged.message
    # Its own client id is no claim to refuse; keys and tokens in the body are never kept.
    out = mapped(segment_one({**msg, "client_id": "acme"}))
    assert out["client_id"] == "acme" and out["api_key_hash"] == KEY_HASH
    assert "victim" not in json.dumps(out)
    posthog = {"event": "e", "distinct_id": "u", "api_key": "k", "client_id": "victim"}
    refused = posthog_one(posthog)
    assert isinstance(refused, EventRejected) and refused.code == "wrong_client"


def test_every_write_key_in_a_body_must_agree() -> None:
    one = {"type": "track", "event": "e", "userId": "u"}
    mixed = segment_format.parse(
        json.dumps({"writeKey": "a", "batch": [{**one, "writeKey": "b"}]}).encode(), "batch"
    )
    assert isinstance(mixed, Parsed) and mixed.key_problem is not None
    same = segment_format.parse(
        json.dumps({"writeKey": "a", "batch": [{**one, "writeKey": "a"}]}).encode(), "batch"
    )
    assert isinstance(same, Parsed) and same.key == "a" and same.key_problem is None
    ph = {"event": "e", "distinct_id": "u", "token": "b"}
    both = posthog_format.parse(json.dumps({"api_key": "a", "batch": [ph]}).encode(), "batch", "")
    assert isinstance(both, Parsed) and both.key_problem is not None
    in_props = {"event": "e", "distinct_id": "u", "api_key": "a", "properties": {"token": "b"}}
    props = posthog_format.parse(json.dumps(in_props).encode(), "capture", "")
    assert isinstance(props, Parsed) and props.key_problem is not None


def test_contract_limits_reject_the_event_with_the_contracts_reason() -> None:
    long_user = {"type": "track", "event": "e", "userId": "u" * 201}
    filler = {"type": "track", "event": "e", "userId": "u"}
    out = outcomes(segment_format, {"batch": [filler, filler, filler, long_user]})[3]
    assert isinstance(out, EventRejected) and out.index == 3 and "user_id" in out.message
    too_old = {"type": "track", "event": "e", "userId": "u", "timestamp": "1969-01-01T00:00:00Z"}
    assert isinstance(segment_one(too_old), EventRejected)
    deep: Any = {}
    for _ in range(300):  # deeper than the contract (and the encoder) allows
        deep = {"d": deep}
    nested = {"type": "track", "event": "e", "userId": "u", "properties": deep}
    assert isinstance(segment_one(nested), EventRejected)


def test_the_contract_is_checked_while_mapping_keeping_the_valid_events() -> None:
    msgs = [
        {"type": "track", "event": "ok", "userId": "u"},
        {"type": "track", "event": "x" * 201, "userId": "u"},
        {"type": "track", "event": "ok2", "userId": "u"},
    ]
    found = outcomes(segment_format, {"batch": msgs})
    assert [o.index for o in found if isinstance(o, MappedEvent)] == [0, 2]
    refused = [o for o in found if isinstance(o, EventRejected)]
    assert [(r.index, r.code) for r in refused] == [(1, "invalid_event")]
    assert "event_name" in refused[0].message


def test_an_event_over_the_size_limit_is_rejected() -> None:
    small = MapContext("acme", KEY_HASH, RECEIVED_MS, None, 1024)
    big = {"type": "track", "event": "e", "userId": "u", "properties": {"x": "y" * 2000}}
    out = segment_one(big, small)
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
    out = segment_format.parse(json.dumps(body).encode(), kind)
    assert isinstance(out, BodyProblem) and out.status == 400 and problem in out.message


def test_single_message_paths_imply_the_type() -> None:
    identify = outcomes(segment_format, {"userId": "u", "traits": {"a": 1}}, kind="identify")
    assert mapped(identify[0])["event_name"] == "$identify"
    short = parsed(segment_format, {"userId": "u", "event": "e", "type": "page"}, "t")
    assert short.items[0].msg.type == "track"  # the path wins over the body


def test_segment_write_key_from_the_body() -> None:
    track = {"type": "track", "event": "e", "userId": "u"}
    assert parsed(segment_format, {"writeKey": "k", "batch": [track]}).key == "k"
    assert parsed(segment_format, {"batch": [dict(track, writeKey="k2")]}).key == "k2"
    both = parsed(segment_format, {"batch": [dict(track, writeKey="a"), dict(track, writeKey="b")]})
    assert both.key is None and both.key_problem is not None


def posthog_docs(name: str) -> list[dict[str, Any]]:
    body = load(name)
    sent = parsed(posthog_format, body).sent_at
    ctx = MapContext("acme", KEY_HASH, RECEIVED_MS, ms(str(sent)) if sent else None, 256 * 1024)
    return [mapped(o) for o in outcomes(posthog_format, body, ctx)]


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
    p = parsed(posthog_format, body, "e")
    assert len(p.items) == 2
    assert p.key == "must-not-be-stored"
    pageview, signup = posthog_docs("posthog_js_events_array.json")
    assert pageview["user_id"] == "0192b6e3-0000-7000-8000-000000000001"
    assert signup["properties"]["$set"] == {"email": "ada@example.test"}
    assert "token" not in signup["properties"]


def test_posthog_sent_at_falls_back_to_the_underscore_query_parameter() -> None:
    event = b'[{"event": "e", "distinct_id": "u"}]'
    assert posthog_format.parse(event, "e", "1795000000999").sent_at == 1_795_000_000_999  # type: ignore[union-attr]
    assert posthog_format.parse(event, "e", "").sent_at is None  # type: ignore[union-attr]


def test_posthog_events_without_name_or_distinct_id_are_rejected() -> None:
    no_name = posthog_one({"distinct_id": "u"})
    assert isinstance(no_name, EventRejected) and "event" in no_name.message
    no_user = outcomes(
        posthog_format, {"batch": [{"event": "x"}, {"event": "x", "properties": {}}]}
    )[1]
    assert isinstance(no_user, EventRejected) and no_user.index == 1
    assert "distinct_id" in no_user.message
    text = posthog_format.parse(b'"text"', "e")
    assert isinstance(text, BodyProblem) and text.message == "body must be a JSON object or array"


def test_rfc3339_times_map_to_the_millisecond_and_a_leap_second_is_read() -> None:
    """Fractions are truncated to the millisecond, as the router reads them; a leap second
    is the next second's start (it was refused as not ISO 8601). A fraction finer than
    microseconds is rounded to microseconds first by the decoder (README: capture times)."""
    for text, want in (
        ("2026-11-27T10:00:59.999999Z", ms("2026-11-27T10:00:59.999+00:00")),
        ("2038-06-20T09:05:21.898Z", 2_160_637_521_898),
        ("2016-12-31T23:59:60Z", ms("2017-01-01T00:00:00+00:00")),
        ("2016-12-31t23:59:59.5z", ms("2016-12-31T23:59:59.500+00:00")),
    ):
        segment = {"type": "track", "event": "e", "userId": "u", "timestamp": text}
        assert mapped(segment_one(segment))["timestamp"] == want, text
        posthog = {"event": "e", "distinct_id": "u", "api_key": "k", "timestamp": text}
        assert mapped(posthog_one(posthog))["timestamp"] == want, text
