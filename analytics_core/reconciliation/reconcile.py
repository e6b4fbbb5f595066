"""The reconciliation itself: accounting + observations -> per-window report (pure).

Rules, per client:
- a window is judged when the last range counting it was recorded at least `grace_s` ago
  (every accounted event is durable before its range is written, so a judged window is
  final); windows before `horizon` are skipped (their ranges may be partly outside the
  lookback);
- judged window: rows found must equal routed, dead letters found must equal dead_lettered
  (when the dead-letter scan was complete); any difference is a problem with its count.
  Rows are stored copies (one per Kafka coordinates, no FINAL), as the router accounts
  every routed copy; a producer duplicate is two copies. Copies a merge collapsed into a
  stored copy of the same event count as found once proven (`Observations.collapsed`,
  `duplicates`), up to the window's shortfall: duplicates are reported, never a loss;
- rows or letters inside a gap between a group's ranges, or before every range, were
  consumed without accounting: problems; past the last range they are in flight: ignored;
- a gap (offsets committed without a range) inside the span where the client's events were
  consumed is a problem; so are overlapping ranges (the same offsets counted twice).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from analytics_core.reconciliation.model import (
    AccountedCount,
    CollapsedCopy,
    Gap,
    Observations,
    OffsetSpan,
    Problem,
    ProblemKind,
    RangeFinder,
    Report,
    RowGroup,
    Stream,
    WindowResult,
)
from analytics_core.reconciliation.window import DEAD_LETTERED, ROUTED, hour_of, window_label


def pick_window(candidates: Iterable[int], fallback: int) -> int:
    """The window of an observation inside a range: the range's only window for the client;
    if it has several (a range across an hour boundary), the observation's own hour when it
    is one of them, else the earliest. No candidates: the observation's own hour."""
    found = sorted(set(candidates))
    if not found:
        return fallback
    if len(found) == 1 or fallback not in found:
        return found[0]
    return fallback


class _Coverage:
    """Islands of accounted offsets per (topic, partition), over all groups."""

    def __init__(self, islands: Sequence[OffsetSpan]) -> None:
        self.by_stream: dict[Stream, list[OffsetSpan]] = defaultdict(list)
        self.by_tp: dict[tuple[str, int], list[OffsetSpan]] = defaultdict(list)
        for span in islands:
            self.by_stream[span.stream].append(span)
            self.by_tp[(span.stream.topic, span.stream.partition)].append(span)
        for spans in (*self.by_stream.values(), *self.by_tp.values()):
            spans.sort(key=lambda s: (s.start, s.end))

    def inside(self, topic: str, partition: int, offset: int) -> bool:
        return any(s.start <= offset < s.end for s in self.by_tp.get((topic, partition), ()))

    def after_all(self, topic: str, partition: int, offset: int) -> bool:
        spans = self.by_tp.get((topic, partition), ())
        return not spans or offset >= max(s.end for s in spans)

    def island_starts_at_or_after(self, stream: Stream, offset: int) -> bool:
        return any(s.start >= offset for s in self.by_stream.get(stream, ()))

    def gaps_and_overlaps(self) -> tuple[list[OffsetSpan], list[OffsetSpan]]:
        gaps: list[OffsetSpan] = []
        overlaps: list[OffsetSpan] = []
        for stream, spans in sorted(self.by_stream.items()):
            for prev, cur in itertools.pairwise(spans):
                if cur.start > prev.end:
                    gaps.append(OffsetSpan(stream, prev.end, cur.start))
                elif cur.start < prev.end:
                    overlaps.append(OffsetSpan(stream, cur.start, min(prev.end, cur.end)))
        return gaps, overlaps


def _cross_group_overlaps(spans: Sequence[OffsetSpan]) -> list[tuple[OffsetSpan, OffsetSpan]]:
    out = []
    by_tp: dict[tuple[str, int], list[OffsetSpan]] = defaultdict(list)
    for s in spans:
        by_tp[(s.stream.topic, s.stream.partition)].append(s)
    for group in by_tp.values():
        for i, a in enumerate(group):
            for b in group[i + 1 :]:
                if a.stream.group != b.stream.group and a.overlaps(b.start, b.end):
                    out.append((a, b))
    return out


@dataclass
class _Accounted:
    """What the router's ranges counted per window (from the horizon on)."""

    routed: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    dead: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    dead_reasons: dict[int, dict[str, int]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(int))
    )
    last: dict[int, datetime] = field(default_factory=dict)  # window -> last range recorded


@dataclass
class _RowsPlaced:
    """The client's rows by where their offsets fall."""

    found: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    duplicates: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    collapsed: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    unaccounted: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    in_gap: dict[tuple[Stream, int], int] = field(default_factory=lambda: defaultdict(int))
    in_flight: int = 0


@dataclass
class _LettersPlaced:
    """The client's dead letters (topic and parked) by where their source offsets fall."""

    found: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    parked: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    unaccounted: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    extra: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    in_flight: int = 0


def _tally_accounting(accounted: Sequence[AccountedCount], horizon: int) -> _Accounted:
    acc = _Accounted()
    for a in accounted:
        if a.window < horizon:
            continue
        if a.outcome == ROUTED:
            acc.routed[a.window] += a.count
        elif a.outcome == DEAD_LETTERED:
            acc.dead[a.window] += a.count
            acc.dead_reasons[a.window][a.reason] += a.count
        else:
            continue
        if a.window not in acc.last or a.last_recorded > acc.last[a.window]:
            acc.last[a.window] = a.last_recorded
    return acc


def _place_rows(
    rows: Iterable[RowGroup],
    collapsed: Iterable[CollapsedCopy],
    coverage: _Coverage,
    horizon: int,
) -> _RowsPlaced:
    placed = _RowsPlaced()
    for copy in collapsed:
        if copy.window >= horizon:
            placed.collapsed[copy.window] += 1
    for rg in rows:
        if rg.ranged:
            if rg.window >= horizon:
                placed.found[rg.window] += rg.count
                placed.duplicates[rg.window] += rg.duplicates
        elif rg.group == "":
            # No range precedes these offsets: consumed without accounting (or before the
            # lookback: rows received before the horizon are not judged).
            if rg.window >= horizon:
                placed.unaccounted[rg.window] += rg.count
        else:
            stream = Stream(rg.group, rg.topic, rg.partition)
            if coverage.island_starts_at_or_after(stream, rg.after_offset):
                placed.in_gap[(stream, rg.after_offset)] += rg.count
                if rg.window >= horizon:
                    placed.unaccounted[rg.window] += rg.count
            else:
                placed.in_flight += rg.count
    return placed


def _place_letters(obs: Observations, coverage: _Coverage, horizon: int) -> _LettersPlaced:
    """One sighting per failed copy, on the topic or parked."""
    placed = _LettersPlaced()
    dead_ranges = RangeFinder(obs.dead_ranges)
    for letter in obs.letters:
        own_hour = hour_of(letter.seen_at)
        dr = dead_ranges.find(letter.topic, letter.partition, letter.offset)
        if dr is not None:
            window = pick_window(dr.windows, own_hour)
            if window >= horizon:
                placed.found[window] += 1
                if letter.parked:
                    placed.parked[window] += 1
        elif coverage.inside(letter.topic, letter.partition, letter.offset):
            # Inside a range that counted no dead letter of this client.
            if own_hour >= horizon:
                placed.extra[own_hour] += 1
        elif coverage.after_all(letter.topic, letter.partition, letter.offset):
            placed.in_flight += 1
        elif own_hour >= horizon:
            placed.unaccounted[own_hour] += 1
    return placed


def _window_results(
    acc: _Accounted,
    rows: _RowsPlaced,
    letters: _LettersPlaced,
    *,
    letters_verified: bool,
    now: datetime,
    grace_s: float,
) -> list[WindowResult]:
    every = set(acc.routed) | set(acc.dead) | set(rows.found) | set(letters.found)
    results = []
    for w in sorted(every | set(letters.extra)):
        recorded = acc.last.get(w)
        routed, found = acc.routed.get(w, 0), rows.found.get(w, 0)
        # Proven collapsed copies explain a shortfall, never more (they can not hide extras).
        collapsed = min(rows.collapsed.get(w, 0), max(0, routed - found))
        # Observations inside written ranges that counted nothing for the client in this
        # window are final at once (a range row never changes but by a crash re-read).
        judged = recorded is None or (now - recorded).total_seconds() >= grace_s
        results.append(
            WindowResult(
                window=w,
                judged=judged,
                routed_accounted=routed,
                dead_lettered_accounted=acc.dead.get(w, 0),
                dead_lettered_by_reason=dict(acc.dead_reasons.get(w, {})),
                rows_found=found,
                duplicates_stored=rows.duplicates.get(w, 0),
                duplicates_collapsed=collapsed,
                letters_found=letters.found.get(w, 0) + letters.extra.get(w, 0),
                parked=letters.parked.get(w, 0),
                letters_verified=letters_verified,
                last_recorded=recorded,
            )
        )
    return results


def _collapsed_note(result: WindowResult) -> str:
    n = result.duplicates_collapsed
    return f" + {n} duplicate(s) collapsed by merges" if n else ""


def _window_problems(result: WindowResult, client_id: str, database: str) -> list[Problem]:
    """A judged window's differences between what was accounted and what was found."""
    w, label, table = result.window, window_label(result.window), f"{database}.events_base"
    problems = []
    if result.missing_rows:
        problems.append(
            Problem(
                ProblemKind.MISSING_ROWS,
                client_id,
                w,
                result.missing_rows,
                f"client {client_id}, window {label}: {result.missing_rows} routed event(s) "
                f"missing from {table} (router accounted {result.routed_accounted}, "
                f"table has {result.rows_found}{_collapsed_note(result)})",
            )
        )
    if result.extra_rows:
        problems.append(
            Problem(
                ProblemKind.EXTRA_ROWS,
                client_id,
                w,
                result.extra_rows,
                f"client {client_id}, window {label}: {result.extra_rows} row(s) in {table} "
                f"more than the router accounted ({result.routed_accounted} routed, "
                f"{result.rows_found} rows{_collapsed_note(result)})",
            )
        )
    if result.missing_letters:
        problems.append(
            Problem(
                ProblemKind.MISSING_DEAD_LETTERS,
                client_id,
                w,
                result.missing_letters,
                f"client {client_id}, window {label}: {result.missing_letters} dead "
                f"letter(s) not found on the dead-letter topic nor parked (router accounted "
                f"{result.dead_lettered_accounted}, found {result.letters_found})",
            )
        )
    if result.extra_letters:
        problems.append(
            Problem(
                ProblemKind.EXTRA_DEAD_LETTERS,
                client_id,
                w,
                result.extra_letters,
                f"client {client_id}, window {label}: {result.extra_letters} dead letter(s) "
                f"more than the router accounted ({result.dead_lettered_accounted})",
            )
        )
    return problems


def _unaccounted_problems(
    client_id: str, database: str, rows: Mapping[int, int], letters: Mapping[int, int]
) -> list[Problem]:
    """Rows and dead letters from offsets that no range covers (before every range or in a
    gap between a group's ranges)."""
    problems = [
        Problem(
            ProblemKind.UNACCOUNTED_ROWS,
            client_id,
            w,
            n,
            f"client {client_id}, window {window_label(w)}: {n} row(s) in "
            f"{database}.events_base come from offsets no router accounted for",
        )
        for w, n in sorted(rows.items())
    ]
    problems += [
        Problem(
            ProblemKind.UNACCOUNTED_DEAD_LETTERS,
            client_id,
            w,
            n,
            f"client {client_id}, window {window_label(w)}: {n} dead letter(s) come from "
            "offsets no router accounted for",
        )
        for w, n in sorted(letters.items())
    ]
    return problems


def _offset_findings(
    client_id: str,
    coverage: _Coverage,
    client_spans: Sequence[OffsetSpan],
    rows_in_gap: Mapping[tuple[Stream, int], int],
) -> tuple[list[Gap], list[OffsetSpan], list[Problem]]:
    """Gaps (offsets committed without a range) and overlaps (offsets counted twice) where
    the client's events were consumed, with their problems."""
    raw_gaps, raw_overlaps = coverage.gaps_and_overlaps()
    spans = {s.stream: s for s in client_spans}
    gaps: list[Gap] = []
    problems: list[Problem] = []
    for g in raw_gaps:
        span = spans.get(g.stream)
        inside = rows_in_gap.get((g.stream, g.start), 0)
        relevant = bool(inside) or (span is not None and span.overlaps(g.start, g.end))
        gaps.append(Gap(g.stream, g.start, g.end, relevant, inside))
        if relevant:
            problems.append(
                Problem(
                    ProblemKind.OFFSET_GAP,
                    client_id,
                    None,
                    g.end - g.start,
                    f"client {client_id}: offsets {g.start}..{g.end - 1} of "
                    f"{g.stream.label()} were committed without accounting "
                    f"({g.end - g.start} offset(s), {inside} row(s) of the client in them)",
                )
            )
    overlaps = [o for o in raw_overlaps if o.stream in spans]
    for o in overlaps:
        problems.append(
            Problem(
                ProblemKind.OVERLAP,
                client_id,
                None,
                o.end - o.start,
                f"client {client_id}: offsets {o.start}..{o.end - 1} of {o.stream.label()} are "
                "counted by two accounting ranges",
            )
        )
    for x, y in _cross_group_overlaps(client_spans):
        problems.append(
            Problem(
                ProblemKind.OVERLAP,
                client_id,
                None,
                min(x.end, y.end) - max(x.start, y.start),
                f"client {client_id}: {x.stream.topic}[{x.stream.partition}] offsets "
                f"{max(x.start, y.start)}..{min(x.end, y.end) - 1} were consumed by two "
                f"consumer groups ({x.stream.group}, {y.stream.group}); their accounting "
                "counts the same events twice (set RECONCILIATION_CONSUMER_GROUPS)",
            )
        )
    return gaps, overlaps, problems


def reconcile(
    client_id: str,
    database: str,
    accounted: Sequence[AccountedCount],
    obs: Observations,
    *,
    now: datetime,
    horizon: int,
    grace_s: float,
) -> Report:
    acc = _tally_accounting(accounted, horizon)
    coverage = _Coverage(obs.islands)
    rows = _place_rows(obs.rows, obs.collapsed, coverage, horizon)
    letters = _place_letters(obs, coverage, horizon)
    windows = _window_results(
        acc, rows, letters, letters_verified=obs.letter_scan.complete, now=now, grace_s=grace_s
    )
    problems: list[Problem] = []
    for result in windows:
        if result.judged:
            problems += _window_problems(result, client_id, database)
    problems += _unaccounted_problems(client_id, database, rows.unaccounted, letters.unaccounted)
    gaps, overlaps, offset_problems = _offset_findings(
        client_id, coverage, obs.client_spans, rows.in_gap
    )
    problems += offset_problems

    notes = list(obs.notes)
    if not obs.letter_scan.complete:
        notes.append(f"dead letters not verified: {obs.letter_scan.detail}")
    return Report(
        client_id=client_id,
        database=database,
        checked_at=now,
        horizon=horizon,
        grace_s=grace_s,
        windows=tuple(windows),
        gaps=tuple(gaps),
        overlaps=tuple(overlaps),
        unaccounted_rows=dict(rows.unaccounted),
        unaccounted_letters=dict(letters.unaccounted),
        in_flight_rows=rows.in_flight,
        in_flight_letters=letters.in_flight,
        letter_scan=obs.letter_scan,
        problems=tuple(problems),
        notes=tuple(notes),
    )
