"""Exponential backoff for retries after outages (pure)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Backoff:
    """`base`, then doubling up to `cap`; `reset` after a success."""

    base: float
    cap: float
    current: float = 0.0

    def next_delay(self) -> float:
        self.current = self.base if self.current == 0 else min(self.current * 2, self.cap)
        return self.current

    def reset(self) -> None:
        self.current = 0.0


def delay_for_attempt(attempt: int, base: float, cap: float) -> float:
    """The wait before retry number `attempt` (1-based) of one batch."""
    return min(base * 2 ** max(0, attempt - 1), cap)
