"""The accounting window and count keys, written once (`analytics_core.reconciliation.window`)
for the router, which writes accounting rows, and reconciliation, which reads them."""

from __future__ import annotations

from datetime import UTC, datetime

from analytics_core.reconciliation import window
from analytics_core.reconciliation.window import (
    DEAD_LETTERED,
    ROUTED,
    WINDOW_SECONDS,
    CountKey,
    count_key,
    hour_of,
    parse_count_key,
    window_label,
    window_of,
)
from router import accounting

HOUR = 1_795_788_000  # 2026-11-27T14:00Z, an hour start


def test_a_window_is_the_hour_of_the_receive_time() -> None:
    assert WINDOW_SECONDS == 3600
    assert window_of(HOUR * 1000) == HOUR
    assert window_of(HOUR * 1000 + 3_599_999) == HOUR  # the last millisecond of the hour
    assert window_of((HOUR + 3600) * 1000) == HOUR + 3600
    assert window_label(HOUR) == "2026-11-27T14:00Z"


def test_hour_of_a_datetime_is_the_same_window() -> None:
    inside = datetime.fromtimestamp(HOUR + 1799.9, UTC)
    assert hour_of(inside) == window_of(int(inside.timestamp() * 1000)) == HOUR
    assert hour_of(datetime.fromtimestamp(HOUR - 0.5, UTC)) == HOUR - 3600


def test_count_keys_round_trip_and_malformed_keys_are_refused() -> None:
    for outcome, reason in ((ROUTED, ""), (DEAD_LETTERED, "schema_violation")):
        key = count_key("acme", outcome, reason, HOUR)
        assert parse_count_key(key) == CountKey("acme", outcome, reason, HOUR)
    assert parse_count_key("bad|key") is None
    assert parse_count_key("a|other|x|1") is None  # unknown outcome
    assert parse_count_key("a|routed||not-a-number") is None


def test_the_router_uses_the_one_definition() -> None:
    assert accounting.window_of is window.window_of
    assert (accounting.ROUTED, accounting.DEAD_LETTERED) == (ROUTED, DEAD_LETTERED)
    assert accounting.map_key(("acme", ROUTED, "", HOUR)) == count_key("acme", ROUTED, "", HOUR)
