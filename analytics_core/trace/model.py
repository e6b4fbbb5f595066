"""The typed trace report of one event (pure data)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass(frozen=True)
class RowHit:
    """One physical row of the event in a client's ClickHouse table."""

    database: str
    table: str
    client_id: str | None
    kafka_topic: str
    kafka_partition: int
    kafka_offset: int
    batch_index: int
    origin_partition: int
    origin_offset: int
    attempt: int
    event_name: str
    event_timestamp: datetime
    sent_at: datetime | None
    received_at: datetime
    ingested_at: datetime
    router_instance: str
    target: str = "default"  # the ClickHouse target the row was found on

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("event_timestamp", "sent_at", "received_at", "ingested_at"):
            d[k] = _iso(d[k])
        return d


@dataclass(frozen=True)
class Coords:
    topic: str
    partition: int
    offset: int

    def label(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass(frozen=True)
class LetterHit:
    """One record of the event on the dead-letter topic."""

    dl: Coords
    produced_at: datetime | None
    reason: str
    detail: str
    attempt: int | None
    client_id: str | None
    event_id: str | None
    batch_index: int | None
    origin: Coords | None
    source: Coords | None
    first_failed_at: str
    matched_by: str  # "dl-event-id" or "derived id"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["produced_at"] = _iso(self.produced_at)
        return d


@dataclass(frozen=True)
class FateRecord:
    """What the dead-letter reprocessing did with one record (a PostgreSQL row)."""

    table: str  # replayed_dead_letters | parked_dead_letters | deferred_dead_letters
    outcome: str  # replayed | parked | deferred | deferred, then replayed/parked
    dl: Coords
    reason: str
    at: datetime | None
    attempts: int | None
    detail: str
    dagster_run_id: str | None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["at"] = _iso(self.at)
        return d


@dataclass(frozen=True)
class RawCopy:
    """A message of the raw topic that carried the event (the original or a replay)."""

    coords: Coords
    roles: tuple[str, ...]  # origin, routed copy, failed copy
    available: bool  # still in Kafka (retention)
    produced_at: datetime | None = None
    replay_attempt: int | None = None  # replay-attempt header: a re-submitted dead letter

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["produced_at"] = _iso(self.produced_at)
        d["roles"] = list(self.roles)
        return d


@dataclass(frozen=True)
class TraceReport:
    event_id: str
    client_id: str | None
    databases_searched: tuple[str, ...]
    rows: tuple[RowHit, ...]
    letters: tuple[LetterHit, ...]
    fates: tuple[FateRecord, ...]
    raw_copies: tuple[RawCopy, ...]
    dead_letter_scan: str
    notes: tuple[str, ...] = field(default_factory=tuple)
    # ClickHouse targets that could not be searched (down, refused): while any is listed,
    # "not found" is not a verdict.
    unsearched_targets: tuple[str, ...] = field(default_factory=tuple)

    @property
    def found(self) -> bool:
        return bool(self.rows or self.letters or self.fates)

    @property
    def conclusive(self) -> bool:
        """Found, or not found with every ClickHouse target searched."""
        return self.found or not self.unsearched_targets

    @property
    def status(self) -> str:
        """One line: where the event ended up."""
        parts = []
        if self.letters:
            reasons = sorted({letter.reason for letter in self.letters})
            parts.append(f"dead-lettered {len(self.letters)}x ({', '.join(reasons)})")
        outcomes = [f.outcome for f in self.fates]
        if any(o.endswith("parked") for o in outcomes):
            parts.append("parked")
        if any(o.endswith("replayed") for o in outcomes):
            parts.append("replayed")
        if any(o == "deferred" for o in outcomes):
            parts.append("deferred (waiting for its client)")
        if self.rows:
            dbs = sorted({r.database for r in self.rows})
            parts.append(f"stored in {', '.join(dbs)}")
        return ", then ".join(parts) if parts else "not found"

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "client_id": self.client_id,
            "found": self.found,
            "status": self.status,
            "databases_searched": list(self.databases_searched),
            "rows": [r.to_dict() for r in self.rows],
            "dead_letters": [x.to_dict() for x in self.letters],
            "reprocessing": [f.to_dict() for f in self.fates],
            "raw_messages": [c.to_dict() for c in self.raw_copies],
            "dead_letter_scan": self.dead_letter_scan,
            "unsearched_targets": list(self.unsearched_targets),
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class TraceError:
    """The trace could not run (bad id, unknown client): expected, not an exception."""

    event_id: str
    reason: str
