"""Regression tests named after each way issue 10 broke the router, on the pure path
(`router.processing.process_message`: decision + row encoding, no servers)."""

from __future__ import annotations

import orjson
import psycopg2
import pytest
import redis

from analytics_core.clients import (
    ClientFound,
    ClientMissing,
    ClientRecord,
    ClientStatus,
    LookupResult,
)
from analytics_core.dead_letter import DeadLetter, ReplayKeys, replay_headers
from analytics_core.event_contract import MAX_NESTING_DEPTH, Origin, hash_api_key, nesting_depth
from analytics_core.reasons import Reason
from router.decision import RawMessage, Retry
from router.failures import is_outage
from router.processing import MessageFates, ProcessingContext, process_message
from router.rows import read_row

T = "shared_raw_events"
KEYS = ReplayKeys(b"unit-test-replay-key-0123456789abcdef")
CTX = ProcessingContext("2026-11-27T10:00:00.000Z", "test", KEYS)
ACME = ClientRecord("acme", ClientStatus.ACTIVE, hash_api_key("k-acme"), "client_acme")
BETA = ClientRecord("beta", ClientStatus.ACTIVE, hash_api_key("k-beta"), "client_beta")


def lookup(client_id: str) -> LookupResult:
    found = {"acme": ACME, "beta": BETA}.get(client_id)
    return ClientFound(found) if found else ClientMissing(client_id)


def event(**over: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "client_id": "acme",
        "api_key": "k-acme",
        "event_name": "page_view",
        "timestamp": 1795771200000,
        "user_id": "u",
        "properties": {"url": "/a"},
    }
    doc.update(over)
    return {k: v for k, v in doc.items() if v is not None}


def process(
    value: bytes | None, headers: list[tuple[str, bytes | None]] | None = None, offset: int = 7
) -> MessageFates:
    out = process_message(RawMessage(T, 2, offset, value, headers, 1000), lookup, CTX, 5)
    assert isinstance(out, MessageFates)
    assert out.events >= 1  # every message has a fate, never none
    return out


def only_letter(fates: MessageFates) -> DeadLetter:
    assert not fates.rows and len(fates.letters) == 1
    return fates.letters[0]


def test_case1_unicode_digits_in_api_key_hash_are_refused_not_a_crash() -> None:
    for zero in ("\u0660", "\u06f0", "\uff10", "\U0001d7ce"):  # Arabic-Indic, ..., math digit
        letter = only_letter(process(orjson.dumps(event(api_key=None, api_key_hash=zero * 64))))
        assert letter.reason is Reason.SCHEMA_VIOLATION and "hex" in letter.detail
    # The same shape in ASCII is a credential: it is compared (and refused: wrong key).
    letter = only_letter(process(orjson.dumps(event(api_key=None, api_key_hash="0" * 64))))
    assert letter.reason is Reason.INVALID_API_KEY


def test_case1_a_registry_hash_that_is_not_ascii_never_stops_the_router() -> None:
    """The registry's CHECK and the cache decoder keep such a hash out; if one got in
    anyway, the message is one dead letter and the router goes on."""
    from analytics_core.client_cache import decode

    assert (
        decode("acme", orjson.dumps({"status": "active", "api_key_hash": "\u0660" * 64, "db": "x"}))
        is None
    )
    odd = ClientRecord("acme", ClientStatus.ACTIVE, "\u0660" * 64, "client_acme")
    out = process_message(
        RawMessage(T, 0, 1, orjson.dumps(event()), None, 1000),
        lambda cid: ClientFound(odd),
        CTX,
        5,
    )
    assert isinstance(out, MessageFates) and not out.rows
    assert only_letter(out).reason is Reason.UNPROCESSABLE


@pytest.mark.parametrize("depth", [254, 300, MAX_NESTING_DEPTH - 1, 2000, 100_000])
def test_case2_properties_nested_deeper_than_the_limit_are_dead_letters(depth: int) -> None:
    props = b"[" * depth + b"]" * depth
    raw = b'{"client_id":"acme","api_key":"k-acme","event_name":"e","timestamp":1,'
    raw += b'"user_id":"u","properties":{"deep":' + props + b"}}"
    letter = only_letter(process(raw))
    assert letter.reason is Reason.INVALID_JSON and str(MAX_NESTING_DEPTH) in letter.detail


def test_case2_nesting_at_the_limit_is_routed_and_encoded() -> None:
    inner = MAX_NESTING_DEPTH - 2  # the event object and the properties object count
    props = b'{"deep":' + b"[" * inner + b"]" * inner + b"}"
    raw = b'{"client_id":"acme","api_key":"k-acme","event_name":"e","timestamp":1,'
    raw += b'"user_id":"u","properties":' + props + b"}"
    assert nesting_depth(raw) == MAX_NESTING_DEPTH
    fates = process(raw)
    [routed] = fates.rows
    assert routed.row.line.count(props) == 1  # encoded without recursion, unchanged
    # In a batch the array is one more level: the same event is one level too deep.
    letter = only_letter(process(b"[" + raw + b"]"))
    assert letter.reason is Reason.INVALID_JSON and letter.batch_index == 0


def test_nesting_depth_ignores_brackets_inside_strings() -> None:
    assert nesting_depth(b'{"a": "[[[{{{", "b": ["\\"]"]}') == 2
    crowded = orjson.dumps(event(properties={"s": "[" * 5000, "list": list(range(300))}))
    assert process(crowded).rows  # many brackets, little depth: routed


def signed(letter: DeadLetter, value: bytes) -> list[tuple[str, bytes | None]]:
    return list(replay_headers(letter, value, KEYS))


def a_letter(value: bytes, **over: object) -> DeadLetter:
    first = only_letter(process(value, offset=3))
    fields = {
        "reason": first.reason,
        "detail": first.detail,
        "origin": first.origin,
        "source": first.source,
        "batch_index": first.batch_index,
        "client_id": first.client_id,
        "event_id": first.event_id,
        "first_failed_at": first.first_failed_at,
        "attempt": first.attempt,
        "router_version": "test",
    }
    fields.update(over)
    return DeadLetter(**fields)  # type: ignore[arg-type]


def test_case3_replay_offset_beyond_64_bits_is_invalid_replay_not_a_crash() -> None:
    value = orjson.dumps(event(client_id="ghost"))
    letter = a_letter(value, origin=Origin(T, 0, 99999999999999999999999))
    out = process(value, signed(letter, value))  # signed, so only the range check stops it
    found = only_letter(out)
    assert found.reason is Reason.INVALID_REPLAY and "replay-origin-offset" in found.detail


def test_case4_unsigned_replay_headers_are_a_dead_letter_never_a_silent_drop() -> None:
    value = orjson.dumps(event())
    forged: list[tuple[str, bytes | None]] = [
        ("replay-origin-topic", T.encode()),
        ("replay-origin-partition", b"0"),
        ("replay-origin-offset", b"1"),
        ("replay-batch-index", b"7"),
        ("replay-attempt", b"1"),
        ("replay-first-failed-at", b"2026-01-01T00:00:00Z"),
    ]
    letter = only_letter(process(value, forged))
    assert letter.reason is Reason.INVALID_REPLAY and "missing replay-signature" in letter.detail
    assert letter.origin == letter.source == Origin(T, 2, 7)  # no borrowed identity
    wrong = [*forged, ("replay-signature", b"00" * 32)]
    assert "does not match" in only_letter(process(value, wrong)).detail
    # A single stray replay-* header, a duplicate, a null value: all dead letters.
    assert only_letter(process(value, [("replay-attempt", b"70000")])).reason is (
        Reason.INVALID_REPLAY
    )
    assert only_letter(process(value, [("replay-foo", None)])).reason is Reason.INVALID_REPLAY
    good = signed(a_letter(orjson.dumps(event(client_id="ghost"))), value)
    assert "more than once" in only_letter(process(value, [*good, good[0]])).detail
    # Other headers are nobody's business.
    assert process(value, [("traceparent", b"00-abc"), ("x", None)]).rows


def test_case4_signed_attempt_out_of_range_and_empty_selection_are_dead_letters() -> None:
    value = orjson.dumps(event(client_id="ghost"))
    letter = only_letter(process(value, signed(a_letter(value, attempt=70000), value)))
    assert letter.reason is Reason.INVALID_REPLAY and "replay-attempt" in letter.detail
    # A replay selecting an event the message does not have is not dropped either.
    letter = only_letter(process(value, signed(a_letter(value, batch_index=7), value)))
    assert letter.reason is Reason.INVALID_REPLAY and "selects no event" in letter.detail


def test_case4_a_signature_covers_the_value_and_every_identity_field() -> None:
    value = orjson.dumps(event(client_id="ghost"))
    headers = signed(a_letter(value), value)
    assert only_letter(process(value + b" ", headers)).reason is Reason.INVALID_REPLAY
    for i in range(6):
        name, raw = headers[i]
        tampered = list(headers)
        tampered[i] = (name, (raw or b"") + b"0")
        assert only_letter(process(value, tampered)).reason is Reason.INVALID_REPLAY, name
    # Unchanged, it is honoured: the event keeps its origin and counts the attempt.
    again = only_letter(process(value, headers))
    assert again.reason is Reason.UNKNOWN_CLIENT and again.attempt == 2
    assert again.origin == Origin(T, 2, 3)


def test_case4_a_rotated_key_still_verifies_as_previous() -> None:
    value = orjson.dumps(event())
    headers = signed(a_letter(orjson.dumps(event(client_id="ghost"))), value)
    rotated = ProcessingContext(CTX.now_iso, "test", ReplayKeys(b"x" * 40, KEYS.current))
    out = process_message(RawMessage(T, 2, 9, value, headers, 1000), lookup, rotated, 5)
    assert isinstance(out, MessageFates) and out.rows
    stale = ProcessingContext(CTX.now_iso, "test", ReplayKeys(b"x" * 40))
    out = process_message(RawMessage(T, 2, 9, value, headers, 1000), lookup, stale, 5)
    assert isinstance(out, MessageFates) and only_letter(out).reason is Reason.INVALID_REPLAY


def test_case7_properties_are_stored_byte_for_byte() -> None:
    props = b'{ "big": 123456789012345678901234567890, "f": 1.10, "z": 1, "a": "\\u00e9" }'
    raw = b'{"client_id":"acme","api_key":"k-acme","event_name":"e","timestamp":1,'
    raw += b'"user_id":"u","properties":' + props + b"}"
    [routed] = process(raw).rows
    assert read_row(routed.row.line).properties == props  # length-prefixed, unchanged
    values = orjson.loads(read_row(routed.row.line).as_json())
    assert values["event_properties"] == {"big": 1.2345678901234568e29, "f": 1.1, "z": 1, "a": "é"}


def test_another_tenants_key_never_routes_into_that_tenant() -> None:
    letter = only_letter(process(orjson.dumps(event(client_id="acme", api_key="k-beta"))))
    assert letter.reason is Reason.INVALID_API_KEY and letter.client_id == "acme"
    [routed] = process(orjson.dumps(event(client_id="beta", api_key="k-beta"))).rows
    assert routed.database == "client_beta"


class Boom(ValueError):
    pass


@pytest.mark.parametrize(
    "error",
    [
        OSError("connection reset"),
        TimeoutError("timed out"),
        MemoryError(),
        redis.ConnectionError("refused"),
        redis.TimeoutError("slow"),
        psycopg2.OperationalError("server closed the connection"),
    ],
)
def test_outages_while_processing_are_retried_never_dead_lettered(error: Exception) -> None:
    def failing(_cid: str) -> LookupResult:
        raise error

    assert is_outage(error)
    out = process_message(RawMessage(T, 0, 1, orjson.dumps(event()), None, 1), failing, CTX, 5)
    assert isinstance(out, Retry) and type(error).__name__ in out.detail


@pytest.mark.parametrize(
    "error", [Boom("bad"), TypeError("x"), KeyError("k"), RecursionError(), AssertionError()]
)
def test_any_other_failure_is_one_unprocessable_dead_letter(error: Exception) -> None:
    def failing(_cid: str) -> LookupResult:
        raise error

    assert not is_outage(error)
    out = process_message(RawMessage(T, 4, 11, orjson.dumps(event()), None, 1), failing, CTX, 5)
    assert isinstance(out, MessageFates) and out.unprocessable is error
    letter = only_letter(out)
    assert letter.reason is Reason.UNPROCESSABLE and type(error).__name__ in letter.detail
    assert letter.source == letter.origin == Origin(T, 4, 11) and letter.batch_index is None


def test_numbers_json_allows_but_floats_can_not_hold_are_stored_and_read_back() -> None:
    """Found by the fuzzer: `1e999` in properties is valid JSON, routed and stored as text;
    the rare paths that read an encoded row back (a rejected row's dead letter, a replay's
    identity) must not choke on it (orjson refuses it)."""
    from router.replay_guard import identity_of

    props = b'{"inf": 1234567890123456789e1234567890, "tiny": -1e-999}'
    raw = b'{"client_id":"acme","api_key":"k-acme","event_name":"e","timestamp":1,'
    raw += b'"user_id":"u","properties":' + props + b"}"
    [routed] = process(raw).rows
    assert read_row(routed.row.line).properties == props
    assert routed.row.letter_fields()[1] == 1
    assert identity_of(routed.row).event_name == "e"
