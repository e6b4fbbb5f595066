"""Guards against storing a row twice when a message is read again (pure bookkeeping).

Two kinds of "again":
1. **Crash replays** of this router's own partitions. Before rows are inserted, the commit
   of their partition carries `hw=<highest offset that may reach ClickHouse>` as commit
   metadata (`high_water_to_commit`, `commit_metadata`). A router that takes a partition
   over and finds metadata ahead of the committed offset marks that span `SuspectRange`:
   rows of it are checked against the table (`suspect_spans`) and those already stored
   are acked without an insert. Once the committed offset passes the span, the partition
   is clean again.
2. **Dead-letter replays** re-submitted twice (the reprocessing job was killed after its
   replays reached Kafka and before it recorded them). A replayed row (its origin differs
   from its own coordinates) is stored only if no row with the same event identity
   (`EventKey`: event id, name and day, the table's key) is stored or earlier in
   the same batch (`replay_identities`, `drop_stored_replays`).

Invariant: either way a row is dropped only when the table already holds the same event,
so nothing is lost, and `count() == uniqExact(event_id)` holds without FINAL.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from analytics_core.events_table import EventKey, event_key
from router.rows import PendingRow, read_row

T = TypeVar("T")

HW_PREFIX = "hw="


def parse_hw(metadata: str | None) -> int | None:
    if metadata and metadata.startswith(HW_PREFIX):
        try:
            return int(metadata[len(HW_PREFIX) :])
        except ValueError:
            return None
    return None


@dataclass(frozen=True, slots=True)
class SuspectRange:
    """Offsets of a partition that a previous owner may have inserted already."""

    first: int
    last: int

    def __contains__(self, offset: object) -> bool:
        return isinstance(offset, int) and self.first <= offset <= self.last


@dataclass
class CrashReplayGuard:
    """Crash-replay state per partition (see the module doc). Consumer thread only; the
    writer gets a `snapshot()` of the suspect ranges with each write."""

    suspect: dict[int, SuspectRange] = field(default_factory=dict)
    attempted_hw: dict[int, int] = field(default_factory=dict)  # may reach ClickHouse
    committed_hw: dict[int, int] = field(default_factory=dict)  # recorded in Kafka

    def assigned(self, partition: int, committed: int | None, metadata: str | None) -> bool:
        """A partition was assigned at `committed` (None: no commit yet). True when its
        metadata says an unclean stop left rows that may already be stored."""
        hw = parse_hw(metadata)
        start = 0 if committed is None else committed
        if hw is None or hw < start:
            return False
        self.suspect[partition] = SuspectRange(start, hw)
        self.attempted_hw[partition] = hw
        self.committed_hw[partition] = hw
        return True

    def revoked(self, partition: int) -> None:
        self.suspect.pop(partition, None)
        self.attempted_hw.pop(partition, None)
        self.committed_hw.pop(partition, None)

    def high_water_to_commit(self, highest: Mapping[int, int]) -> set[int]:
        """Rows up to `highest[partition]` are about to be inserted: the partitions whose
        high water must be committed first, because it moved past what Kafka records."""
        attempted = self.attempted_hw
        for partition, offset in highest.items():
            if offset > attempted.get(partition, -1):
                attempted[partition] = offset
        return {p for p in highest if self.committed_hw.get(p, -1) < attempted[p]}

    def commit_metadata(self, partition: int, offset: int) -> str | None:
        """Metadata to commit with `offset`: the high water while rows above it may be in
        ClickHouse, None once the commit passed every attempted row."""
        hw = self.attempted_hw.get(partition)
        return f"{HW_PREFIX}{hw}" if hw is not None and hw >= offset else None

    def committed(self, partition: int, offset: int, metadata: str | None) -> None:
        hw = parse_hw(metadata)
        self.committed_hw[partition] = -1 if hw is None else hw
        span = self.suspect.get(partition)
        if span is not None and offset > span.last:
            del self.suspect[partition]

    def snapshot(self) -> dict[int, SuspectRange]:
        return dict(self.suspect)


def suspect_spans(
    partitions: Iterable[int], offsets: Iterable[int], suspect: dict[int, SuspectRange]
) -> dict[int, SuspectRange]:
    """Per partition, the offsets of some rows (their partitions and offsets) inside a
    suspect range, as one span to query."""
    spans: dict[int, SuspectRange] = {}
    for partition, offset in zip(partitions, offsets, strict=True):
        span = suspect.get(partition)
        if span is not None and offset in span:
            seen = spans.get(partition)
            if seen is None:
                spans[partition] = SuspectRange(offset, offset)
            else:
                spans[partition] = SuspectRange(min(seen.first, offset), max(seen.last, offset))
    return spans


def identity_of(row: PendingRow) -> EventKey:
    """What makes the row the same event as another in `events_base` (its sort key)."""
    values = read_row(row.line)
    return event_key(values.event_id, values.event_name, values.timestamp_ms)


def replay_identities(rows: Iterable[PendingRow]) -> dict[int, EventKey]:
    """Identities of the replayed rows (by their position in `rows`); others are left out."""
    return {i: identity_of(r) for i, r in enumerate(rows) if r.origin is not None}


def drop_stored_replays(
    rows: Sequence[T],
    identities: dict[int, EventKey],
    stored: set[EventKey],
) -> tuple[list[T], list[T]]:
    """(kept, dropped) of `rows` (rows, or their indexes): a replayed row is dropped when
    its event is stored, or when an earlier row of the same batch is the same event."""
    kept: list[T] = []
    dropped: list[T] = []
    seen = set(stored)
    for i, r in enumerate(rows):
        ident = identities.get(i)
        if ident is None:
            kept.append(r)
        elif ident in seen:
            dropped.append(r)
        else:
            seen.add(ident)
            kept.append(r)
    return kept, dropped
