"""A client move's steps, its refusals and its verification (pure, no I/O)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from analytics_core.clients import ClientStatus
from analytics_core.placement import unknown_target_problem


class Step(StrEnum):
    """The last step a move completed (`client_moves.step`)."""

    STARTED = "started"
    COPIED = "copied"
    SWITCHED = "switched"
    FENCED = "fenced"
    DELTA_COPIED = "delta_copied"
    VERIFIED = "verified"
    DONE = "done"
    ABANDONED = "abandoned"


ORDER: tuple[Step, ...] = (
    Step.STARTED,
    Step.COPIED,
    Step.SWITCHED,
    Step.FENCED,
    Step.DELTA_COPIED,
    Step.VERIFIED,
    Step.DONE,
)
FINISHED = frozenset({Step.DONE, Step.ABANDONED})


def next_step(step: Step) -> Step | None:
    """The step a run does next after `step`, None once the move is finished."""
    if step in FINISHED:
        return None
    return ORDER[ORDER.index(step) + 1]


def switched(step: Step) -> bool:
    """True once the registry points at the destination (the move can no longer be
    abandoned: new events are already there)."""
    return step not in (Step.STARTED, Step.COPIED, Step.ABANDONED)


@dataclass(frozen=True)
class OpenMove:
    """What the refusal rules need to know of an unfinished move."""

    dest_target: str
    step: Step


@dataclass(frozen=True)
class Start:
    """Start a new move from `source`."""

    source: str


@dataclass(frozen=True)
class Resume:
    """Continue the unfinished move."""


@dataclass(frozen=True)
class AlreadyThere:
    """The client is on the requested target and no move is open: nothing to do."""


@dataclass(frozen=True)
class Refused:
    reason: str


def decide(
    client_id: str,
    status: str | None,
    current_target: str | None,
    dest: str,
    configured: Sequence[str],
    open_move: OpenMove | None,
) -> Start | Resume | AlreadyThere | Refused:
    """What a request to move `client_id` to `dest` does (`status`/`current_target` None:
    no such client)."""
    if status is None or current_target is None:
        return Refused(f"no client {client_id!r} in the registry")
    if open_move is not None:
        if open_move.dest_target != dest:
            return Refused(
                f"client {client_id} has an unfinished move to {open_move.dest_target!r} "
                f"(step {open_move.step}); run it again with that target to finish it"
                + ("" if switched(open_move.step) else ", or abandon it")
            )
        problem = unknown_target_problem(dest, configured)
        return Refused(problem) if problem else Resume()
    if status != ClientStatus.ACTIVE:
        return Refused(
            f"client {client_id} is {status}; only active clients move (a new client is "
            "placed when it is registered: admin add-client --target)"
        )
    for target in (current_target, dest):
        problem = unknown_target_problem(target, configured)
        if problem is not None:
            return Refused(problem)
    if current_target == dest:
        return AlreadyThere()
    return Start(current_target)


# ---------------------------------------------------------------- verification


@dataclass(frozen=True)
class TableCount:
    """A non-event table's rows on each side."""

    table: str
    source_rows: int
    dest_rows: int


@dataclass
class EventsCheck:
    """The events tables compared by identity (day, name, id), chunk by chunk."""

    source_rows: int = 0
    source_identities: int = 0
    source_event_ids: int = 0
    dest_event_ids_of_source: int = 0
    missing_identities: int = 0
    missing_examples: list[str] = field(default_factory=list)

    def add_chunk(
        self,
        source: Mapping[tuple[str, str], int],
        dest: Mapping[tuple[str, str], int],
        label: str,
    ) -> None:
        """One chunk (a day and a hash bucket of event ids): identity -> rows, each side.
        Event ids never span chunks (the bucket is a hash of the id, and the day is part of
        the identity: an id on two days counts on each, on both sides alike)."""
        self.source_rows += sum(source.values())
        self.source_identities += len(source)
        self.source_event_ids += len({event_id for _name, event_id in source})
        self.dest_event_ids_of_source += len({key[1] for key in source if key in dest})
        missing = [key for key in source if key not in dest]
        self.missing_identities += len(missing)
        for name, event_id in missing[: max(0, 5 - len(self.missing_examples))]:
            self.missing_examples.append(f"{label} {name} {event_id}")

    def to_dict(self) -> dict[str, object]:
        return {
            "source_rows": self.source_rows,
            "source_identities": self.source_identities,
            "source_event_ids": self.source_event_ids,
            "dest_event_ids_of_source": self.dest_event_ids_of_source,
            "missing_identities": self.missing_identities,
        }


def missing_identities(
    source: Mapping[tuple[str, str], int], dest: Mapping[tuple[str, str], int]
) -> list[tuple[str, str]]:
    """The source identities (name, event id) of one chunk the destination lacks."""
    return sorted(key for key in source if key not in dest)


def verification_problems(events: EventsCheck, tables: Sequence[TableCount]) -> list[str]:
    """Why the destination does not hold everything the source holds; empty when it does."""
    problems = []
    if events.missing_identities:
        problems.append(
            f"{events.missing_identities} event(s) of the source are not in the destination "
            f"(e.g. {'; '.join(events.missing_examples)})"
        )
    if events.dest_event_ids_of_source != events.source_event_ids:
        problems.append(
            f"the source has {events.source_event_ids} distinct event id(s), the destination "
            f"{events.dest_event_ids_of_source} of them"
        )
    for t in tables:
        if t.source_rows != t.dest_rows:
            problems.append(
                f"table {t.table}: {t.source_rows} row(s) on the source, {t.dest_rows} on "
                "the destination"
            )
    return problems


def chunk_buckets(rows_in_day: int, chunk_rows: int) -> int:
    """How many hash buckets split one day so each chunk holds about `chunk_rows` rows."""
    return max(1, -(-rows_in_day // max(1, chunk_rows)))
