"""The circuit breaker in front of Redis and PostgreSQL lookups (pure, fake clock)."""

from __future__ import annotations

from analytics_core.circuit_breaker import CircuitBreaker, State


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_n_consecutive_failures_and_skips_calls() -> None:
    clock = Clock()
    b = CircuitBreaker(failures_to_open=3, retry_after_s=5.0, clock=clock)
    for _ in range(2):
        assert b.allow()
        b.failed()
    assert b.state is State.CLOSED
    b.succeeded()  # a success in between resets the count
    for _ in range(3):
        assert b.allow()
        b.failed()
    assert b.state is State.OPEN and b.times_opened == 1
    clock.now += 4.9
    assert not b.allow()  # skipped: the caller falls back at once


def test_one_probe_after_the_delay_closes_or_reopens() -> None:
    clock = Clock()
    b = CircuitBreaker(failures_to_open=1, retry_after_s=5.0, clock=clock)
    b.failed()
    clock.now += 5.0
    assert b.allow() and b.state is State.HALF_OPEN
    assert not b.allow()  # only one probe at a time
    b.failed()  # the probe failed: open for another delay
    assert b.state is State.OPEN and b.times_opened == 1
    clock.now += 4.0
    assert not b.allow()
    clock.now += 1.0
    assert b.allow()
    b.succeeded()
    assert b.state is State.CLOSED and b.allow() and b.allow()


def test_an_opening_may_last_longer_than_the_usual_delay() -> None:
    """A timed-out call (hung server) holds the circuit open for its own, longer wait; the
    next ordinary failure goes back to the usual delay."""
    clock = Clock()
    b = CircuitBreaker(failures_to_open=3, retry_after_s=1.0, clock=clock)
    b.failed(at_once=True, hold_s=5.0)
    assert b.state is State.OPEN
    clock.now += 4.9
    assert not b.allow()
    clock.now += 0.1
    assert b.allow()  # the probe
    b.failed()  # an ordinary failure: open again for retry_after_s
    clock.now += 1.0
    assert b.allow()
    b.succeeded()
    assert b.state is State.CLOSED and b.hold_s is None
