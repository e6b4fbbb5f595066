"""The router's decision for one message, with an in-memory lookup (no servers)."""

from __future__ import annotations

from pathlib import Path

import orjson

from analytics_core.clients import (
    ClientFound,
    ClientMissing,
    ClientRecord,
    ClientStatus,
    LookupResult,
    RegistryUnavailable,
)
from analytics_core.dead_letter import ReplayKeys, read_dead_letter, replay_headers
from analytics_core.event_contract import Origin, hash_api_key
from analytics_core.kafka_headers import UnreadableHeaders
from analytics_core.reasons import Reason
from router.decision import DeadLettered, RawMessage, Retry, Routed, decide

FIXTURES = Path(__file__).parent.parent / "fixtures" / "contract"
ACME = ClientRecord("acme", ClientStatus.ACTIVE, hash_api_key("k-acme"), "client_acme_db")
KEYS = ReplayKeys(b"unit-test-replay-key-0123456789abcdef")


def registry(*records: ClientRecord) -> dict[str, ClientRecord]:
    return {r.client_id: r for r in records}


def lookup_in(records: dict[str, ClientRecord]):  # type: ignore[no-untyped-def]
    def lookup(client_id: str) -> LookupResult:
        r = records.get(client_id)
        return ClientFound(r) if r else ClientMissing(client_id)

    return lookup


def msg(value: bytes | None, offset: int = 7, headers=None) -> RawMessage:  # type: ignore[no-untyped-def]
    return RawMessage("shared_raw_events", 2, offset, value, headers, 1_000)


def run(value: bytes | None, records=None, headers=None):  # type: ignore[no-untyped-def]
    return decide(
        msg(value, headers=headers),
        lookup_in(records if records is not None else registry(ACME)),
        now_iso="2026-11-27T10:00:00.000Z",
        router_version="test",
        replay_keys=KEYS,
    )


def event(**over: object) -> bytes:
    doc: dict[str, object] = {
        "client_id": "acme",
        "api_key": "k-acme",
        "event_name": "page_view",
        "timestamp": 1795771200000,
        "user_id": "u",
        "properties": {"url": "/a"},
    }
    doc.update(over)
    return orjson.dumps({k: v for k, v in doc.items() if v is not None})


def the_letter(decision):  # type: ignore[no-untyped-def]
    assert isinstance(decision, list) and len(decision) == 1
    assert isinstance(decision[0], DeadLettered)
    return decision[0].letter


def test_active_client_with_right_key_is_routed_to_its_registry_database() -> None:
    [fate] = run(event(database="attacker_db"))  # type: ignore[misc]
    assert isinstance(fate, Routed)
    assert fate.database == "client_acme_db"  # from the registry, never the event
    assert fate.attempt == 1 and fate.origin == Origin("shared_raw_events", 2, 7)


def test_prehashed_key_is_accepted() -> None:
    [fate] = run(event(api_key=None, api_key_hash=hash_api_key("k-acme")))  # type: ignore[misc]
    assert isinstance(fate, Routed)


def test_unknown_client() -> None:
    letter = the_letter(run(event(client_id="ghost")))
    assert letter.reason is Reason.UNKNOWN_CLIENT and letter.client_id == "ghost"


def test_wrong_key() -> None:
    letter = the_letter(run(event(api_key="nope")))
    assert letter.reason is Reason.INVALID_API_KEY


def test_inactive_statuses_are_client_inactive() -> None:
    for status in (
        ClientStatus.PENDING,
        ClientStatus.FAILED,
        ClientStatus.DEPROVISIONED,
        ClientStatus.DEPROVISIONING,
    ):
        rec = ClientRecord("acme", status, hash_api_key("k-acme"), "client_acme_db")
        letter = the_letter(run(event(), registry(rec)))
        assert letter.reason is Reason.CLIENT_INACTIVE and status.value in letter.detail


def test_an_active_client_without_a_database_waits_as_client_inactive() -> None:
    # (A row written by hand as active before any provisioning recorded its database.)
    rec = ClientRecord("acme", ClientStatus.ACTIVE, hash_api_key("k-acme"), "")
    letter = the_letter(run(event(), registry(rec)))
    assert letter.reason is Reason.CLIENT_INACTIVE
    assert "no ClickHouse database" in letter.detail


def test_contract_violations_are_dead_lettered_with_coordinates() -> None:
    letter = the_letter(run(b"{oops"))
    assert letter.reason is Reason.INVALID_JSON
    assert (letter.source.partition, letter.source.offset) == (2, 7)
    assert letter.attempt == 1 and letter.first_failed_at == "2026-11-27T10:00:00.000Z"
    assert the_letter(run(b"\xff\xfe")).reason is Reason.INVALID_ENCODING
    assert the_letter(run(event(timestamp="soon"))).reason is Reason.SCHEMA_VIOLATION
    big = event(properties={"x": "a" * 600_000})
    assert the_letter(run(big)).reason is Reason.PAYLOAD_TOO_LARGE


def test_registry_outage_retries_the_whole_message_instead_of_dead_lettering() -> None:
    decision = decide(
        msg(b"[" + event() + b"," + event(client_id="ghost") + b"]"),
        lambda cid: RegistryUnavailable("down"),
        now_iso="t",
        router_version="test",
        replay_keys=KEYS,
    )
    assert isinstance(decision, Retry) and "down" in decision.detail


def test_batch_gives_each_event_its_own_fate() -> None:
    raw = (FIXTURES / "batch_with_one_bad_event.json").read_bytes()
    fates = run(raw)
    assert isinstance(fates, list)
    assert [type(f).__name__ for f in fates] == ["Routed", "DeadLettered"]
    assert fates[1].letter.batch_index == 1  # type: ignore[union-attr]


def test_replay_keeps_origin_and_counts_attempts_and_selects_its_event() -> None:
    raw = (FIXTURES / "batch_with_one_bad_event.json").read_bytes()
    first = run(raw)
    letter = first[1].letter  # type: ignore[index,union-attr]
    # The reprocessing job sends the same bytes back with replay headers.
    again = run(raw, headers=replay_headers(letter, raw, KEYS))
    assert isinstance(again, list) and len(again) == 1
    replayed = the_letter(again)
    assert replayed.origin == letter.origin and replayed.attempt == 2
    assert replayed.first_failed_at == letter.first_failed_at
    assert replayed.batch_index == 1
    # And an event that now routes keeps the id derived from its ORIGINAL coordinates.
    ok_letter = the_letter(run(event(client_id="ghost")))
    routed = run(
        event(client_id="ghost"),
        registry(
            ACME, ClientRecord("ghost", ClientStatus.ACTIVE, hash_api_key("k-acme"), "client_ghost")
        ),
        headers=replay_headers(ok_letter, event(client_id="ghost"), KEYS),
    )
    assert isinstance(routed, list) and isinstance(routed[0], Routed)
    assert routed[0].origin == ok_letter.origin and routed[0].attempt == 2


def test_dead_letter_headers_round_trip() -> None:
    letter = the_letter(run(event(api_key="nope")))
    assert read_dead_letter(letter.headers()) == letter


def test_a_message_whose_headers_can_not_be_read_is_dead_lettered_whole() -> None:
    batch = orjson.dumps([orjson.loads(event()), orjson.loads(event(user_id="v"))])
    unreadable = UnreadableHeaders("a Kafka header name is not UTF-8: b'\\xff'")
    letter = the_letter(run(batch, headers=unreadable))
    assert letter.reason is Reason.INVALID_HEADERS
    assert letter.batch_index is None and letter.detail == unreadable.detail
    assert letter.origin == letter.source == Origin("shared_raw_events", 2, 7)
    # The same bytes with readable headers are routed: the headers alone decide.
    assert all(isinstance(f, Routed) for f in run(batch, headers=[("x", b"y")]))  # type: ignore[union-attr]
