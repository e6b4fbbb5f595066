"""Guards against storing a row twice: crash replays and dead-letter replays (pure)."""

from __future__ import annotations

from datetime import date

from analytics_core.event_contract import Origin, ValidEvent
from analytics_core.events_table import EventKey, event_key
from router.decision import Routed
from router.replay_guard import (
    CrashReplayGuard,
    SuspectRange,
    drop_stored_replays,
    identity_of,
    parse_hw,
    replay_identities,
    suspect_spans,
)
from router.rows import PendingRow, pending_row

T = "shared_raw_events"


def row(partition: int, offset: int, *, origin: Origin | None = None, n: int = 0) -> PendingRow:
    ev = ValidEvent(
        0, "c", "h", f"00000000-0000-4000-8000-{n:012d}", False, "pv", 1795771200123,
        None, "u", b"{}",
    )  # fmt: skip
    routed = Routed("c", "db", ev, origin or Origin(T, partition, offset), 2 if origin else 1)
    return pending_row(routed, T, partition, offset, 0, 1)


def test_high_water_is_committed_before_rows_can_reach_clickhouse() -> None:
    g = CrashReplayGuard()
    assert g.high_water_to_commit({0: 9, 1: 3}) == {0, 1}  # rows up to 0:9 and 1:3
    assert g.commit_metadata(0, 5) == "hw=9" and g.commit_metadata(0, 10) is None
    g.committed(0, 5, "hw=9")
    g.committed(1, 3, "hw=3")
    assert g.high_water_to_commit({0: 8}) == set()  # nothing new past what Kafka has
    assert g.high_water_to_commit({0: 12}) == {0}


def test_an_unclean_stop_marks_the_span_suspect_until_the_commit_passes_it() -> None:
    g = CrashReplayGuard()
    assert not g.assigned(0, 100, None) and not g.assigned(1, 100, "hw=99")
    assert g.assigned(2, 100, "hw=140")
    assert g.suspect == {2: SuspectRange(100, 140)} and 120 in g.suspect[2]
    snapshot = g.snapshot()
    rows = [row(2, 99), row(2, 101), row(2, 130), row(2, 141), row(0, 120)]
    spans = suspect_spans([r.partition for r in rows], [r.offset for r in rows], snapshot)
    assert spans == {2: SuspectRange(101, 130)}
    g.committed(2, 120, "hw=140")
    assert 2 in g.suspect
    g.committed(2, 141, None)
    assert g.suspect == {} and snapshot == {2: SuspectRange(100, 140)}  # the copy stays
    assert parse_hw("hw=x") is None and parse_hw("other") is None


def test_replayed_rows_already_stored_or_repeated_are_dropped() -> None:
    first = row(0, 1, n=1)
    replay_a = row(0, 2, origin=Origin(T, 5, 50), n=2)
    replay_b = row(0, 3, origin=Origin(T, 5, 51), n=3)
    replay_a_again = row(1, 9, origin=Origin(T, 5, 50), n=2)  # the job's re-run sent it twice
    rows = [first, replay_a, replay_b, replay_a_again]
    ids = replay_identities(rows)
    assert set(ids) == {1, 2, 3}  # a first-time row is never checked
    assert ids[1] == EventKey("00000000-0000-4000-8000-000000000002", "pv", date(2026, 11, 27))
    kept, dropped = drop_stored_replays(rows, ids, stored=set())
    assert kept == [first, replay_a, replay_b] and dropped == [replay_a_again]
    kept, dropped = drop_stored_replays(rows, ids, stored={identity_of(replay_b)})
    assert kept == [first, replay_a] and dropped == [replay_b, replay_a_again]


def test_the_day_of_an_event_key_is_exact_at_midnight() -> None:
    last_ms_of_a_day = 1_795_737_599_999  # 2026-11-26T23:59:59.999Z
    assert event_key("i", "n", last_ms_of_a_day).day == date(2026, 11, 26)
    assert event_key("i", "n", last_ms_of_a_day + 1).day == date(2026, 11, 27)
    assert event_key("i", "n", 0).day == date(1970, 1, 1)
