"""Exponential backoff for retries after outages (pure)."""

from __future__ import annotations

from collections.abc import Iterable
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


class PartitionBackoffs:
    """A `Backoff` per partition waiting out a registry outage: a partition stuck on an
    uncached client doubles its own wait (and logs that often) while the others flow; one
    that made progress starts from `base` again."""

    def __init__(self, base: float, cap: float) -> None:
        self._base, self._cap = base, cap
        self._by_partition: dict[int, Backoff] = {}

    def next_delay(self, partition: int) -> float:
        backoff = self._by_partition.get(partition)
        if backoff is None:
            backoff = self._by_partition[partition] = Backoff(self._base, self._cap)
        return backoff.next_delay()

    def progressed(self, partitions: Iterable[int], rewound: Iterable[int]) -> None:
        """`partitions` had messages in a poll; those not `rewound` got past their wait."""
        if self._by_partition:
            stuck = set(rewound)
            for p in partitions:
                if p not in stuck:
                    self._by_partition.pop(p, None)

    def forget(self, partition: int) -> None:
        self._by_partition.pop(partition, None)
