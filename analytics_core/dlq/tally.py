"""Counts of a reprocessing run by where a record came from, its reason, and its fate (pure).

Every record read gets exactly one outcome, so `total` equals the records read plus the
deferred records re-checked.
"""

from __future__ import annotations

from collections import Counter
from enum import StrEnum
from typing import Any


class Outcome(StrEnum):
    REPLAYED = "replayed"
    PARKED = "parked"
    DEFERRED = "deferred"  # newly deferred (read from the topic)
    STILL_DEFERRED = "still_deferred"  # re-checked from the table, client still not active
    ALREADY_HANDLED = "already_handled"  # recorded by an earlier (e.g. filtered) run
    NOT_SELECTED = "not_selected"  # outside this run's filter; left for a later run


class Origin(StrEnum):
    TOPIC = "topic"
    DEFERRED = "deferred_table"


class Tally:
    def __init__(self) -> None:
        self.counts: Counter[tuple[Origin, str, Outcome]] = Counter()

    def add(self, origin: Origin, reason: str, outcome: Outcome, n: int = 1) -> None:
        self.counts[(origin, reason, outcome)] += n

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def by_outcome(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for (_origin, _reason, outcome), n in self.counts.items():
            out[outcome.value] += n
        return {o.value: out.get(o.value, 0) for o in Outcome}

    def by_reason_and_outcome(self) -> dict[str, dict[str, int]]:
        out: dict[str, Counter[str]] = {}
        for (_origin, reason, outcome), n in self.counts.items():
            out.setdefault(reason, Counter())[outcome.value] += n
        return {reason: dict(sorted(c.items())) for reason, c in sorted(out.items())}

    def by_origin(self) -> dict[str, dict[str, int]]:
        out: dict[str, Counter[str]] = {}
        for (origin, _reason, outcome), n in self.counts.items():
            out.setdefault(origin.value, Counter())[outcome.value] += n
        return {origin: dict(sorted(c.items())) for origin, c in sorted(out.items())}

    def markdown(self) -> str:
        outcomes = [o.value for o in Outcome]
        table = self.by_reason_and_outcome()
        lines = [
            "| reason | " + " | ".join(outcomes) + " |",
            "|---|" + "---:|" * len(outcomes),
        ]
        for reason, counts in table.items():
            lines.append(
                f"| {reason} | " + " | ".join(str(counts.get(o, 0)) for o in outcomes) + " |"
            )
        return "\n".join(lines)

    def summary(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "by_outcome": self.by_outcome(),
            "by_reason_and_outcome": self.by_reason_and_outcome(),
            "by_origin": self.by_origin(),
        }
