"""The pure side of client moves (analytics_core.moves.plan): which request does what, the
order of the steps, and the verification that decides whether the old copy may be dropped."""

from __future__ import annotations

from analytics_core.moves.plan import (
    ORDER,
    AlreadyThere,
    EventsCheck,
    OpenMove,
    Refused,
    Resume,
    Start,
    Step,
    TableCount,
    chunk_buckets,
    decide,
    missing_identities,
    next_step,
    switched,
    verification_problems,
)

TARGETS = ["default", "ch2"]


def test_an_active_client_starts_a_move_from_its_current_target() -> None:
    assert decide("acme", "active", "default", "ch2", TARGETS, None) == Start("default")


def test_a_client_already_on_the_target_has_nothing_to_do() -> None:
    assert decide("acme", "active", "ch2", "ch2", TARGETS, None) == AlreadyThere()


def test_an_unfinished_move_is_resumed_only_towards_its_own_target() -> None:
    open_move = OpenMove("ch2", Step.SWITCHED)
    # The registry already says ch2 (switched): it is still a resume, not "already there".
    assert decide("acme", "active", "ch2", "ch2", TARGETS, open_move) == Resume()
    other = decide("acme", "active", "ch2", "default", TARGETS, open_move)
    assert isinstance(other, Refused)
    assert "unfinished move to 'ch2' (step switched)" in other.reason
    assert "abandon" not in other.reason  # switched: new events are there already
    early = decide("acme", "active", "default", "ch3", TARGETS, OpenMove("ch2", Step.COPIED))
    assert isinstance(early, Refused) and "or abandon it" in early.reason


def test_refusals_name_what_is_wrong() -> None:
    missing = decide("ghost", None, None, "ch2", TARGETS, None)
    assert isinstance(missing, Refused) and "no client 'ghost'" in missing.reason
    pending = decide("acme", "pending", "default", "ch2", TARGETS, None)
    assert isinstance(pending, Refused) and "only active clients move" in pending.reason
    unknown_dest = decide("acme", "active", "default", "ch9", TARGETS, None)
    assert isinstance(unknown_dest, Refused) and "'ch9' is not configured" in unknown_dest.reason
    # A client whose own target left the settings: named, never silently read elsewhere.
    gone = decide("acme", "active", "old", "ch2", TARGETS, None)
    assert isinstance(gone, Refused) and "'old' is not configured" in gone.reason


def test_steps_run_in_order_and_end_at_done() -> None:
    walked = [Step.STARTED]
    while (nxt := next_step(walked[-1])) is not None:
        walked.append(nxt)
    assert tuple(walked) == ORDER
    assert next_step(Step.ABANDONED) is None
    assert [switched(s) for s in ORDER] == [False, False, True, True, True, True, True]


def test_missing_identities_is_the_source_minus_the_destination() -> None:
    source = {("page_view", "a"): 1, ("page_view", "b"): 2, ("click", "a"): 1}
    dest = {("page_view", "a"): 1, ("signup", "z"): 1}
    assert missing_identities(source, dest) == [("click", "a"), ("page_view", "b")]


def test_verification_passes_when_every_source_event_is_in_the_destination() -> None:
    check = EventsCheck()
    # The destination holds more (events routed there after the switch): that is fine.
    check.add_chunk(
        {("e", "1"): 1, ("e", "2"): 2},
        {("e", "1"): 1, ("e", "2"): 1, ("e", "3"): 1},
        "2026-01-01",
    )
    assert check.to_dict() == {
        "source_rows": 3,
        "source_identities": 2,
        "source_event_ids": 2,
        "dest_event_ids_of_source": 2,
        "missing_identities": 0,
    }
    assert verification_problems(check, [TableCount("users", 5, 5)]) == []


def test_verification_fails_on_a_missing_event_or_a_table_that_differs() -> None:
    check = EventsCheck()
    check.add_chunk({("e", "1"): 1, ("e", "2"): 1}, {("e", "1"): 1}, "2026-01-01")
    problems = verification_problems(check, [TableCount("users", 5, 4)])
    assert problems[0].startswith("1 event(s) of the source are not in the destination")
    assert "2026-01-01 e 2" in problems[0]
    assert "the source has 2 distinct event id(s), the destination 1 of them" in problems[1]
    assert "table users: 5 row(s) on the source, 4 on the destination" in problems[2]


def test_days_are_split_into_chunks_of_bounded_size() -> None:
    assert chunk_buckets(0, 200_000) == 1
    assert chunk_buckets(200_000, 200_000) == 1
    assert chunk_buckets(200_001, 200_000) == 2
    assert chunk_buckets(1_000_000, 200_000) == 5
