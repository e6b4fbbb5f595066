"""The compiled fast path (native/, `capture_native`) against the Python path it stands in
for: on every body, either it leaves the body to Python (None) or its Kafka message, event
ids and write key are byte for byte the Python path's. And it does map the shapes SDKs
send, or it would be a fast path in name only.

The bodies: the fixtures, SDK-shaped batches, hand-written edge cases (escapes, Unicode,
duplicate keys, every time form, ids, numbers) and thousands of seeded random mutations of
them (field swaps, type changes, byte flips, truncations)."""

from __future__ import annotations

import json
import random
import uuid
from pathlib import Path
from typing import Any

import pytest

from analytics_core.event_contract import MAX_BATCH_EVENTS, MAX_MESSAGE_BYTES, hash_api_key
from analytics_core.settings import SettingsError
from capture import segment_format
from capture.body import BodyProblem, decode_body
from capture.chunks import pack
from capture.config import CaptureSettings
from capture.handler import _request_sent_ms
from capture.mapping import MapContext, Parsed, map_all
from capture.native_path import NativeBatchMapper, load_native

try:
    import capture_native
except ImportError:  # pragma: no cover - bin/setup builds it; the test says how
    capture_native = None

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "capture"
CLIENT = "acme"
KEY_HASH = hash_api_key("key-acme")
RECEIVED_MS = 1_795_000_000_000
MAX_EVENT_BYTES = 256 * 1024
Result = tuple[bytes, list[str], str | None]


def native_mapper() -> NativeBatchMapper:
    assert capture_native is not None, (
        "the capture_native extension is not installed: bin/setup builds it from native/ "
        "with a Rust toolchain (https://rustup.rs); or run `.venv/bin/pip install ./native`"
    )
    mapper = load_native("required", MAX_EVENT_BYTES)
    assert mapper is not None
    return mapper


def python_path(body: bytes) -> Result | None:
    """What the Python path sends for `body` when it is one clean Kafka message (every
    event valid, nothing too large); None for any other outcome."""
    parsed = segment_format.parse(body, "batch")
    if not isinstance(parsed, Parsed) or parsed.key_problem is not None or parsed.rejected:
        return None
    ctx = MapContext(
        CLIENT, KEY_HASH, RECEIVED_MS, _request_sent_ms(parsed.sent_at), MAX_EVENT_BYTES
    )
    mapped, rejected = map_all(parsed.items, segment_format.map_item, ctx)
    if rejected:
        return None
    messages, too_large = pack(mapped, MAX_EVENT_BYTES)
    if too_large or len(messages) != 1:
        return None
    return messages[0].value, messages[0].event_ids, parsed.key


def native_path(body: bytes) -> Result | None:
    fast = native_mapper().map(body, CLIENT, KEY_HASH, RECEIVED_MS)
    return None if fast is None else (fast.value, fast.event_ids, fast.write_key)


def agree(sent: bytes) -> Result | None:
    """The compiled path's answer, after checking it is the Python path's, for a body as
    the handler hands it to both: decoded (valid UTF-8, lone surrogates repaired)."""
    decoded = decode_body(
        sent,
        content_type="application/json",
        content_encoding="",
        compression="",
        max_decoded_bytes=10 * 2**20,
    )
    if isinstance(decoded, BodyProblem):
        return None  # answered before either path sees it
    fast = native_path(decoded.data)
    if fast is not None:
        assert fast == python_path(decoded.data), decoded.data
    return fast


def batch(*messages: object, **top: object) -> bytes:
    return json.dumps({"batch": list(messages), **top}).encode()


def track(**fields: object) -> dict[str, Any]:
    return {"type": "track", "event": "Signed Up", "userId": "u-1", "messageId": "m-1", **fields}


def python_sdk_event(i: int) -> dict[str, Any]:
    """As segment-analytics-python / rudder-sdk-python send it."""
    return {
        "type": "track",
        "event": "Order Completed",
        "userId": f"user-{i}",
        "properties": {"revenue": 12.5, "i": i, "items": [{"sku": "a", "qty": 1}]},
        "context": {"library": {"name": "analytics-python", "version": "2.3.3"}},
        "integrations": {},
        "timestamp": f"2026-11-27T10:00:{i % 60:02d}.{i * 7919 % 1_000_000:06d}+00:00",
        "messageId": str(uuid.UUID(int=i * 2**64 + 12345, version=4)),
        "anonymousId": None,
        "channel": "server",
        "originalTimestamp": "2026-11-27T10:00:00.000000+00:00",
    }


def browser_sdk_event(i: int) -> dict[str, Any]:
    """As analytics.js (analytics-next) sends it."""
    return {
        "type": ["track", "page", "identify", "screen", "group", "alias"][i % 6],
        "event": "Clicked",
        "anonymousId": f"{uuid.UUID(int=i, version=4)}",
        "userId": f"u{i}" if i % 2 else None,
        "properties": {"path": "/pricing", "title": "Pricing \u2013 Plans", "n": i},
        "context": {"page": {"url": "https://example.test/pricing"}, "locale": "fr-FR"},
        "traits": {"plan": "pro"} if i % 3 == 0 else None,
        "messageId": f"ajs-next-{i:032x}",
        "timestamp": "2026-11-27T10:00:01.123Z",
        "sentAt": "2026-11-27T10:00:02.000Z",
        "_metadata": {"bundled": ["Segment.io"], "unbundled": []},
    }


SDK_BODIES = [
    batch(*[python_sdk_event(i) for i in range(50)], sentAt="2026-11-27T10:01:00.5+00:00"),
    batch(*[browser_sdk_event(i) for i in range(12)], writeKey="key-acme"),
    batch(*[python_sdk_event(i) for i in range(1)]),
    (FIXTURES / "segment_batch_every_type.json")
    .read_bytes()
    .replace(b'"writeKey": "must-not-be-stored"', b'"writeKey": "key-acme"'),
]

EDGE_MESSAGES: list[object] = [
    track(),
    track(event="Commande passée ✓ 𝄞"),
    track(event="tab\there"),
    track(event="line\u2028sep \x7f"),
    track(event='quote"d'),
    track(event="a/b", userId="x\\y"),
    track(event=""),
    track(event="e" * 200),
    track(event="é" * 200),
    track(event="é" * 201),
    track(event=None),
    track(event=5),
    track(type="page", event=5),
    track(type="Track"),
    track(type=None),
    track(type="alias", previousId="p"),
    {"event": "no type", "userId": "u", "messageId": "m"},
    track(userId=""),
    track(userId="", anonymousId=""),
    track(userId=None, anonymousId="a"),
    track(userId=42),
    track(userId=4.5),
    track(userId=True),
    track(anonymousId="a-1"),
    track(anonymousId=7),
    track(userId="u" * 201),
    track(userId=None, anonymousId="a" * 201),
    track(messageId="9F1C2D3E-4B5A-4C6D-8E7F-0A1B2C3D4E5F"),
    track(messageId="9f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5"),
    track(messageId="9f1c2d3e_4b5a-4c6d-8e7f-0a1b2c3d4e5f"),
    track(messageId="ünïcode-id"),
    track(messageId="m" * 200),
    track(messageId="m" * 201),
    track(messageId=""),
    track(messageId=None),
    track(messageId=12345),
    track(messageId=True),
    {k: v for k, v in track().items() if k != "messageId"},
    track(timestamp="2026-11-27T10:00:00Z"),
    track(timestamp="2026-11-27T10:00:00.1Z"),
    track(timestamp="2026-11-27T10:00:00.123456789Z"),
    track(timestamp="2026-11-27T10:00:00.999999+05:30"),
    track(timestamp="2026-11-27T10:00:00-00:00"),
    track(timestamp="2026-11-27T10:00:00+23:59"),
    track(timestamp="2026-11-27T10:00:00+24:00"),
    track(timestamp="2026-11-27T10:00:00+05:60"),
    track(timestamp="2026-11-27t10:00:00z"),
    track(timestamp="2016-12-31T23:59:60Z"),
    track(timestamp="2024-02-29T00:00:00Z"),
    track(timestamp="2023-02-29T00:00:00Z"),
    track(timestamp="2026-11-27T10:00:00"),
    track(timestamp="2026-11-27 10:00:00Z"),
    track(timestamp="1969-12-31T23:59:59.999Z"),
    track(timestamp="2299-12-31T23:59:59.999Z"),
    track(timestamp="2300-01-01T00:00:00Z"),
    track(timestamp="0001-01-01T00:00:00Z"),
    track(timestamp="garbage"),
    track(timestamp=""),
    track(timestamp=None),
    track(timestamp=1_795_000_000_123),
    track(timestamp=-1),
    track(timestamp=0),
    track(timestamp=1.5e12),
    track(timestamp=10**20),
    track(timestamp=True),
    track(sentAt="2026-11-27T10:00:00.5Z"),
    track(sentAt=None),
    track(sentAt=""),
    track(sentAt=1_795_000_000_000),
    track(sentAt="2400-01-01T00:00:00Z"),
    track(properties=None),
    track(properties=[]),
    track(properties="x"),
    track(properties={}),
    track(properties={"$context": 1}, context={"c": 2}),
    track(properties={"a": {"b": [1, 2, {"c": None}]}, "z": -0.0, "big": 10**30}),
    track(properties={"e": 1e400}),
    track(context=None, traits=[], integrations="x", name=None, category=1),
    track(groupId="g", previousId="p", channel="web", originalTimestamp="t"),
    track(userId="u", anonymousId="a"),
    track(userId="u", anonymousId="a", properties={"$anonymousId": "old"}),
    track(rudderId="r-1", extra={"x": 1}),
    track(**{"$lib": "x", "lib": "y"}),
    track(**{"$foo": 1, "foo": 2}),
    track(properties={"$foo": 0}, foo=2),
    track(client_id="acme"),
    track(client_id="other"),
    track(writeKey="key-acme"),
    track(writeKey="other-key"),
    track(writeKey=5),
    track(write_key="x", api_key="y", token="z"),
    track(properties={"deep": json.loads("[" * 60 + "]" * 60)}),
    track(properties={"deeper": json.loads("[" * 70 + "]" * 70)}),
    5,
    "text",
    None,
    [],
]

RAW_BODIES = [
    b'{"batch":[{"type":"track","event":"e","userId":"u","messageId":"m","properties":{"a":1,"a":2,"b":3}}]}',
    b'{"batch":[{"type":"track","event":"e","event":"f","userId":"u","messageId":"m"}]}',
    b'{"batch":[{"type":"track","event":"e","userId":"u","messageId":"m","x":1,"x":2}]}',
    b'{"batch":[],"batch":[{"type":"track","event":"e","userId":"u","messageId":"m"}]}',
    b' \n{ "batch" : [ { "type" : "track" , "event" : "e" , "userId" : "u" , "messageId" : "m" ,'
    b' "properties" : { "a" : [ 1 , 2 ] , "b" : { } } , "context" : { "x" : "y" } } ] } \r\n',
    b'{"batch":[{"type":"track","event":"e\\u00e9","userId":"u","messageId":"m"}]}',
    b'{"batch":[{"type":"track","event":"e","userId":"u","messageId":"m","properties":{"k\\u0041":1}}]}',
    b'{"batch":[{"type":"track","event":"e","userId":"u","messageId":"m","properties":{"s":"\\ud800"}}]}',
    b'{"batch":[{"type":"track","event":"e","userId":"u","messageId":"m","properties":{"s":"\\ud83d\\ude00"}}]}',
    b'{"batch":[{"type":"track","event":"e","userId":"u","messageId":"m","properties":{"n":01}}]}',
    b'{"batch":[{"type":"track","event":"e","userId":"u","messageId":"m","properties":{"n":1.}}]}',
    b'{"batch":[{"type":"track","event":"e","userId":"u","messageId":"m","properties":{"n":-}}]}',
    b'{"batch":[{"type":"track","event":"e","userId":"u","messageId":"m","properties":{"n":NaN}}]}',
    b'{"batch":[{"type":"track","event":"e","userId":"u","messageId":"m","properties":{"n":1E+2}}]}',
    b'{"batch":[{"type":"track","event":"e","userId":"u","messageId":"m"}]} x',
    b'{"batch":[{"type":"track","event":"e","userId":"u","messageId":"m"}],}',
    b'{"batch":[{"type":"track","event":"e","userId":"u","messageId":"m"},]}',
    b'{"batch":[{"type":"track","event":"e","userId":"u","messageId":"m"}]',
    b'{"batch":[{"type":"track","event":"e\xff","userId":"u","messageId":"m"}]}',
    b'{"batch":[{"type":"track","event":"e\x01","userId":"u","messageId":"m"}]}',
    b'{"batch":[{"type":"track","event":"e","userId":"u","messageId":"m","properties":{"t":tru}}]}',
    b'{"batch":[{"type":"track","event":"e","userId":"u","messageId":"m"}],"sentAt":"2026-11-27T10:00:00Z","other":{"a":[1,{"b":null}]}}',
    b'{"batch":[{"type":"track","event":"e","userId":"u","messageId":"m"}],"sentAt":1795000000000}',
    b'{"batch":[{"type":"track","event":"e","userId":"u","messageId":"m"}],"sentAt":-5}',
    b'{"batch":[{"type":"track","event":"e","userId":"u","messageId":"m"}],"sentAt":1.5}',
    b'{"batch":[{"type":"track","event":"e","userId":"u","messageId":"m"}],"sentAt":"nope"}',
    b'{"batch":[{"type":"track","event":"e","userId":"u","messageId":"m"}],"sentAt":"2400-01-01T00:00:00Z"}',
    b'{"batch":[{"type":"track","event":"e","userId":"u","messageId":"m"}],"sentAt":""}',
    b'{"batch":[{"type":"track","event":"e","userId":"u","messageId":"m"}],"sentAt":null}',
    b'{"batch":[{"type":"track","event":"e","userId":"u","messageId":"m"}],"sentAt":{"a":1}}',
    b'{"batch":[{"type":"track","event":"e","userId":"u","messageId":"m"}],"writeKey":null}',
    b'{"batch":[{"type":"track","event":"e","userId":"u","messageId":"m"}],"writeKey":"a\\/b"}',
    b'{"batch":[{"type":"track","event":"e","userId":"u","messageId":"m","writeKey":""}]}',
    b'{"bat\\u0063h":[{"type":"track","event":"e","userId":"u","messageId":"m"}]}',
    b'{"batch":{"type":"track"}}',
    b'{"batch":[]}',
    b"[]",
    b"",
    b"null",
    # Many properties (past the compiled path's small-map limit), a key repeated after
    # it, and keys the mapping also writes ($context, $anonymousId, $rudderId).
    (
        b'{"batch":[{"type":"track","event":"e","userId":"u","anonymousId":"a",'
        b'"messageId":"m","rudderId":"r","context":{"c":1},"properties":{'
        + b",".join(b'"k%d":%d' % (i, i) for i in range(40))
        + b',"k3":"again","$context":"mine","$anonymousId":0,"k39":[39],"$rudderId":1}}]}'
    ),
]


def mutations(rng: random.Random, count: int) -> list[bytes]:
    """Seeded random variants of the SDK and edge bodies: structural (a field's value
    swapped for another's, a field dropped or duplicated, a type changed) and byte-level
    (a byte flipped, inserted or cut)."""
    values: list[object] = [
        None,
        True,
        0,
        -7,
        3.25,
        1e300,
        "",
        "x",
        "é\u2028",
        "2026-11-27T10:00:00.5Z",
        "9f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f",
        1_795_000_000_000,
        [],
        {},
        {"$context": 1},
        [1, {"a": "b"}],
    ]
    fields = [
        "type",
        "event",
        "messageId",
        "userId",
        "anonymousId",
        "timestamp",
        "sentAt",
        "properties",
        "context",
        "traits",
        "writeKey",
        "name",
        "client_id",
        "$x",
        "y",
    ]
    messages: list[dict[str, Any]] = (
        [m for m in EDGE_MESSAGES if isinstance(m, dict)]
        + [python_sdk_event(i) for i in range(3)]
        + [browser_sdk_event(i) for i in range(6)]
    )
    out: list[bytes] = []
    for _ in range(count):
        picked = [dict(rng.choice(messages)) for _ in range(rng.randint(1, 4))]
        for msg in picked:
            for _ in range(rng.randint(0, 2)):
                field = rng.choice(fields)
                if rng.random() < 0.2:
                    msg.pop(field, None)
                else:
                    msg[field] = rng.choice(values)
        top: dict[str, object] = {}
        if rng.random() < 0.3:
            top["sentAt"] = rng.choice(values)
        if rng.random() < 0.2:
            top["writeKey"] = rng.choice(["key-acme", "other", 3])
        body = json.dumps({"batch": picked, **top}, ensure_ascii=rng.random() < 0.5).encode()
        if rng.random() < 0.3:
            data = bytearray(body)
            at = rng.randrange(len(data))
            action = rng.randrange(3)
            if action == 0:
                data[at] = rng.randrange(256)
            elif action == 1:
                data.insert(at, rng.choice(b'{}[]",:\\ 0e-.\x00\xc3'))
            else:
                del data[at:]
            body = bytes(data)
        out.append(body)
    return out


def test_sdk_batches_take_the_compiled_path_and_match_the_python_path() -> None:
    for body in SDK_BODIES:
        assert agree(body) is not None, body[:200]


def test_edge_cases_are_mapped_exactly_or_left_to_python() -> None:
    mapped = 0
    for msg in EDGE_MESSAGES:
        mapped += agree(batch(msg)) is not None
    for body in RAW_BODIES:
        mapped += agree(body) is not None
    # Plain valid cases do go the compiled way (not everything is left to Python).
    assert mapped >= 50, mapped


def test_seeded_mutations_are_mapped_exactly_or_left_to_python() -> None:
    rng = random.Random(20261202)
    mapped = sum(agree(body) is not None for body in mutations(rng, 20000))
    assert mapped >= 1000, mapped


def test_what_the_compiled_path_maps_and_leaves() -> None:
    one = native_path(batch(track(timestamp="2026-11-27T10:00:00.250+01:00", sentAt=None)))
    assert one is not None
    value, ids, key = one
    assert ids == [str(uuid.uuid5(uuid.UUID("2b7c8f0e-3d7a-4a8e-9f61-5c1e0d9b7a42"), "acme/m-1"))]
    event = json.loads(value)[0]
    assert event["timestamp"] == 1_795_773_600_250 - 3_600_000  # 09:00:00.250Z
    assert event["client_id"] == CLIENT and event["api_key_hash"] == KEY_HASH
    assert key is None
    # Left to Python: an invalid event (the Python path rejects it by index), a batch of
    # more events than one Kafka message takes, a message without an id.
    assert native_path(batch(track(), track(event=""))) is None
    assert (
        native_path(batch(*[track(messageId=f"m{i}") for i in range(MAX_BATCH_EVENTS + 1)])) is None
    )
    assert native_path(batch({"type": "track", "event": "e", "userId": "u"})) is None
    # A time from originalTimestamp alone (RudderStack's SDKs) is corrected by the send
    # time in Python (capture.mapping.device_time_ms).
    original = track(originalTimestamp="2026-11-27T10:00:00Z", sentAt="2026-11-27T10:00:01Z")
    assert native_path(batch(original)) is None
    assert native_path(batch(dict(original, timestamp="2026-11-27T10:00:00Z"))) is not None
    big = "x" * (MAX_EVENT_BYTES // 2)
    assert native_path(batch(*[track(messageId=f"m{i}", p=big) for i in range(3)])) is None
    assert MAX_EVENT_BYTES < MAX_MESSAGE_BYTES


def test_capture_native_setting() -> None:
    assert CaptureSettings.from_env({}).native == "auto"
    assert CaptureSettings.from_env({"CAPTURE_NATIVE": "OFF"}).native == "off"
    with pytest.raises(
        SettingsError, match="CAPTURE_NATIVE='fast': use one of auto, off, required"
    ):
        CaptureSettings.from_env({"CAPTURE_NATIVE": "fast"})
    assert load_native("off", MAX_EVENT_BYTES) is None
    assert load_native("auto", MAX_EVENT_BYTES) is not None
