"""Dead-letter records as data (envelope read or not) and the run's counts."""

from __future__ import annotations

import orjson

from analytics_core.dead_letter import DeadLetter
from analytics_core.dlq.classify import Defer, Park, ParkCause
from analytics_core.dlq.records import (
    DEFERRED_COLUMNS,
    PARKED_COLUMNS,
    REPLAYED_COLUMNS,
    Coordinates,
    deferred_row,
    from_message,
    from_stored,
    parked_row,
    replayed_row,
)
from analytics_core.dlq.tally import Origin, Outcome, Tally
from analytics_core.event_contract import Origin as KafkaOrigin
from analytics_core.reasons import Reason

COORDS = Coordinates("shared_dead_letter", 2, 41)
LETTER = DeadLetter(
    reason=Reason.SCHEMA_VIOLATION,
    detail="timestamp: not a date",
    origin=KafkaOrigin("shared_raw_events", 0, 7),
    source=KafkaOrigin("shared_raw_events", 3, 9),
    batch_index=2,
    client_id="acme",
    event_id="e-1",
    first_failed_at="2026-05-01T11:00:00.000Z",
    attempt=2,
    router_version="1",
)


def test_parked_row_keeps_original_bytes_and_coordinates() -> None:
    rec = from_message(COORDS, b"acme", b'{"bad": true}', LETTER.headers())
    assert rec.letter == LETTER and rec.reason == "schema_violation"
    row = dict(
        zip(
            PARKED_COLUMNS,
            parked_row(rec, Park(ParkCause.PERMANENT_REASON, "never heals"), "run-1"),
            strict=True,
        )
    )
    assert row["payload"] == b'{"bad": true}' and row["message_key"] == b"acme"
    assert (row["dl_topic"], row["dl_partition"], row["dl_offset"]) == ("shared_dead_letter", 2, 41)
    assert (row["origin_partition"], row["origin_offset"]) == (0, 7)
    assert (row["source_partition"], row["source_offset"], row["batch_index"]) == (3, 9, 2)
    assert row["parked_because"] == "permanent_reason" and row["attempts"] == 2
    assert row["detail"] == "never heals; router said: timestamp: not a date"
    assert row["first_failed_at"].isoformat() == "2026-05-01T11:00:00+00:00"
    assert orjson.loads(row["headers"])["dl-reason"] == "schema_violation"


def test_unreadable_envelope_is_parked_with_its_raw_headers() -> None:
    rec = from_message(COORDS, None, b"\xff", [("dl-version", b"99"), ("x", None)])
    assert rec.letter is None and rec.reason == "unreadable_envelope"
    row = dict(
        zip(
            PARKED_COLUMNS,
            parked_row(rec, Park(ParkCause.UNREADABLE_ENVELOPE, ""), None),
            strict=True,
        )
    )
    assert row["client_id"] is None and row["payload"] == b"\xff" and row["attempts"] == 0
    assert "unsupported dead-letter envelope version" in row["detail"]
    assert orjson.loads(row["headers"]) == {"dl-version": "99", "x": ""}


def test_deferred_record_round_trips_through_its_stored_headers() -> None:
    rec = from_message(COORDS, b"k", b"v", LETTER.headers())
    row = dict(zip(DEFERRED_COLUMNS, deferred_row(rec, Defer("waiting"), "r"), strict=True))
    again = from_stored(COORDS, b"k", b"v", orjson.loads(row["headers"]), deferred_id=5)
    assert again.letter == LETTER and again.deferred_id == 5
    replayed = dict(zip(REPLAYED_COLUMNS, replayed_row(again, "r2"), strict=True))
    assert replayed["from_deferred"] is True and replayed["attempts"] == 2


def test_tally_reconciles_by_reason_outcome_and_origin() -> None:
    t = Tally()
    t.add(Origin.TOPIC, "client_inactive", Outcome.REPLAYED, 3)
    t.add(Origin.TOPIC, "invalid_json", Outcome.PARKED)
    t.add(Origin.DEFERRED, "client_inactive", Outcome.STILL_DEFERRED, 2)
    assert t.total == 6
    assert t.by_outcome()["replayed"] == 3 and t.by_outcome()["not_selected"] == 0
    assert t.by_reason_and_outcome() == {
        "client_inactive": {"replayed": 3, "still_deferred": 2},
        "invalid_json": {"parked": 1},
    }
    assert t.by_origin()["deferred_table"] == {"still_deferred": 2}
    assert "| client_inactive | 3 | 0 | 0 | 2 | 0 | 0 |" in t.markdown()
