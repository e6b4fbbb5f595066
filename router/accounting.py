"""What the router consumed, per committed offset range, with every event's fate (pure).

Invariants:
- every consumed message of a partition lands in exactly one range; ranges of a
  partition are contiguous: [start, next) then [next, ...);
- a range is only emitted for offsets being committed, i.e. when every event in it has a
  durable fate, and it counts each fate as it became durable (router.offsets: a routed row
  when its insert succeeded or it was found stored, a dead letter when the broker took it,
  so a routed event that ends as a `destination_error` dead letter counts as that);
- the range row is written before the offset commit, with a deduplication token;
  after a crash the replayed range starts at the same offset and replaces it;
- nothing is kept per event: the counts live in the offset tracker's segments until their
  commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

# The window and the count keys are reconciliation's contract: defined once, in the pure core.
from analytics_core.reconciliation.window import DEAD_LETTERED as DEAD_LETTERED
from analytics_core.reconciliation.window import ROUTED as ROUTED
from analytics_core.reconciliation.window import count_key
from analytics_core.reconciliation.window import window_of as window_of

if TYPE_CHECKING:
    from router.offsets import OffsetTracker

# (client_id or "", outcome, reason or "", window_start_unix)
FateKey = tuple[str, str, str, int]


def map_key(key: FateKey) -> str:
    return count_key(*key)


@dataclass
class RangeRow:
    topic: str
    partition: int
    first_offset: int
    next_offset: int
    messages: int
    events: int
    counts: dict[str, int]

    def token(self) -> str:
        return f"acct:{self.topic}:{self.partition}:{self.first_offset}:{self.next_offset}"


class Accounting:
    def __init__(self, topic: str, tracker: OffsetTracker) -> None:
        self.topic = topic
        self._tracker = tracker
        self._start: dict[int, int | None] = {}

    def assigned(self, partition: int, committed: int | None) -> None:
        """Start accounting a partition at its committed offset (None: first offset seen)."""
        self._start[partition] = committed

    def revoked(self, partition: int) -> None:
        self._start.pop(partition, None)

    def rows_for(self, commits: dict[int, int]) -> list[RangeRow]:
        """Range rows for partitions whose committed offset moves to `commits[p]`."""
        rows = []
        for partition, next_offset in commits.items():
            segments = self._tracker.committed_segments((self.topic, partition), next_offset)
            start = self._start.get(partition)
            if start is None and segments:
                start = segments[0].first
            if start is None or next_offset <= start:
                continue
            tally: dict[FateKey, int] = {}
            messages = events = 0
            for seg in segments:
                messages += seg.messages
                events += seg.events
                for key, n in seg.tally.items():
                    tally[key] = tally.get(key, 0) + n
            counts = {map_key(k): n for k, n in tally.items() if n}
            rows.append(
                RangeRow(self.topic, partition, start, next_offset, messages, events, counts)
            )
        return rows

    def committed(self, commits: dict[int, int]) -> None:
        """The rows were written and the offsets committed: start the next ranges."""
        for partition, next_offset in commits.items():
            self._start[partition] = next_offset
