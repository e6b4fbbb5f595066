"""Trace: matching dead letters to an event id, options, the report and its rendering."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

from analytics_core.dead_letter import DeadLetter, header_map
from analytics_core.event_contract import Origin, derive_event_id
from analytics_core.reasons import Reason
from analytics_core.trace.kafka_io import letter_match
from analytics_core.trace.model import (
    Coords,
    FateRecord,
    LetterHit,
    RawCopy,
    RowHit,
    TraceError,
    TraceReport,
)
from analytics_core.trace.render import text
from analytics_core.trace.run import normalise_event_id, parse_since

NOW = datetime(2026, 11, 27, 14, 0, tzinfo=UTC)


def headers(event_id: str | None, *, batch_index: int | None = 0) -> dict[str, str]:
    letter = DeadLetter(
        reason=Reason.CLIENT_INACTIVE,
        detail="client status is pending",
        origin=Origin("raw", 2, 40),
        source=Origin("raw", 3, 90),
        batch_index=batch_index,
        client_id="acme",
        event_id=event_id,
        first_failed_at="2026-11-27T13:00:00.000Z",
        attempt=1,
        router_version="1",
    )
    return header_map(letter.headers())


def test_letter_matches_its_own_event_id_case_insensitively() -> None:
    eid = str(uuid.uuid4())
    assert letter_match(headers(eid.upper()), eid) == "dl-event-id"
    assert letter_match(headers(eid), str(uuid.uuid4())) is None


def test_letter_without_event_id_matches_the_derived_id() -> None:
    derived = derive_event_id(Origin("raw", 2, 40), 3)
    assert letter_match(headers(None, batch_index=3), derived) == "derived id"
    whole = derive_event_id(Origin("raw", 2, 40), 0)
    assert letter_match(headers(None, batch_index=None), whole) == "derived id"
    assert letter_match(headers(None, batch_index=4), derived) is None


def test_since_and_event_id_parsing() -> None:
    assert parse_since("90m", NOW) == NOW - timedelta(minutes=90)
    assert parse_since("7d", NOW) == NOW - timedelta(days=7)
    assert parse_since("2026-11-01T00:00:00", NOW) == datetime(2026, 11, 1, tzinfo=UTC)
    assert parse_since("soon", NOW) is None
    eid = uuid.uuid4()
    assert normalise_event_id(str(eid).upper()) == str(eid)
    assert normalise_event_id("not-a-uuid") is None


def sample_report() -> TraceReport:
    row = RowHit(
        "client_acme", "events_base", "acme", "raw", 1, 77, 0, 2, 40, 2, "page_view",
        NOW, None, NOW, NOW, "router-a",
    )  # fmt: skip
    letter = LetterHit(
        Coords("dl", 0, 5), NOW, "client_inactive", "client status is pending", 1, "acme",
        "e", 0, Coords("raw", 2, 40), Coords("raw", 2, 40), "2026-11-27T13:00:00Z", "dl-event-id",
    )  # fmt: skip
    fate = FateRecord(
        "replayed_dead_letters",
        "replayed",
        Coords("dl", 0, 5),
        "client_inactive",
        NOW,
        1,
        "",
        "run-1",
    )
    copies = (
        RawCopy(Coords("raw", 2, 40), ("failed copy", "origin"), True, NOW),
        RawCopy(Coords("raw", 1, 77), ("routed copy",), True, NOW, replay_attempt=1),
    )
    return TraceReport("e", None, ("client_acme",), (row,), (letter,), (fate,), copies, "scan ok")


def test_report_status_json_and_text() -> None:
    report = sample_report()
    assert report.found
    assert report.status == (
        "dead-lettered 1x (client_inactive), then replayed, then stored in client_acme"
    )
    doc = json.loads(json.dumps(report.to_dict()))
    assert doc["rows"][0]["kafka_offset"] == 77
    assert doc["dead_letters"][0]["reason"] == "client_inactive"
    assert doc["reprocessing"][0]["outcome"] == "replayed"
    rendered = text(report)
    assert "client_acme.events_base: raw[1]@77" in rendered
    assert "replay attempt 1" in rendered
    assert "replayed at" in rendered


def test_not_found_and_error_rendering() -> None:
    empty = TraceReport("e", "acme", ("client_acme",), (), (), (), (), "scan ok")
    assert not empty.found and empty.status == "not found"
    assert "not found anywhere" in text(empty)
    assert "can not trace" in text(TraceError("x", "bad id"))


def test_not_found_with_a_target_unsearched_is_no_verdict() -> None:
    searched = TraceReport("e", None, ("client_acme",), (), (), (), (), "scan ok")
    assert searched.conclusive
    blind = TraceReport("e", None, (), (), (), (), (), "scan ok", unsearched_targets=("ch2",))
    assert not blind.found and not blind.conclusive
    assert blind.to_dict()["unsearched_targets"] == ["ch2"]
    row = sample_report().rows  # found somewhere: a verdict even with a target down
    assert TraceReport("e", None, (), row, (), (), (), "ok", unsearched_targets=("ch2",)).conclusive
