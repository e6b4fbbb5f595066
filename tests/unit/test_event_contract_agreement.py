"""The JSON Schema file and the router's parser accept the same events, field by field.

Every contract field is set to each value of a list of awkward ones (absent, null, empty,
wrong types, whole floats, edge times, leap seconds, malformed hashes and ids), and each
alias pair (api_key/api_key_hash, event_name/event_type, user_id/anonymous_id) takes every
combination of a smaller list. For each document: the schema, with "format": "date-time"
checked, and `parse_message` agree; the router's hot path (`common_events`) accepts only
what `parse_message` accepts, with the same values. The one disagreement allowed is the one
the schema's timestamp description names: an instant JSON Schema can not compare.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import orjson

from analytics_core.event_contract import (
    MAX_TIMESTAMP_MS,
    ContractViolation,
    Origin,
    ValidEvent,
    common_events,
    derive_event_id,
    hash_api_key,
    parse_message,
)
from analytics_core.rfc3339 import rfc3339_ms

ROOT = Path(__file__).parents[2]
SCHEMA = json.loads((ROOT / "analytics_core" / "contract" / "event-v1.schema.json").read_text())
CHECKED = jsonschema.Draft202012Validator(
    SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
)
ORIGIN = Origin("shared_raw_events", 3, 42)
ABSENT = object()
HASH = hash_api_key("k-acme")

BASE: dict[str, Any] = {
    "client_id": "acme",
    "api_key": "k-acme",
    "event_id": "2b1f6a0e-4c2d-4b8e-9f00-0a1b2c3d4e5f",
    "event_name": "page_view",
    "timestamp": 1795771200000,
    "user_id": "u-1",
    "properties": {"url": "/pricing"},
}
ANY_FIELD: list[Any] = [ABSENT, None, "", "x", 5, 1.5, True, [], {}, "k" * 200, "k" * 201]
TIMES: list[Any] = [
    0,
    -1,
    MAX_TIMESTAMP_MS,
    MAX_TIMESTAMP_MS + 1,
    1.7e12,
    1796406000000.0,
    1796406000000.5,
    1e300,
    "2026-12-04T17:40:00Z",
    "2026-12-04T17:40:60Z",
    "2016-12-31T23:59:60Z",
    "2026-12-04t17:40:00.123456z",
    "1800-01-01T00:00:00Z",
    "1969-12-31T23:59:59Z",
    "1970-01-01T00:00:00Z",
    "1970-01-01T00:00:00+01:00",
    "1970-01-01T00:00:00-01:00",
    "2299-12-31T23:59:59.999Z",
    "2299-12-31T23:59:59-05:00",
    "2300-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "2024-02-30T00:00:00Z",
    "2024-01-01T00:00:00+0100",
    "2024-01-01 00:00:00Z",
]
FIELD_VALUES: dict[str, list[Any]] = {
    "client_id": [*ANY_FIELD, "Acme", "a" * 48, "a" * 49, "acme-2_b"],
    "api_key": ANY_FIELD,
    "api_key_hash": [*ANY_FIELD, HASH, HASH.upper(), "zz" * 32, HASH[:63], "\u0660" * 64],
    "event_id": [
        *ANY_FIELD,
        "2B1F6A0E4C2D4B8E9F000A1B2C3D4E5F",
        "{2b1f6a0e-4c2d-4b8e-9f00-0a1b2c3d4e5f}",
        "urn:uuid:2b1f6a0e-4c2d-4b8e-9f00-0a1b2c3d4e5f",
        "2b1f6a0e-4c2d4b8e-9f00-0a1b2c3d4e5f",
    ],
    "event_name": ANY_FIELD,
    "event_type": ANY_FIELD,
    "user_id": ANY_FIELD,
    "anonymous_id": ANY_FIELD,
    "timestamp": [*ANY_FIELD, *TIMES],
    "sent_at": [*ANY_FIELD, *TIMES],
    "properties": [ABSENT, None, {}, {"a": [1, {"b": None}]}, [], "x", 5],
}
PAIR_VALUES: dict[str, list[Any]] = {
    "api_key": [ABSENT, None, "", "k-acme", 5, "k" * 201],
    "api_key_hash": [ABSENT, None, "", HASH, "zzz", 5],
    "event_name": [ABSENT, None, "", "a", 5, "n" * 201],
    "event_type": [ABSENT, None, "", "b", 5, "n" * 201],
    "user_id": [ABSENT, None, "", "u", 5, "u" * 201],
    "anonymous_id": [ABSENT, None, "", "v", 5, "u" * 201],
}
PAIRS = [("api_key", "api_key_hash"), ("event_name", "event_type"), ("user_id", "anonymous_id")]


def with_fields(**fields: Any) -> dict[str, Any]:
    doc = dict(BASE)
    for key, value in fields.items():
        if value is ABSENT:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


def documents() -> list[dict[str, Any]]:
    docs = [with_fields(**{key: value}) for key, values in FIELD_VALUES.items() for value in values]
    for first, second in PAIRS:
        docs += [
            with_fields(**{first: a, second: b})
            for a in PAIR_VALUES[first]
            for b in PAIR_VALUES[second]
        ]
    return docs


def instant_out_of_range(doc: dict[str, Any]) -> bool:
    """The exception the schema names: a time written in 1970 or 2299 whose instant, its
    offset applied, falls outside 1970-01-01T00:00:00Z..2299-12-31T23:59:59.999Z."""
    for key in ("timestamp", "sent_at"):
        value = doc.get(key)
        if isinstance(value, str) and value[:4] in ("1970", "2299"):
            ms = rfc3339_ms(value)
            if ms is not None and not 0 <= ms <= MAX_TIMESTAMP_MS:
                return True
    return False


def test_the_schema_and_the_router_accept_the_same_events() -> None:
    docs = documents()
    assert len(docs) > 250
    disagree, edges = [], 0
    for doc in docs:
        routed = all(isinstance(o, ValidEvent) for o in parse_message(orjson.dumps(doc), ORIGIN))
        if CHECKED.is_valid(doc) != routed:
            if instant_out_of_range(doc) and not routed:
                edges += 1
                continue
            disagree.append((doc, "router accepts" if routed else "router refuses"))
    assert not disagree, disagree
    assert edges == 4  # 1970 with +01:00 and 2299 with -05:00, as timestamp and as sent_at


def test_the_hot_path_accepts_only_what_the_reference_parser_accepts() -> None:
    for doc in documents():
        for raw in (orjson.dumps(doc), orjson.dumps([doc, doc])):
            fast = common_events(raw)
            if fast is None:
                continue
            outcomes = parse_message(raw, ORIGIN)
            assert all(isinstance(o, ValidEvent) for o in outcomes), doc
            assert len(fast) == len(outcomes)
            for (cid, credential, uid, name, ts, user, props, sent), ev in zip(
                fast, outcomes, strict=True
            ):
                assert isinstance(ev, ValidEvent)
                eid = derive_event_id(ORIGIN, ev.batch_index) if uid is None else None
                assert (cid, credential, name, ts, user, bytes(props), sent) == (
                    ev.client_id,
                    ev.credential_hash,
                    ev.event_name,
                    ev.timestamp_ms,
                    ev.user_id,
                    ev.properties,
                    ev.sent_at_ms,
                ), doc
                assert (eid or str(__import__("uuid").UUID(bytes=uid))) == ev.event_id


def outcome(**fields: Any) -> ValidEvent | ContractViolation:
    doc = with_fields(**fields)
    assert CHECKED.is_valid(doc) == all(
        isinstance(o, ValidEvent) for o in parse_message(orjson.dumps(doc), ORIGIN)
    )
    [result] = parse_message(orjson.dumps(doc), ORIGIN)
    return result


def test_null_is_absent_for_optional_fields() -> None:
    ev = outcome(event_id=None, sent_at=None, event_type=None, anonymous_id=None)
    assert isinstance(ev, ValidEvent) and ev.event_id_derived and ev.sent_at_ms is None
    assert isinstance(outcome(api_key=None, api_key_hash=HASH), ValidEvent)
    assert isinstance(outcome(timestamp=None), ContractViolation)


def test_both_members_of_an_alias_pair_are_checked() -> None:
    for fields in (
        {"anonymous_id": 5},
        {"event_type": 5},
        {"api_key_hash": "zzz"},
        {"event_type": "n" * 201},
    ):
        refused = outcome(**fields)
        assert isinstance(refused, ContractViolation), fields
        assert next(iter(fields)) in refused.detail
    # An empty member falls back to the other one, as an empty user_id always has.
    ev = outcome(event_name="", event_type="signup", user_id="", anonymous_id="anon")
    assert isinstance(ev, ValidEvent) and (ev.event_name, ev.user_id) == ("signup", "anon")
    # With both credentials given, the key is the one checked against the client.
    ev = outcome(api_key_hash="ab" * 32)
    assert isinstance(ev, ValidEvent) and ev.credential_hash == HASH


def test_whole_floats_are_epoch_milliseconds_and_leap_seconds_are_refused() -> None:
    ev = outcome(timestamp=1.7e12, sent_at=1796406000000.0)
    assert isinstance(ev, ValidEvent) and (ev.timestamp_ms, ev.sent_at_ms) == (
        1_700_000_000_000,
        1_796_406_000_000,
    )
    leap = outcome(timestamp="2016-12-31T23:59:60Z")
    assert isinstance(leap, ContractViolation) and "leap second" in leap.detail
    old = outcome(timestamp="1800-01-01T00:00:00Z")
    assert isinstance(old, ContractViolation) and "1970-01-01..2299-12-31" in old.detail
