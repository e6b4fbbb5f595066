"""Which Kafka offsets may be committed, and what every committed message became (pure).

Bookkeeping is per **segment**, not per message: a segment is the run of one partition's
messages consumed in one poll, `[first, next)`. It counts its messages, its events, and its
parts still to acknowledge (a part is one routed row, acknowledged by a ClickHouse insert,
or one dead letter, acknowledged by the broker); a client buffer records how many rows of
each segment it holds, so an insert acknowledges a whole segment's share at once and the
router keeps no per-event objects for the commit.

Invariants (the delivery guarantee):
- the committable offset of a partition is the `first` of its oldest segment with a part
  not yet acknowledged, or one past the highest offset seen when nothing is outstanding;
  so a commit never passes an event whose fate is not durable (it may stop short of a
  durable one by at most one poll's messages, until the rest of its segment is durable);
- commits fall on segment boundaries, so the accounting range of a commit is a whole
  number of segments: a segment tallies each fate when it becomes durable
  (`FateKey`: client, outcome, reason, hour window), and its tally is written before the
  offsets pass it (router.accounting, router.commits);
- segments of a partition are in offset order and never overlap: a rewind (registry outage)
  re-reads only offsets past the last segment's end;
- `skip_to` moves a partition past offsets that hold no message for this consumer
  (transaction markers, aborted transactions) only beyond every offset seen: it never
  passes a consumed message.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field

from router.accounting import FateKey

TopicPartition = tuple[str, int]


@dataclass(eq=False, slots=True)
class Segment:
    """One poll's messages of one partition (see the module doc)."""

    partition: int
    first: int
    next: int  # one past its last offset
    window: int  # the hour the poll was received in (accounting)
    left: int = 0  # parts not acknowledged yet
    messages: int = 0
    events: int = 0
    tally: dict[FateKey, int] = field(default_factory=dict)  # durable fates so far

    def add(self, offset: int, parts: int) -> None:
        """A consumed message of this run with `parts` fates to wait for."""
        self.next = offset + 1
        self.left += parts
        self.messages += 1
        self.events += parts

    def done(self, n: int, client_id: str, outcome: str, reason: str = "") -> None:
        """`n` parts of this segment became durable with this fate."""
        self.left -= n
        key = (client_id, outcome, reason, self.window)
        self.tally[key] = self.tally.get(key, 0) + n


@dataclass
class _PartitionState:
    segments: list[Segment] = field(default_factory=list)  # offset order, not yet committed
    next_offset: int | None = None  # one past the highest offset seen
    committed: int | None = None


class OffsetTracker:
    def __init__(self) -> None:
        self._parts: dict[TopicPartition, _PartitionState] = {}

    def open(self, tp: TopicPartition, offset: int, window: int) -> Segment:
        """Start the segment of a poll's messages of `tp`, its first at `offset`."""
        state = self._parts.get(tp)
        if state is None:
            state = self._parts[tp] = _PartitionState()
        seg = Segment(tp[1], offset, offset, window)
        state.segments.append(seg)
        return seg

    def segment_of(self, tp: TopicPartition, offset: int) -> Segment | None:
        """The segment holding `offset` (None: revoked, or committed already)."""
        state = self._parts.get(tp)
        if state is None:
            return None
        segs = state.segments
        i = bisect_right(segs, offset, key=lambda s: s.first) - 1
        if i >= 0 and segs[i].first <= offset < segs[i].next:
            return segs[i]
        return None

    def ack(
        self, tp: TopicPartition, offset: int, client_id: str, outcome: str, reason: str = ""
    ) -> None:
        """One part of the message at `offset` became durable (a letter, a row found stored)."""
        seg = self.segment_of(tp, offset)
        if seg is not None:  # else revoked meanwhile: its state was dropped
            seg.done(1, client_id, outcome, reason)

    def first_offset(self, tp: TopicPartition) -> int | None:
        """The first offset of the oldest segment not committed yet (None: no segment)."""
        state = self._parts.get(tp)
        return state.segments[0].first if state is not None and state.segments else None

    def positions(self) -> dict[TopicPartition, int]:
        """The committable offset of every partition, advanced or not."""
        out: dict[TopicPartition, int] = {}
        for tp, state in self._parts.items():
            for seg in state.segments:
                if seg.next > (state.next_offset or 0):
                    state.next_offset = seg.next
                if seg.left > 0:
                    out[tp] = seg.first
                    break
            else:
                if state.next_offset is not None:
                    out[tp] = state.next_offset
        return out

    def skip_to(self, tp: TopicPartition, offset: int) -> bool:
        """The consumer's position is `offset` and every message below it was consumed:
        the offsets past the highest one seen hold nothing for this consumer (a transaction's
        commit or abort marker, aborted messages). True when that moved the partition on."""
        state = self._parts.get(tp)
        if state is None:
            state = self._parts[tp] = _PartitionState()
        seen = [o for o in (state.next_offset, state.committed) if o is not None]
        if state.segments:
            seen.append(state.segments[-1].next)  # offset order: the last one ends highest
        if seen and offset <= max(seen):
            return False
        state.next_offset = offset
        return True

    def committable(self) -> dict[TopicPartition, int]:
        """Offsets that advanced since the last `mark_committed`."""
        return {
            tp: target
            for tp, target in self.positions().items()
            if (committed := self._parts[tp].committed) is None or target > committed
        }

    def committed_segments(self, tp: TopicPartition, offset: int) -> list[Segment]:
        """The segments a commit at `offset` covers (what its accounting range counts)."""
        state = self._parts.get(tp)
        if state is None:
            return []
        return [s for s in state.segments if s.first < offset]

    def mark_committed(self, offsets: dict[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            state = self._parts.get(tp)
            if state is not None:
                state.committed = offset
                state.segments = [s for s in state.segments if s.first >= offset]

    def outstanding_count(self) -> int:
        return sum(s.left for state in self._parts.values() for s in state.segments)

    def forget(self, tp: TopicPartition) -> None:
        """Drop a revoked partition; its un-acked messages will be re-read by the new owner."""
        self._parts.pop(tp, None)

    def partitions(self) -> list[TopicPartition]:
        return list(self._parts)
