"""Event contract v1: each fixture file names the case it proves."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import orjson
import pytest

from analytics_core.event_contract import (
    MAX_BATCH_EVENTS,
    MAX_MESSAGE_BYTES,
    ContractViolation,
    Origin,
    ValidEvent,
    derive_event_id,
    hash_api_key,
    parse_message,
)
from analytics_core.reasons import Reason

FIXTURES = Path(__file__).parent.parent / "fixtures" / "contract"
SCHEMA = json.loads(
    (Path(__file__).parents[2] / "analytics_core" / "contract" / "event-v1.schema.json").read_text()
)
ORIGIN = Origin("shared_raw_events", 3, 42)


def load(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def test_valid_single_event_is_parsed_with_its_fields() -> None:
    [ev] = parse_message(load("valid_single_event.json"), ORIGIN)
    assert isinstance(ev, ValidEvent)
    assert ev.client_id == "acme"
    assert ev.event_id == "2b1f6a0e-4c2d-4b8e-9f00-0a1b2c3d4e5f"
    assert not ev.event_id_derived
    assert ev.credential_hash == hash_api_key("k-acme")
    assert ev.timestamp_ms == 1795773600123
    assert ev.properties == b'{"url": "/pricing", "n": 1}'  # the producer's text, unchanged


def test_batch_uses_aliases_prehashed_key_and_derives_stable_ids() -> None:
    first, second = parse_message(load("valid_batch_of_two.json"), ORIGIN)
    assert isinstance(first, ValidEvent) and isinstance(second, ValidEvent)
    assert first.event_name == "signup" and first.user_id == "anon-9"
    assert first.event_id_derived and first.event_id == derive_event_id(ORIGIN, 0)
    assert second.event_id == derive_event_id(ORIGIN, 1) != first.event_id
    assert second.credential_hash.startswith("0d8f3c")
    assert second.timestamp_ms == 1795770001000  # +01:00 offset honoured
    # A replay of the same message derives the same ids.
    again = parse_message(load("valid_batch_of_two.json"), ORIGIN)
    assert [e.event_id for e in again if isinstance(e, ValidEvent)] == [
        first.event_id,
        second.event_id,
    ]


def test_batch_with_one_bad_event_keeps_the_good_one() -> None:
    good, bad = parse_message(load("batch_with_one_bad_event.json"), ORIGIN)
    assert isinstance(good, ValidEvent)
    assert isinstance(bad, ContractViolation)
    assert bad.reason is Reason.SCHEMA_VIOLATION and bad.batch_index == 1
    assert "user_id" in bad.detail and bad.client_id == "acme"


@pytest.mark.parametrize(
    ("fixture", "reason", "detail_part"),
    [
        ("missing_credential.json", Reason.SCHEMA_VIOLATION, "credential"),
        ("wrong_types.json", Reason.SCHEMA_VIOLATION, "event_name"),
        ("timestamp_without_zone.json", Reason.SCHEMA_VIOLATION, "time zone"),
        ("sql_looking_client_id.json", Reason.SCHEMA_VIOLATION, "client_id"),
        ("event_id_not_uuid.json", Reason.SCHEMA_VIOLATION, "UUID"),
        ("truncated_json.json", Reason.INVALID_JSON, "not JSON"),
        ("invalid_utf8.json", Reason.INVALID_ENCODING, "UTF-8"),
        ("json_scalar.json", Reason.SCHEMA_VIOLATION, "object or array"),
        ("empty_batch.json", Reason.SCHEMA_VIOLATION, "empty batch"),
    ],
)
def test_bad_messages_get_a_reason(fixture: str, reason: Reason, detail_part: str) -> None:
    [outcome] = parse_message(load(fixture), ORIGIN)
    assert isinstance(outcome, ContractViolation)
    assert outcome.reason is reason
    assert detail_part in outcome.detail


def test_sql_looking_client_id_is_not_echoed_as_a_client() -> None:
    [outcome] = parse_message(load("sql_looking_client_id.json"), ORIGIN)
    assert isinstance(outcome, ContractViolation) and outcome.client_id is None


def test_empty_and_oversized_messages() -> None:
    assert parse_message(b"", ORIGIN)[0].reason is Reason.INVALID_JSON  # type: ignore[union-attr]
    assert parse_message(None, ORIGIN)[0].reason is Reason.INVALID_JSON  # type: ignore[union-attr]
    big = b'{"x": "' + b"a" * MAX_MESSAGE_BYTES + b'"}'
    [outcome] = parse_message(big, ORIGIN)
    assert isinstance(outcome, ContractViolation) and outcome.reason is Reason.PAYLOAD_TOO_LARGE


def test_batch_over_the_limit_is_too_large() -> None:
    event = json.loads(load("valid_single_event.json"))
    raw = orjson.dumps([event] * (MAX_BATCH_EVENTS + 1))
    [outcome] = parse_message(raw, ORIGIN)
    assert isinstance(outcome, ContractViolation) and outcome.reason is Reason.PAYLOAD_TOO_LARGE


def test_deep_nesting_is_rejected_not_crashing() -> None:
    raw = b'{"properties": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    [outcome] = parse_message(raw, ORIGIN)
    assert isinstance(outcome, ContractViolation) and outcome.reason is Reason.INVALID_JSON


def test_timestamp_out_of_range() -> None:
    event = json.loads(load("valid_single_event.json"))
    event["timestamp"] = -1
    [outcome] = parse_message(orjson.dumps(event), ORIGIN)
    assert isinstance(outcome, ContractViolation) and "timestamp" in outcome.detail


VALID = ["valid_single_event.json", "valid_batch_of_two.json"]
INVALID_BY_SCHEMA = [
    "batch_with_one_bad_event.json",
    "missing_credential.json",
    "wrong_types.json",
    "sql_looking_client_id.json",
    "event_id_not_uuid.json",
    "json_scalar.json",
    "empty_batch.json",
]


@pytest.mark.parametrize("fixture", VALID)
def test_json_schema_file_accepts_what_the_parser_accepts(fixture: str) -> None:
    jsonschema.validate(json.loads(load(fixture)), SCHEMA)
    assert all(isinstance(o, ValidEvent) for o in parse_message(load(fixture), ORIGIN))


@pytest.mark.parametrize("fixture", INVALID_BY_SCHEMA)
def test_json_schema_file_rejects_what_the_parser_rejects(fixture: str) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(json.loads(load(fixture)), SCHEMA)
    assert any(isinstance(o, ContractViolation) for o in parse_message(load(fixture), ORIGIN))


def _variants() -> list[object]:
    base = json.loads(load("valid_single_event.json"))
    base["timestamp"] = 1795771200000
    out: list[object] = [base, [1], "x", None]
    mutations: list[tuple[str, object]] = [
        ("client_id", "Bad Id"),
        ("client_id", 7),
        ("event_id", "ABCDEF00-0000-4000-8000-0000000000AA"),
        ("event_id", "not-a-uuid"),
        ("event_id", 12),
        ("api_key", ""),
        ("api_key", 5),
        ("api_key", "k" * 201),
        ("event_name", ""),
        ("event_name", None),
        ("event_name", 3),
        ("event_type", "alias"),
        ("user_id", ""),
        ("user_id", None),
        ("anonymous_id", "a"),
        ("timestamp", True),
        ("timestamp", -5),
        ("timestamp", "2026-11-27T10:00:00Z"),
        ("timestamp", 10**14),
        ("sent_at", "x"),
        ("sent_at", 5),
        ("properties", []),
        ("properties", None),
        ("api_key_hash", "ab" * 32),
        ("api_key", "k" * 200),
        ("api_key", "k" * 256),
        ("event_id", "2B1F6A0E4C2D4B8E9F000A1B2C3D4E5F"),
        ("event_id", "{2b1f6a0e-4c2d-4b8e-9f00-0a1b2c3d4e5f}"),
        ("event_id", "urn:uuid:2b1f6a0e-4c2d-4b8e-9f00-0a1b2c3d4e5f"),
        ("event_id", "2b1f6a0e-4c2d4b8e-9f00-0a1b2c3d4e5f"),
        ("event_id", "2b1f-6a0e-4c2d-4b8e-9f00-0a1b2c3d4e5f"),
        ("timestamp", "2038-06-20T09:05:21.898Z"),
        ("timestamp", "2026-11-27t10:00:00.5+01:30"),
        ("timestamp", "20240101T000000Z"),
        ("timestamp", "2024-W01-1T00:00Z"),
        ("timestamp", "2024-01-01T00Z"),
        ("timestamp", "2024-01-01 00:00:00Z"),
        ("timestamp", "2024-01-01T00:00:00+0100"),
        ("timestamp", "2024-02-30T00:00:00Z"),
        ("sent_at", "2026-11-27T10:00:00Z"),
    ]
    for key, value in mutations:
        doc = dict(base)
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
        out.append(doc)
        both = dict(doc)
        both.pop("api_key", None)
        both["api_key_hash"] = hash_api_key("k-acme")
        out.append(both)
    anonymous = {k: v for k, v in base.items() if k != "user_id"}
    out += [{**base, "user_id": "", "anonymous_id": "a"}, {**anonymous, "anonymous_id": ""}]
    return out


@pytest.mark.parametrize("doc", _variants())
def test_fast_path_agrees_with_the_checked_parser(doc: object) -> None:
    import msgspec

    from analytics_core.event_contract import EventDoc, _parse_event_checked, parse_event

    try:
        decoded = msgspec.json.decode(orjson.dumps(doc), type=EventDoc)
    except msgspec.ValidationError:  # not an object: parse_message's case, not an event's
        [outcome] = parse_message(orjson.dumps(doc), ORIGIN)
        assert isinstance(outcome, ContractViolation)
        return
    fast, checked = parse_event(decoded, 0, ORIGIN), _parse_event_checked(decoded, 0, ORIGIN)
    assert type(fast) is type(checked)
    if isinstance(fast, ValidEvent):
        assert fast == checked


CHECKED_SCHEMA = jsonschema.Draft202012Validator(
    SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
)


def test_the_format_checker_checks_date_times() -> None:
    """The agreement below means something only if "format": "date-time" is checked
    (jsonschema checks it only with rfc3339-validator installed)."""
    doc = json.loads(load("valid_single_event.json"))
    assert CHECKED_SCHEMA.is_valid(doc)
    assert not CHECKED_SCHEMA.is_valid({**doc, "timestamp": "2024-01-01T00Z"})


@pytest.mark.parametrize("doc", _variants())
def test_the_json_schema_and_the_router_agree_on_every_variant(doc: object) -> None:
    """The schema file is the contract producers validate against; the router enforces it,
    no more and no less (each variant: valid for both, or refused by both)."""
    outcomes = parse_message(orjson.dumps(doc), ORIGIN)
    routed = all(isinstance(o, ValidEvent) for o in outcomes)
    assert CHECKED_SCHEMA.is_valid(doc) == routed, (doc, outcomes)


def test_rfc3339_timestamps_are_stored_to_the_millisecond() -> None:
    doc = {**json.loads(load("valid_single_event.json")), "timestamp": "2038-06-20T09:05:21.898Z"}
    [ev] = parse_message(orjson.dumps(doc), ORIGIN)
    assert isinstance(ev, ValidEvent) and ev.timestamp_ms == 2_160_637_521_898


def test_escaped_lone_surrogates_are_read_as_the_replacement_character() -> None:
    """A JavaScript producer's string cut inside an emoji (`"\\ud83d"`) costs no event:
    each lone surrogate reads as U+FFFD, pairs and escaped backslashes stay as sent."""
    one = (
        b'{"client_id":"acme","api_key":"k-acme","event_name":"cut \\ud83d",'
        b'"timestamp":1795771200000,"user_id":"u","properties":{"t":"\\udc00 \\ud83d\\ude00"}}'
    )
    [ev] = parse_message(one, ORIGIN)
    assert isinstance(ev, ValidEvent)
    assert ev.event_name == "cut \ufffd"
    assert ev.properties == b'{"t":"\\ufffd \\ud83d\\ude00"}'
    batch = b"[" + one + b"," + one.replace(b"cut \\ud83d", b"text \\\\ud83d") + b"]"
    first, second = parse_message(batch, ORIGIN)
    assert isinstance(first, ValidEvent) and isinstance(second, ValidEvent)
    assert (first.event_name, second.event_name) == ("cut \ufffd", "text \\ud83d")
    # Still not JSON once repaired: refused with the decoder's reason, as before.
    [bad] = parse_message(b'{"event_name":"\\ud83d"', ORIGIN)
    assert isinstance(bad, ContractViolation) and bad.reason is Reason.INVALID_JSON


def test_a_leading_byte_order_mark_is_dropped() -> None:
    [ev] = parse_message(b"\xef\xbb\xbf" + load("valid_single_event.json"), ORIGIN)
    assert isinstance(ev, ValidEvent) and ev.event_name
    [bad] = parse_message(b"\xef\xbb\xbf", ORIGIN)
    assert isinstance(bad, ContractViolation) and bad.reason is Reason.INVALID_JSON


def test_text_is_repaired_once_not_again_and_again() -> None:
    """Only one leading BOM is dropped: a message of BOMs is not JSON, refused without
    recursing once per BOM."""
    [bad] = parse_message(b"\xef\xbb\xbf" * 100_000 + b"{}", ORIGIN)
    assert isinstance(bad, ContractViolation) and bad.reason is Reason.INVALID_JSON
    [deep] = parse_message(b"\xef\xbb\xbf" + b"[" * 5000, ORIGIN)
    assert isinstance(deep, ContractViolation) and deep.reason is Reason.INVALID_JSON
