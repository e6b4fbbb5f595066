"""The pure reconciliation: accounting + observations -> per-window report."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from analytics_core.reconciliation.model import (
    AccountedCount,
    DeadRange,
    LetterSighting,
    Observations,
    OffsetSpan,
    ProblemKind,
    RowGroup,
    ScanSummary,
    Stream,
)
from analytics_core.reconciliation.observed import merge_sightings
from analytics_core.reconciliation.reconcile import pick_window, reconcile
from analytics_core.reconciliation.render import text

W = 1_795_788_000  # an hour start
NOW = datetime.fromtimestamp(W + 1800, UTC)
G, T = "grp", "raw"
S0 = Stream(G, T, 0)


def acc(outcome: str, n: int, window: int = W, reason: str = "", age_s: float = 600):
    return AccountedCount(G, T, window, outcome, reason, n, NOW - timedelta(seconds=age_s))


def rows(n: int, *, window: int = W, ranged: bool = True, group: str = G, after: int = 0):
    return RowGroup(T, 0, group, ranged, after, window, n, 0, n)


def obs(**over: object) -> Observations:
    base: dict[str, object] = {
        "islands": (OffsetSpan(S0, 0, 100),),
        "client_spans": (OffsetSpan(S0, 0, 100),),
        "rows": (),
        "dead_ranges": (),
        "letters": (),
        "letter_scan": ScanSummary(True, 0, "ok"),
    }
    base.update(over)
    return Observations(**base)  # type: ignore[arg-type]


def run(accounted, observations, grace_s: float = 0.0):
    return reconcile(
        "acme", "client_acme", accounted, observations, now=NOW, horizon=W - 3600, grace_s=grace_s
    )


def test_balanced_window_passes() -> None:
    report = run([acc("routed", 10)], obs(rows=(rows(10),)))
    assert report.passed, report.problems
    (w,) = report.windows
    assert (w.consumed, w.rows_found, w.missing) == (10, 10, 0)
    assert "balanced" in text(report)


def test_deleted_rows_fail_with_client_window_and_count() -> None:
    report = run([acc("routed", 10)], obs(rows=(rows(7),)))
    assert not report.passed
    (p,) = report.problems
    assert p.kind is ProblemKind.MISSING_ROWS and p.count == 3 and p.window == W
    assert (
        "client acme" in p.message and "2026-11-27T14:00Z" in p.message and "3 routed" in p.message
    )
    assert report.to_dict()["problems"][0]["count"] == 3


def test_open_window_is_not_judged_until_grace_passes() -> None:
    report = run([acc("routed", 10, age_s=30)], obs(rows=(rows(7),)), grace_s=300)
    assert report.passed and not report.windows[0].judged
    assert report.totals()["windows_open"] == 1


def test_extra_rows_and_rows_in_gap_and_in_flight() -> None:
    islands = (OffsetSpan(S0, 0, 50), OffsetSpan(S0, 60, 100))
    groups = (
        rows(10),
        rows(2, ranged=False, after=50),  # in the gap [50, 60)
        rows(4, ranged=False, after=100),  # after the last range: in flight
    )
    report = run([acc("routed", 8)], obs(islands=islands, rows=groups))
    kinds = sorted(p.kind.value for p in report.problems)
    assert kinds == ["extra_rows", "offset_gap", "unaccounted_rows"]
    assert report.in_flight_rows == 4
    (gap,) = report.gaps
    assert (gap.start, gap.end, gap.rows_inside, gap.relevant) == (50, 60, 2, True)


def test_gap_outside_the_clients_span_is_not_its_problem() -> None:
    islands = (OffsetSpan(S0, 0, 50), OffsetSpan(S0, 60, 100))
    report = run(
        [acc("routed", 5)],
        obs(islands=islands, client_spans=(OffsetSpan(S0, 60, 100),), rows=(rows(5),)),
    )
    assert report.passed
    assert not report.gaps[0].relevant


def test_overlapping_ranges_and_two_groups_are_problems() -> None:
    other = Stream("other", T, 0)
    islands = (OffsetSpan(S0, 0, 50), OffsetSpan(S0, 40, 100))
    spans = (OffsetSpan(S0, 0, 100), OffsetSpan(other, 10, 20))
    report = run([acc("routed", 5)], obs(islands=islands, client_spans=spans, rows=(rows(5),)))
    assert [p.kind for p in report.problems] == [ProblemKind.OVERLAP, ProblemKind.OVERLAP]
    assert "two consumer groups" in report.problems[1].message


def test_rows_with_no_range_at_all_are_unaccounted() -> None:
    report = run([], obs(islands=(), client_spans=(), rows=(rows(3, ranged=False, group=""),)))
    (p,) = report.problems
    assert p.kind is ProblemKind.UNACCOUNTED_ROWS and p.count == 3


def letter(offset: int, *, parked: bool = False, on_topic: bool = True, bi: int | None = 0):
    return LetterSighting(T, 0, offset, bi, "client_inactive", NOW, on_topic, parked)


def test_dead_letters_found_on_topic_and_parked_balance() -> None:
    dr = DeadRange(S0, 10, 20, {W: 2})
    report = run(
        [acc("routed", 5), acc("dead_lettered", 2, reason="client_inactive")],
        obs(rows=(rows(5),), dead_ranges=(dr,), letters=(letter(11), letter(12, parked=True))),
    )
    assert report.passed, report.problems
    (w,) = report.windows
    assert (w.dead_lettered_accounted, w.letters_found, w.parked) == (2, 2, 1)
    assert w.dead_lettered_by_reason == {"client_inactive": 2}


def test_missing_dead_letter_fails_unless_the_scan_was_incomplete() -> None:
    dr = DeadRange(S0, 10, 20, {W: 2})
    accounted = [acc("dead_lettered", 2, reason="client_inactive")]
    report = run(accounted, obs(dead_ranges=(dr,), letters=(letter(11),)))
    assert [p.kind for p in report.problems] == [ProblemKind.MISSING_DEAD_LETTERS]
    partial = run(
        accounted,
        obs(dead_ranges=(dr,), letters=(letter(11),), letter_scan=ScanSummary(False, 9, "cut")),
    )
    assert partial.passed
    assert any("not verified" in n for n in partial.notes)


def test_letters_outside_dead_ranges() -> None:
    islands = (OffsetSpan(S0, 0, 50), OffsetSpan(S0, 60, 100))
    report = run(
        [],
        obs(islands=islands, letters=(letter(5), letter(55), letter(500))),
    )
    kinds = sorted(p.kind.value for p in report.problems)
    # 5: inside a range that counted no letter of the client; 55: in a gap; 500: in flight.
    assert kinds == ["extra_dead_letters", "offset_gap", "unaccounted_dead_letters"]
    assert report.in_flight_letters == 1


def test_window_of_a_range_across_an_hour_boundary() -> None:
    assert pick_window([W], W + 3600) == W  # a crash re-read: the range decides
    assert pick_window([W, W + 3600], W + 3600) == W + 3600
    assert pick_window([W, W + 3600], W - 3600) == W
    assert pick_window([], W) == W


def test_windows_before_the_horizon_are_skipped() -> None:
    report = run([acc("routed", 4, window=W - 7200)], obs(rows=(rows(1, window=W - 7200),)))
    assert report.passed and report.windows == ()


def test_merge_sightings_counts_one_failed_copy_once() -> None:
    a = letter(11)
    dup = letter(11)  # a crash re-read dead-lettered the same copy again
    parked = letter(11, parked=True, on_topic=False)
    other = letter(11, bi=1)
    merged = merge_sightings([a, dup, other], [parked])
    assert len(merged) == 2
    assert {(m.batch_index, m.parked) for m in merged} == {(0, True), (1, False)}
