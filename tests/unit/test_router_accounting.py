"""Router accounting ranges (pure)."""

from __future__ import annotations

from router.accounting import DEAD_LETTERED, ROUTED, Accounting, map_key, window_of
from router.offsets import OffsetTracker

W = window_of(1_795_771_234_567)


def test_window_is_the_hour_of_receipt() -> None:
    assert W % 3600 == 0 and 0 <= 1_795_771_234 - W < 3600


def test_ranges_are_contiguous_and_count_every_fate() -> None:
    t = OffsetTracker()
    a = Accounting("raw", t)
    a.assigned(0, 100)
    first = t.open(("raw", 0), 100, W)  # one poll: offsets 100, 101
    first.add(100, 1)
    first.add(101, 2)  # batch message
    first.done(2, "acme", ROUTED)
    first.done(1, "beta", ROUTED)
    second = t.open(("raw", 0), 102, W)  # the next poll: offset 102
    second.add(102, 1)
    t.ack(("raw", 0), 102, "", DEAD_LETTERED, "invalid_json")
    [row] = a.rows_for({0: 102})
    assert (row.first_offset, row.next_offset, row.messages, row.events) == (100, 102, 2, 3)
    assert row.counts == {map_key(("acme", ROUTED, "", W)): 2, map_key(("beta", ROUTED, "", W)): 1}
    t.mark_committed({("raw", 0): 102})
    a.committed({0: 102})
    [row] = a.rows_for({0: 103})
    assert (row.first_offset, row.next_offset) == (102, 103)
    assert row.counts == {f"|dead_lettered|invalid_json|{W}": 1}
    assert row.token() == "acct:raw:0:102:103"


def test_a_routed_event_that_ends_dead_lettered_is_counted_as_that() -> None:
    t = OffsetTracker()
    a = Accounting("raw", t)
    a.assigned(1, None)
    t.open(("raw", 1), 7, W).add(7, 1)
    # Its batch was refused until it gave up: the row's letter is its durable fate.
    t.ack(("raw", 1), 7, "acme", DEAD_LETTERED, "destination_error")
    [row] = a.rows_for({1: 8})
    assert row.first_offset == 7  # no committed offset: starts at the first offset seen
    assert row.counts == {f"acme|dead_lettered|destination_error|{W}": 1}


def test_no_row_when_the_offset_does_not_move_and_revocation_forgets() -> None:
    t = OffsetTracker()
    a = Accounting("raw", t)
    a.assigned(2, 50)
    assert a.rows_for({2: 50}) == []
    t.open(("raw", 2), 50, W).add(50, 1)
    a.revoked(2)
    t.forget(("raw", 2))
    assert a.rows_for({2: 51}) == []
