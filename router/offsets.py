"""Which Kafka offsets may be committed: a pure bookkeeping structure.

Invariant (the delivery guarantee): the committable offset of a partition is
the lowest offset that still has an unacknowledged part, or one past the
highest offset seen when nothing is outstanding. A part is one routed row
(acknowledged by a ClickHouse insert) or one dead letter (acknowledged by the
broker). So a commit never passes an event whose fate is not durable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TopicPartition = tuple[str, int]


@dataclass
class _PartitionState:
    outstanding: dict[int, int] = field(default_factory=dict)  # offset -> parts left
    next_offset: int | None = None  # one past the highest offset seen
    committed: int | None = None


class OffsetTracker:
    def __init__(self) -> None:
        self._parts: dict[TopicPartition, _PartitionState] = {}

    def seen(self, tp: TopicPartition, offset: int, parts: int) -> None:
        """Record a consumed message and how many acknowledgements it needs."""
        state = self._parts.get(tp)
        if state is None:
            state = self._parts[tp] = _PartitionState()
        if parts > 0:
            state.outstanding[offset] = state.outstanding.get(offset, 0) + parts
        if state.next_offset is None or offset + 1 > state.next_offset:
            state.next_offset = offset + 1

    def ack(self, tp: TopicPartition, offset: int, parts: int = 1) -> None:
        state = self._parts.get(tp)
        if state is None or offset not in state.outstanding:
            return  # partition revoked meanwhile: its state was dropped
        left = state.outstanding[offset] - parts
        if left <= 0:
            del state.outstanding[offset]
        else:
            state.outstanding[offset] = left

    def committable(self) -> dict[TopicPartition, int]:
        """Offsets that advanced since the last `mark_committed`."""
        return {
            tp: target
            for tp, target in self.positions().items()
            if (committed := self._parts[tp].committed) is None or target > committed
        }

    def positions(self) -> dict[TopicPartition, int]:
        """The committable offset of every partition, advanced or not."""
        out: dict[TopicPartition, int] = {}
        for tp, state in self._parts.items():
            if state.next_offset is not None:
                out[tp] = min(state.outstanding) if state.outstanding else state.next_offset
        return out

    def mark_committed(self, offsets: dict[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            state = self._parts.get(tp)
            if state is not None:
                state.committed = offset

    def outstanding_count(self) -> int:
        return sum(sum(s.outstanding.values()) for s in self._parts.values())

    def forget(self, tp: TopicPartition) -> None:
        """Drop a revoked partition; its un-acked messages will be re-read by the new owner."""
        self._parts.pop(tp, None)

    def partitions(self) -> list[TopicPartition]:
        return list(self._parts)
