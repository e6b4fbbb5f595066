"""Producer duplicates in reconciliation (pure): stored copies count, collapsed copies are
proven from the message read back, and neither is ever reported as missing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import orjson

from analytics_core.reconciliation.duplicates import (
    EventKey,
    ReadMessage,
    RoutedCopy,
    collapsed,
    copies_in_message,
    vacant_copies,
)
from analytics_core.reconciliation.model import (
    AccountedCount,
    CollapsedCopy,
    CountedRange,
    Observations,
    OffsetSpan,
    ProblemKind,
    RangeFinder,
    RowGroup,
    ScanSummary,
    Stream,
)
from analytics_core.reconciliation.reconcile import reconcile
from analytics_core.reconciliation.render import text

W = 1_795_788_000  # an hour start
NOW = datetime.fromtimestamp(W + 1800, UTC)
T = "raw"
S0 = Stream("grp", T, 0)
ID = str(uuid.uuid4())
TS_MS = (W + 60) * 1000
KEY = EventKey(ID, "dup_test", datetime.fromtimestamp(W + 60, UTC).date())


def report(routed: int, stored: int, *, dups: int = 0, collapsed_copies: int = 0):
    accounted = [AccountedCount("grp", T, W, "routed", "", routed, NOW - timedelta(seconds=600))]
    obs = Observations(
        islands=(OffsetSpan(S0, 0, 100),),
        client_spans=(OffsetSpan(S0, 0, 100),),
        rows=(RowGroup(T, 0, "grp", True, 100, W, stored, 0, stored, duplicates=dups),),
        dead_ranges=(),
        letters=(),
        letter_scan=ScanSummary(True, 0, "ok"),
        collapsed=tuple(CollapsedCopy(T, 0, i, 0, W) for i in range(collapsed_copies)),
    )
    return reconcile("acme", "client_acme", accounted, obs, now=NOW, horizon=W, grace_s=0)


def test_stored_duplicates_count_as_rows_and_are_reported() -> None:
    r = report(7, 7, dups=2)
    assert r.passed, r.problems
    (w,) = r.windows
    assert (w.rows_found, w.duplicates_stored, w.duplicates_collapsed, w.missing) == (7, 2, 0, 0)
    assert "duplicates collapsed: 0 by merges, 2 still stored" in text(r)


def test_collapsed_duplicates_explain_the_shortfall_after_a_merge() -> None:
    r = report(7, 5, collapsed_copies=2)
    assert r.passed, r.problems
    assert r.totals()["duplicates_collapsed"] == 2
    assert "duplicates collapsed: 2" in text(r)


def test_collapsed_duplicates_never_hide_a_loss_nor_make_extras() -> None:
    lost = report(7, 4, collapsed_copies=2)
    (problem,) = lost.problems
    assert problem.kind is ProblemKind.MISSING_ROWS and problem.count == 1
    assert "+ 2 duplicate(s) collapsed by merges" in problem.message
    capped = report(7, 6, collapsed_copies=2)  # more proven than the shortfall: capped
    assert capped.passed and capped.totals()["duplicates_collapsed"] == 1


def message(offset: int, doc: object, *, replay: bool = False) -> ReadMessage:
    return ReadMessage(T, 0, offset, orjson.dumps(doc), TS_MS, replay)


def doc(client_id: str = "acme", event_id: str = ID) -> dict[str, object]:
    return {
        "client_id": client_id,
        "api_key": "k" * 32,
        "event_id": event_id,
        "event_name": "dup_test",
        "timestamp": TS_MS,
        "user_id": "u1",
        "properties": {},
    }


RANGE = CountedRange(S0, 10, 20, {W: 3})
FINDER = RangeFinder([RANGE])


def test_copies_in_message_reads_the_clients_events_with_their_key_and_window() -> None:
    other = str(uuid.uuid4())
    (copy,) = copies_in_message(message(12, doc()), "acme", FINDER)
    assert copy == RoutedCopy((T, 0, 12, 0), KEY, W)
    batch = copies_in_message(
        message(13, [doc(), doc("other"), doc(event_id=other)]), "acme", FINDER
    )
    assert [c.coordinates[3] for c in batch] == [0, 2]
    # Outside every range that counted the client, replays and other clients: no copy.
    assert copies_in_message(message(25, doc()), "acme", FINDER) == []
    assert copies_in_message(message(12, doc(), replay=True), "acme", FINDER) == []
    assert copies_in_message(message(12, doc("other")), "acme", FINDER) == []


def test_event_ids_without_dashes_match_the_stored_canonical_form() -> None:
    (copy,) = copies_in_message(message(12, doc(event_id=ID.replace("-", ""))), "acme", FINDER)
    assert copy.key == KEY


def test_only_vacant_copies_of_stored_events_are_collapsed() -> None:
    first = RoutedCopy((T, 0, 11, 0), KEY, W)
    retry = RoutedCopy((T, 0, 15, 0), KEY, W)
    dead = RoutedCopy((T, 0, 16, 0), KEY, W)
    gone = RoutedCopy((T, 0, 17, 0), EventKey(str(uuid.uuid4()), "dup_test", KEY.day), W)
    renamed = RoutedCopy((T, 0, 18, 0), EventKey(ID, "other_name", KEY.day), W)
    vacant = vacant_copies(
        [first, retry, dead, gone, renamed], stored={(T, 0, 11, 0)}, letters={(T, 0, 16, None)}
    )
    assert vacant == [retry, gone, renamed]
    # Only the copy whose sort key is stored elsewhere collapsed; the others are lost.
    assert collapsed(vacant, {KEY}) == [CollapsedCopy(T, 0, 15, 0, W)]


def test_the_range_finder_finds_the_range_holding_an_offset_among_thousands() -> None:
    other = Stream("g2", T, 0)
    ranges = [CountedRange(S0, 10 * i, 10 * i + 10, {W: 1}) for i in range(5000)]
    ranges.append(CountedRange(other, 5, 30_000, {W: 1}))  # another group's range overlaps
    ranges.append(CountedRange(S0, 20, 25, {W: 2}))  # a second row over one range's offsets
    finder = RangeFinder(reversed(ranges))
    assert finder.find(T, 0, 12_345) == ranges[1234]
    assert finder.find(T, 0, 49_999) == ranges[4999]
    assert finder.find(T, 0, 50_000) is None and finder.find(T, 1, 12) is None
    assert finder.find(T, 0, 3) == ranges[0]
    found = finder.find(T, 0, 22)
    assert found is not None and found.first_offset <= 22 < found.next_offset
