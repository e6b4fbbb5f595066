"""The fate of a dead letter: pure rules, every reason and client state covered."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from analytics_core.clients import ClientStatus
from analytics_core.dead_letter import DeadLetter
from analytics_core.dlq.classify import (
    Defer,
    Park,
    ParkCause,
    Policy,
    Replay,
    Selection,
    classify,
    parse_failed_at,
)
from analytics_core.event_contract import Origin
from analytics_core.reasons import RECOVERABLE, Reason

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
POLICY = Policy()


def letter(reason: Reason = Reason.CLIENT_INACTIVE, **over: object) -> DeadLetter:
    base = DeadLetter(
        reason=reason,
        detail="router detail",
        origin=Origin("shared_raw_events", 1, 10),
        source=Origin("shared_raw_events", 1, 10),
        batch_index=0,
        client_id="acme",
        event_id="e-1",
        first_failed_at="2026-05-01T11:00:00.000Z",
        attempt=1,
        router_version="1",
    )
    return replace(base, **over)  # type: ignore[arg-type]


@pytest.mark.parametrize("reason", sorted(set(Reason) - RECOVERABLE))
def test_permanent_reasons_are_parked_whatever_the_client(reason: Reason) -> None:
    for status in (None, *ClientStatus):
        verdict = classify(letter(reason), status, POLICY, NOW)
        assert verdict == Park(
            ParkCause.PERMANENT_REASON, f"{reason.value} does not heal by itself"
        )


@pytest.mark.parametrize("reason", sorted(RECOVERABLE))
def test_recoverable_reason_for_an_active_client_is_replayed(reason: Reason) -> None:
    assert classify(letter(reason), ClientStatus.ACTIVE, POLICY, NOW) == Replay()


@pytest.mark.parametrize("status", [None, ClientStatus.PENDING, ClientStatus.FAILED])
def test_client_not_active_yet_is_deferred(status: ClientStatus | None) -> None:
    verdict = classify(letter(Reason.UNKNOWN_CLIENT), status, POLICY, NOW)
    assert isinstance(verdict, Defer)
    assert (status.value if status else "not registered") in verdict.detail


@pytest.mark.parametrize("status", [ClientStatus.DEPROVISIONING, ClientStatus.DEPROVISIONED])
def test_client_gone_is_parked(status: ClientStatus) -> None:
    verdict = classify(letter(), status, POLICY, NOW)
    assert isinstance(verdict, Park) and verdict.cause is ParkCause.CLIENT_GONE


def test_attempt_limit_parks_instead_of_looping() -> None:
    assert classify(letter(attempt=4), ClientStatus.ACTIVE, POLICY, NOW) == Replay()
    verdict = classify(letter(attempt=5), ClientStatus.ACTIVE, POLICY, NOW)
    assert verdict == Park(ParkCause.MAX_ATTEMPTS, "failed 5 times; the limit is 5")
    assert classify(letter(attempt=2), ClientStatus.ACTIVE, Policy(max_attempts=2), NOW) == Park(
        ParkCause.MAX_ATTEMPTS, "failed 2 times; the limit is 2"
    )
    with pytest.raises(ValueError):
        Policy(max_attempts=0)


def test_waiting_too_long_for_a_client_parks() -> None:
    old = letter(first_failed_at="2026-04-20T11:00:00Z")
    verdict = classify(old, ClientStatus.PENDING, POLICY, NOW)
    assert isinstance(verdict, Park) and verdict.cause is ParkCause.WAITED_TOO_LONG
    assert isinstance(
        classify(old, ClientStatus.PENDING, Policy(max_wait=timedelta(days=30)), NOW), Defer
    )
    # An unreadable failure time never expires a record by itself.
    assert isinstance(classify(letter(first_failed_at="?"), None, POLICY, NOW), Defer)


def test_recoverable_letter_without_client_id_is_parked() -> None:
    verdict = classify(letter(client_id=None), None, POLICY, NOW)
    assert isinstance(verdict, Park) and verdict.cause is ParkCause.NO_CLIENT_ID


def test_failed_at_parsing() -> None:
    assert parse_failed_at("2026-05-01T11:00:00.123Z") == datetime(
        2026, 5, 1, 11, 0, 0, 123000, tzinfo=UTC
    )
    assert parse_failed_at("2026-05-01T11:00:00") == datetime(2026, 5, 1, 11, tzinfo=UTC)
    assert parse_failed_at("yesterday") is None


def test_selection() -> None:
    everything = Selection()
    assert not everything.filtered and everything.selects(letter()) and everything.selects(None)
    acme = Selection(client_id="acme")
    assert acme.filtered and acme.selects(letter()) and not acme.selects(None)
    assert not acme.selects(letter(client_id="other"))
    inactive = Selection(reason=Reason.CLIENT_INACTIVE)
    assert inactive.selects(letter()) and not inactive.selects(letter(Reason.INVALID_JSON))
    both = Selection("acme", Reason.UNKNOWN_CLIENT)
    assert not both.selects(letter()) and both.selects(letter(Reason.UNKNOWN_CLIENT))
    assert both.describe() == "client acme and reason unknown_client"
    assert everything.describe() == "all dead letters"
