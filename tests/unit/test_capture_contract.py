"""Every event the capture service emits is one the router's contract parser accepts, with
the same values: capture validates while mapping (no re-parse on the hot path), so this
is where the two are kept in step. Property-based, over SDK-shaped and hostile messages of
both wire formats, decoded on the typed path and on the field-by-field path."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from analytics_core.event_contract import (
    MAX_NESTING_DEPTH,
    MAX_TEXT,
    Origin,
    ValidEvent,
    hash_api_key,
    parse_message,
)
from capture import posthog_format, segment_format
from capture.body import BodyProblem
from capture.chunks import pack
from capture.mapping import MAX_SENT_DEPTH, EventRejected, MapContext, map_all

set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "analytics-pipeline-hypothesis")
PROFILE = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
CTX = MapContext("acme", hash_api_key("k-acme"), 1_795_000_000_000, None, 256 * 1024)
ORIGIN = Origin("shared_raw_events", 0, 7)

json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)
texts = st.one_of(
    st.text(max_size=8),
    st.sampled_from(["", "x" * MAX_TEXT, "x" * (MAX_TEXT + 1), "é" * MAX_TEXT, "\u0660"]),
)
times = st.one_of(
    st.sampled_from(
        [
            "2026-11-27T10:00:00.250Z",
            "2026-11-27T10:00:00",
            "2026-11-27 10:00:00+02:00",
            "1969-12-31T23:59:59Z",
            "2300-01-01T00:00:00Z",
            "not a time",
            "",
        ]
    ),
    st.integers(min_value=-5, max_value=10_413_792_000_005),
    st.floats(allow_nan=False, allow_infinity=False),
    json_value,
)
ids = st.one_of(
    st.uuids().map(str),
    st.uuids().map(lambda u: str(u).upper()),
    st.text(max_size=10),
    st.sampled_from(["x" * 200, "x" * 201]),
    st.integers(),
    json_value,
)


def fields(names: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Messages with any subset of the given fields, plus unknown ones now and then."""
    return st.fixed_dictionaries(
        {},
        optional={**names, "unknown": json_value, "$custom": json_value},
    )


segment_messages = fields(
    {
        "type": st.sampled_from(["track", "page", "screen", "identify", "group", "alias", "x"])
        | json_value,
        "event": texts | json_value,
        "messageId": ids,
        "userId": texts | st.integers() | json_value,
        "anonymousId": texts | json_value,
        "timestamp": times,
        "sentAt": times,
        "properties": st.dictionaries(st.text(max_size=6), json_value, max_size=4) | json_value,
        "context": json_value,
        "traits": json_value,
        "name": json_value,
        "writeKey": st.text(max_size=5),
    }
)
posthog_messages = fields(
    {
        "event": texts | json_value,
        "distinct_id": texts | st.integers() | json_value,
        "uuid": ids,
        "timestamp": times,
        "offset": st.integers(min_value=-10, max_value=2_000_000_000_000) | json_value,
        "properties": st.dictionaries(
            st.sampled_from(["distinct_id", "token", "api_key", "$lib", "url"])
            | st.text(max_size=4),
            json_value,
            max_size=4,
        )
        | json_value,
        "type": json_value,
        "$set": json_value,
    }
)


def emitted(fmt: Any, body: bytes) -> tuple[list[bytes], list[EventRejected], int]:
    """The Kafka message values capture would produce for a body, its rejections, and how
    many messages the body held."""
    parsed = fmt.parse(body, "batch")
    assert not isinstance(parsed, BodyProblem), parsed
    mapped, rejected = map_all(parsed.items, fmt.map_item, CTX)
    messages, too_large = pack(mapped, CTX.max_event_bytes)
    total = len(parsed.items) + len(parsed.rejected)
    return [m.value for m in messages], [*rejected, *parsed.rejected, *too_large], total


def assert_router_accepts(values: list[bytes]) -> int:
    """Every event of every message is valid by the contract, as capture wrote it."""
    count = 0
    for value in values:
        verdicts = parse_message(value, ORIGIN)
        written = msgspec.json.decode(value)
        assert len(verdicts) == len(written)
        for verdict, doc in zip(verdicts, written, strict=True):
            assert isinstance(verdict, ValidEvent), (verdict, doc)
            assert verdict.client_id == "acme" and verdict.credential_hash == CTX.key_hash
            assert verdict.event_id == doc["event_id"] and not verdict.event_id_derived
            assert verdict.event_name == doc["event_name"]
            assert verdict.user_id == doc.get("user_id", doc.get("anonymous_id"))
            assert verdict.timestamp_ms == doc["timestamp"]
            assert verdict.sent_at_ms == doc.get("sent_at")
            assert json.loads(verdict.properties) == doc["properties"]
            count += 1
    return count


@PROFILE
@given(st.lists(segment_messages, min_size=1, max_size=6), st.none() | times)
def test_every_segment_event_capture_emits_is_valid_for_the_router(
    msgs: list[dict[str, Any]], sent_at: object
) -> None:
    body = json.dumps({"batch": msgs, "sentAt": sent_at}).encode()
    values, rejected, total = emitted(segment_format, body)
    assert assert_router_accepts(values) + len(rejected) == total  # every message has a fate


@PROFILE
@given(st.lists(posthog_messages, min_size=1, max_size=6))
def test_every_posthog_event_capture_emits_is_valid_for_the_router(
    msgs: list[dict[str, Any]],
) -> None:
    values, rejected, total = emitted(posthog_format, json.dumps(msgs).encode())
    assert assert_router_accepts(values) + len(rejected) == total


def nested(depth: int) -> Any:
    """A value `depth` levels of objects deep."""
    value: Any = 1
    for _ in range(depth):
        value = {"d": value}
    return value


def test_nesting_at_the_limit_is_accepted_by_both_and_beyond_it_refused_by_capture() -> None:
    # A message counts as one level, its properties object as another.
    at_limit = {
        "type": "track",
        "event": "e",
        "userId": "u",
        "properties": nested(MAX_SENT_DEPTH - 1),
    }
    values, rejected, _ = emitted(segment_format, json.dumps({"batch": [at_limit]}).encode())
    assert rejected == [] and assert_router_accepts(values) == 1
    # The deepest a top-level field may be: it moves two levels down, into properties and
    # the batch array, and still fits the contract's limit.
    context = {"type": "track", "event": "e", "userId": "u", "context": nested(MAX_SENT_DEPTH - 1)}
    values, rejected, _ = emitted(segment_format, json.dumps({"batch": [context]}).encode())
    assert rejected == [] and assert_router_accepts(values) == 1
    assert MAX_SENT_DEPTH + 2 == MAX_NESTING_DEPTH
    deeper = dict(at_limit, properties=nested(MAX_SENT_DEPTH))
    good = {"type": "track", "event": "fine", "userId": "u"}
    values, rejected, _ = emitted(segment_format, json.dumps({"batch": [deeper, good]}).encode())
    assert [(r.index, r.code) for r in rejected] == [(0, "invalid_event")]
    assert "nest" in rejected[0].message
    assert assert_router_accepts(values) == 1


def test_the_typed_and_the_field_by_field_paths_map_a_message_the_same() -> None:
    msg = {
        "type": "track",
        "event": "Order Completed",
        "messageId": "m-1",
        "userId": "u-1",
        "timestamp": "2026-11-27T10:00:00.250Z",
        "properties": {"revenue": 12.5},
        "context": {"ip": "203.0.113.9"},
    }
    typed, _, _ = emitted(segment_format, json.dumps({"batch": [msg]}).encode())
    loose, _, _ = emitted(segment_format, json.dumps({"batch": [dict(msg, extra=1)]}).encode())
    [typed_event] = msgspec.json.decode(typed[0])
    [loose_event] = msgspec.json.decode(loose[0])
    assert loose_event.pop("properties").pop("$extra") == 1  # an unknown field is kept too
    typed_event.pop("properties")
    assert typed_event == loose_event


def test_property_values_pass_through_byte_for_byte() -> None:
    body = (
        b'{"batch": [{"type": "track", "event": "e", "userId": "u", "properties": '
        b'{"big": 123456789012345678901234567890, "f": 1.0e2, "s": "caf\\u00e9 \\"q\\"", '
        b'"n": [1, {"a": null}]}, "context": {"x": -0.0}}]}'
    )
    values, rejected, _ = emitted(segment_format, body)
    assert rejected == []
    assert b'"big":123456789012345678901234567890' in values[0]
    assert b'"f":1.0e2' in values[0]
    assert b'"s":"caf\\u00e9 \\"q\\""' in values[0]
    assert b'"$context":{"x": -0.0}' in values[0]
    assert assert_router_accepts(values) == 1
