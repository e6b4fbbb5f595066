"""Typed inputs and results of a reconciliation (pure data, no I/O).

A `Stream` is one partition of one topic as consumed by one router consumer group: the
unit in which accounting ranges are contiguous. Windows are hour starts in Unix seconds
(`analytics_core.reconciliation.window`, which the router imports too).
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from analytics_core.reconciliation.window import window_label


@dataclass(frozen=True, slots=True, order=True)
class Stream:
    group: str
    topic: str
    partition: int

    def label(self) -> str:
        return f"{self.topic}[{self.partition}] (group {self.group})"


@dataclass(frozen=True, slots=True)
class OffsetSpan:
    """Offsets [start, end) of one stream."""

    stream: Stream
    start: int
    end: int

    def overlaps(self, start: int, end: int) -> bool:
        return self.start < end and start < self.end


# ------------------------------------------------------------------------------ inputs


@dataclass(frozen=True, slots=True)
class AccountedCount:
    """Sum of one count key of the client over the ranges of one group and topic."""

    group: str
    topic: str
    window: int
    outcome: str
    reason: str
    count: int
    last_recorded: datetime


@dataclass(frozen=True, slots=True)
class RowGroup:
    """Rows of the client's table, grouped by the accounting range at or before their offset.

    `group` is the consumer group of that range ('' when no range precedes the rows),
    `ranged` says the offsets are inside it, `after_offset` is its next_offset (so rows not
    ranged lie after it), `window` is the range's window for the client (else the rows' own
    received hour).
    """

    topic: str
    partition: int
    group: str
    ranged: bool
    after_offset: int
    window: int
    count: int  # stored copies: distinct Kafka coordinates (topic, partition, offset, batch)
    min_offset: int
    max_offset: int
    # Of `count`, copies of an event that has an earlier stored copy (same event id, name and
    # day: the table's sort key): producer duplicates that FINAL and the view hide and that
    # a merge will remove. They are routed copies, so they count; reported, never a problem.
    duplicates: int = 0


@dataclass(frozen=True, slots=True)
class CountedRange:
    """A range that counted events of the client with one outcome: window -> how many."""

    stream: Stream
    first_offset: int
    next_offset: int
    windows: Mapping[int, int]

    def holds(self, topic: str, partition: int, offset: int) -> bool:
        return (
            self.stream.topic == topic
            and self.stream.partition == partition
            and self.first_offset <= offset < self.next_offset
        )


DeadRange = CountedRange  # a range that counted dead letters of the client


class RangeFinder:
    """The counted range that holds a Kafka offset, found by bisection: one consumer
    group's ranges of a partition follow each other (each commit starts where the last
    ended), so the check stays fast with thousands of ranges and 100 000s of lookups. A
    range the bisection misses (overlapping rows) is still found by a scan of its stream."""

    def __init__(self, ranges: Iterable[CountedRange]) -> None:
        by_stream: dict[Stream, list[CountedRange]] = defaultdict(list)
        for r in ranges:
            by_stream[r.stream].append(r)
        self._by_tp: dict[tuple[str, int], list[tuple[list[int], list[CountedRange]]]] = (
            defaultdict(list)
        )
        for stream, rs in by_stream.items():
            rs.sort(key=lambda r: r.first_offset)
            self._by_tp[(stream.topic, stream.partition)].append(([r.first_offset for r in rs], rs))

    def find(self, topic: str, partition: int, offset: int) -> CountedRange | None:
        for starts, rs in self._by_tp.get((topic, partition), ()):
            i = bisect_right(starts, offset) - 1
            if i >= 0 and offset < rs[i].next_offset:
                return rs[i]
            for r in rs[: max(i, 0)]:
                if r.first_offset <= offset < r.next_offset:
                    return r
        return None


@dataclass(frozen=True, slots=True)
class CollapsedCopy:
    """A routed copy whose row is gone because a merge collapsed it into a stored copy of
    the same event (a producer duplicate: same event id, name and day).

    Proven, not assumed: its message was read back from Kafka, the copy has no row at its
    own coordinates, and the table holds a row with its sort key at other coordinates.
    `window` is the window its range counted it in.
    """

    topic: str
    partition: int
    offset: int
    batch_index: int
    window: int


@dataclass(frozen=True, slots=True)
class LetterSighting:
    """One dead letter of the client, by the coordinates of the copy that failed."""

    topic: str
    partition: int
    offset: int
    batch_index: int | None
    reason: str
    seen_at: datetime
    on_topic: bool = True
    parked: bool = False

    @property
    def key(self) -> tuple[str, int, int, int | None]:
        return (self.topic, self.partition, self.offset, self.batch_index)


@dataclass(frozen=True, slots=True)
class ScanSummary:
    """How the dead-letter side was observed; incomplete scans verify nothing."""

    complete: bool
    read: int
    detail: str


@dataclass(frozen=True)
class Observations:
    islands: tuple[OffsetSpan, ...]  # contiguous accounted offsets per stream
    client_spans: tuple[OffsetSpan, ...]  # per stream: first..last range counting the client
    rows: tuple[RowGroup, ...]
    dead_ranges: tuple[DeadRange, ...]
    letters: tuple[LetterSighting, ...]
    letter_scan: ScanSummary
    notes: tuple[str, ...] = ()
    # Routed copies merged away into a stored copy of the same event (`CollapsedCopy`); read
    # only for windows with fewer rows than routed copies.
    collapsed: tuple[CollapsedCopy, ...] = ()


# ------------------------------------------------------------------------------ results


class ProblemKind(StrEnum):
    MISSING_ROWS = "missing_rows"
    EXTRA_ROWS = "extra_rows"
    MISSING_DEAD_LETTERS = "missing_dead_letters"
    EXTRA_DEAD_LETTERS = "extra_dead_letters"
    UNACCOUNTED_ROWS = "unaccounted_rows"
    UNACCOUNTED_DEAD_LETTERS = "unaccounted_dead_letters"
    OFFSET_GAP = "offset_gap"
    OVERLAP = "overlap"


@dataclass(frozen=True, slots=True)
class Problem:
    kind: ProblemKind
    client_id: str
    window: int | None
    count: int
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "client_id": self.client_id,
            "window": window_label(self.window) if self.window is not None else None,
            "count": self.count,
            "message": self.message,
        }


@dataclass(frozen=True)
class WindowResult:
    window: int
    judged: bool  # closed: no range counting it was recorded during the grace period
    routed_accounted: int = 0
    dead_lettered_accounted: int = 0
    dead_lettered_by_reason: Mapping[str, int] = field(default_factory=dict)
    rows_found: int = 0
    letters_found: int = 0
    parked: int = 0
    letters_verified: bool = True
    last_recorded: datetime | None = None
    # Producer duplicates (same event sent twice, each copy routed and accounted):
    # `duplicates_stored` of `rows_found` are copies FINAL hides until a merge removes them;
    # `duplicates_collapsed` copies a merge already removed (proven, see CollapsedCopy).
    # Invariant: routed = rows_found + duplicates_collapsed + missing_rows - extra_rows.
    duplicates_stored: int = 0
    duplicates_collapsed: int = 0

    @property
    def consumed(self) -> int:
        return self.routed_accounted + self.dead_lettered_accounted

    @property
    def rows_explained(self) -> int:
        """Routed copies accounted for by the table: stored, or collapsed into a stored copy."""
        return self.rows_found + self.duplicates_collapsed

    @property
    def missing_rows(self) -> int:
        return max(0, self.routed_accounted - self.rows_explained)

    @property
    def extra_rows(self) -> int:
        return max(0, self.rows_explained - self.routed_accounted)

    @property
    def missing_letters(self) -> int:
        if not self.letters_verified:
            return 0
        return max(0, self.dead_lettered_accounted - self.letters_found)

    @property
    def extra_letters(self) -> int:
        return max(0, self.letters_found - self.dead_lettered_accounted)

    @property
    def missing(self) -> int:
        """Consumed events with no observable fate (rows + letters short of the accounting)."""
        return self.missing_rows + self.missing_letters

    @property
    def balanced(self) -> bool:
        return not (self.missing_rows or self.extra_rows or self.missing_letters) and not (
            self.extra_letters
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "window": window_label(self.window),
            "window_start_unix": self.window,
            "judged": self.judged,
            "consumed": self.consumed,
            "routed": self.routed_accounted,
            "dead_lettered": self.dead_lettered_accounted,
            "dead_lettered_by_reason": dict(self.dead_lettered_by_reason),
            "rows_found": self.rows_found,
            "duplicates_stored": self.duplicates_stored,
            "duplicates_collapsed": self.duplicates_collapsed,
            "dead_letters_found": self.letters_found if self.letters_verified else None,
            "parked": self.parked,
            "missing": self.missing,
            "missing_rows": self.missing_rows,
            "extra_rows": self.extra_rows,
            "missing_dead_letters": self.missing_letters,
            "extra_dead_letters": self.extra_letters,
            "last_recorded": self.last_recorded.isoformat() if self.last_recorded else None,
        }


@dataclass(frozen=True, slots=True)
class Gap:
    stream: Stream
    start: int
    end: int
    relevant: bool  # inside the span where the client's events were consumed
    rows_inside: int  # rows of the client whose offsets are in the gap

    def to_dict(self) -> dict[str, Any]:
        return {
            "group": self.stream.group,
            "topic": self.stream.topic,
            "partition": self.stream.partition,
            "start": self.start,
            "end": self.end,
            "offsets": self.end - self.start,
            "relevant": self.relevant,
            "rows_inside": self.rows_inside,
        }


@dataclass(frozen=True)
class Report:
    """The reconciliation of one client over the lookback."""

    client_id: str
    database: str
    checked_at: datetime
    horizon: int  # first window judged (older windows may be partial)
    grace_s: float
    windows: tuple[WindowResult, ...]
    gaps: tuple[Gap, ...]
    overlaps: tuple[OffsetSpan, ...]
    unaccounted_rows: Mapping[int, int]  # window -> rows outside every range
    unaccounted_letters: Mapping[int, int]
    in_flight_rows: int
    in_flight_letters: int
    letter_scan: ScanSummary
    problems: tuple[Problem, ...]
    notes: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.problems

    @property
    def judged_windows(self) -> list[WindowResult]:
        return [w for w in self.windows if w.judged]

    def totals(self) -> dict[str, int]:
        judged = self.judged_windows
        return {
            "windows_judged": len(judged),
            "windows_open": len(self.windows) - len(judged),
            "consumed": sum(w.consumed for w in judged),
            "routed": sum(w.routed_accounted for w in judged),
            "dead_lettered": sum(w.dead_lettered_accounted for w in judged),
            "rows_found": sum(w.rows_found for w in judged),
            "duplicates_stored": sum(w.duplicates_stored for w in judged),
            "duplicates_collapsed": sum(w.duplicates_collapsed for w in judged),
            "dead_letters_found": sum(w.letters_found for w in judged),
            "parked": sum(w.parked for w in judged),
            "missing": sum(w.missing for w in judged),
            "unaccounted_rows": sum(self.unaccounted_rows.values()),
            "offset_gaps": sum(1 for g in self.gaps if g.relevant),
            "in_flight_rows": self.in_flight_rows,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "database": self.database,
            "checked_at": self.checked_at.isoformat(),
            "horizon": window_label(self.horizon),
            "grace_s": self.grace_s,
            "passed": self.passed,
            "totals": self.totals(),
            "problems": [p.to_dict() for p in self.problems],
            "windows": [w.to_dict() for w in self.windows],
            "gaps": [g.to_dict() for g in self.gaps],
            "overlaps": [
                {
                    "group": o.stream.group,
                    "topic": o.stream.topic,
                    "partition": o.stream.partition,
                    "start": o.start,
                    "end": o.end,
                }
                for o in self.overlaps
            ],
            "unaccounted_rows": {window_label(w): n for w, n in self.unaccounted_rows.items()},
            "unaccounted_dead_letters": {
                window_label(w): n for w, n in self.unaccounted_letters.items()
            },
            "in_flight_rows": self.in_flight_rows,
            "in_flight_dead_letters": self.in_flight_letters,
            "dead_letter_scan": {
                "complete": self.letter_scan.complete,
                "read": self.letter_scan.read,
                "detail": self.letter_scan.detail,
            },
            "notes": list(self.notes),
        }


@dataclass(frozen=True, slots=True)
class Unavailable:
    """Reconciliation could not run (an expected outcome, e.g. no accounting table yet)."""

    client_id: str
    reason: str
    # "no_client", "no_database": nothing can have been routed (not a failure);
    # "moving": the client's move between ClickHouse targets is unfinished (not a failure);
    # "no_accounting": the router wrote no accounting, nothing can be proven.
    kind: str = "no_accounting"

    @property
    def is_failure(self) -> bool:
        return self.kind == "no_accounting"
