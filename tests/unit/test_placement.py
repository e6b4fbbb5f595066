"""The placement policy (analytics_core.placement): explicit targets, fewest clients, ties,
and targets that are not configured."""

from __future__ import annotations

from analytics_core.placement import Placed, PlacementRefused, place, unknown_target_problem

TARGETS = ["default", "ch2", "ch3"]


def test_an_explicit_target_is_used_when_configured() -> None:
    placed = place(TARGETS, {"default": 0, "ch2": 9}, requested="ch2")
    assert placed == Placed("ch2", "requested")


def test_an_unknown_explicit_target_is_refused_naming_it_and_the_configured_ones() -> None:
    refused = place(TARGETS, {}, requested="ch9")
    assert isinstance(refused, PlacementRefused)
    assert "'ch9' is not configured" in refused.reason
    assert "default, ch2, ch3" in refused.reason
    assert "CLICKHOUSE_CH9_" in refused.reason


def test_without_a_request_the_target_with_the_fewest_clients_wins() -> None:
    placed = place(TARGETS, {"default": 5, "ch2": 3, "ch3": 4})
    assert isinstance(placed, Placed) and placed.target == "ch2"
    assert placed.why == "fewest clients (default: 5, ch2: 3, ch3: 4)"


def test_a_target_with_no_client_counts_zero_and_ties_go_to_the_first_listed() -> None:
    assert place(TARGETS, {"default": 1}) == Placed(
        "ch2", "fewest clients (default: 1, ch2: 0, ch3: 0)"
    )
    tied = place(TARGETS, {"default": 2, "ch2": 2, "ch3": 2})
    assert isinstance(tied, Placed) and tied.target == "default"


def test_clients_on_targets_no_longer_configured_do_not_attract_new_ones() -> None:
    placed = place(["default", "ch2"], {"default": 1, "ch2": 1, "gone": 0})
    assert isinstance(placed, Placed) and placed.target == "default"


def test_a_single_server_setup_places_everything_on_default() -> None:
    assert place(["default"], {"default": 1000}) == Placed(
        "default", "fewest clients (default: 1000)"
    )


def test_no_configured_target_is_refused() -> None:
    assert isinstance(place([], {}), PlacementRefused)


def test_unknown_target_problem_is_none_for_a_configured_target() -> None:
    assert unknown_target_problem("ch2", TARGETS) is None
    problem = unknown_target_problem("ch4", TARGETS)
    assert problem is not None and "ch4" in problem
