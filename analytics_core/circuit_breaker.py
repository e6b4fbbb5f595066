"""A circuit breaker for calls to a server that may be down (pure: the clock is injected).

States: CLOSED, calls go through; after `failures_to_open` consecutive failures, OPEN:
calls are skipped (the caller takes its fallback at once instead of waiting for a
timeout); after `retry_after_s`, HALF_OPEN: exactly one call (the probe) goes through, and
its success closes the circuit, its failure opens it again for another `retry_after_s`.

Invariant: while a server is down, the time callers spend waiting on it is at most one
timeout per `retry_after_s`, whatever the call rate. Not thread-safe: one caller thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass
class CircuitBreaker:
    failures_to_open: int = 3
    retry_after_s: float = 5.0
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False
    times_opened: int = 0
    hold_s: float | None = None  # this opening's wait, when not retry_after_s

    @property
    def state(self) -> State:
        if self.opened_at is None:
            return State.CLOSED
        return State.HALF_OPEN if self.probing else State.OPEN

    def allow(self) -> bool:
        """May a call be made now? In HALF_OPEN the one allowed call is the probe."""
        if self.opened_at is None:
            return True
        if self.probing:
            return False  # the probe's outcome is not known yet
        hold = self.retry_after_s if self.hold_s is None else self.hold_s
        if self.clock() - self.opened_at >= hold:
            self.probing = True
            return True
        return False

    def succeeded(self) -> None:
        self.failures = 0
        self.opened_at = None
        self.probing = False
        self.hold_s = None

    def failed(self, *, at_once: bool = False, hold_s: float | None = None) -> None:
        """One more failed call; `at_once` opens the circuit now (a call that timed out:
        a hung server would cost each of the next calls the same wait), and `hold_s`, when
        given, is how long that opening lasts instead of `retry_after_s`."""
        self.failures += 1
        if at_once or self.probing or self.failures >= self.failures_to_open:
            if self.opened_at is None:
                self.times_opened += 1
            self.opened_at = self.clock()
            self.probing = False
            self.hold_s = hold_s
