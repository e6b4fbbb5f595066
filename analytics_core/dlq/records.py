"""A dead-letter record as data, and the table rows it becomes (pure).

Invariant: `value` is the message value exactly as read (the original event bytes); it is
what a replay re-submits and what `parked_dead_letters.payload` stores.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from analytics_core.dead_letter import DeadLetter, EnvelopeError, header_map, read_dead_letter
from analytics_core.dlq.classify import UNREADABLE_ENVELOPE, Defer, Park, parse_failed_at


@dataclass(frozen=True, slots=True)
class Coordinates:
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class LetterRecord:
    coords: Coordinates
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]
    letter: DeadLetter | None  # None: the envelope could not be read
    envelope_error: str | None = None
    deferred_id: int | None = None  # set when the record comes from deferred_dead_letters

    @property
    def reason(self) -> str:
        return self.letter.reason.value if self.letter is not None else UNREADABLE_ENVELOPE

    @property
    def client_id(self) -> str | None:
        return self.letter.client_id if self.letter is not None else None


def from_message(
    coords: Coordinates,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]] | None,
) -> LetterRecord:
    try:
        letter: DeadLetter | None = read_dead_letter(headers)
        error = None
    except EnvelopeError as exc:
        letter, error = None, str(exc)
    return LetterRecord(coords, key, value, header_map(headers), letter, error)


def from_stored(
    coords: Coordinates,
    key: bytes | None,
    value: bytes | None,
    headers: Mapping[str, str],
    deferred_id: int,
) -> LetterRecord:
    """A record re-read from `deferred_dead_letters` (its envelope was readable then)."""
    raw = [(k, v.encode("utf-8")) for k, v in headers.items()]
    record = from_message(coords, key, value, raw)
    return LetterRecord(
        record.coords,
        key,
        value,
        dict(headers),
        record.letter,
        record.envelope_error,
        deferred_id,
    )


PARKED_COLUMNS = (
    "dl_topic", "dl_partition", "dl_offset", "reason", "parked_because", "detail", "payload",
    "message_key", "headers", "client_id", "event_id", "batch_index", "origin_topic",
    "origin_partition", "origin_offset", "source_topic", "source_partition", "source_offset",
    "attempts", "first_failed_at", "dagster_run_id",
)  # fmt: skip

DEFERRED_COLUMNS = (
    "dl_topic", "dl_partition", "dl_offset", "reason", "detail", "payload", "message_key",
    "headers", "client_id", "event_id", "attempts", "first_failed_at", "dagster_run_id",
)  # fmt: skip

REPLAYED_COLUMNS = (
    "dl_topic", "dl_partition", "dl_offset", "reason", "client_id", "event_id", "attempts",
    "from_deferred", "dagster_run_id",
)  # fmt: skip


def _failed_at(rec: LetterRecord) -> datetime | None:
    return parse_failed_at(rec.letter.first_failed_at) if rec.letter is not None else None


def _headers_json(rec: LetterRecord) -> str:
    return orjson.dumps(rec.headers).decode()


def parked_row(rec: LetterRecord, park: Park, run_id: str | None) -> tuple[Any, ...]:
    dl = rec.letter
    detail = park.detail
    if dl is not None and dl.detail:
        detail = f"{park.detail}; router said: {dl.detail}"
    elif rec.envelope_error:
        detail = rec.envelope_error
    return (
        rec.coords.topic, rec.coords.partition, rec.coords.offset, rec.reason, park.cause.value,
        detail, rec.value, rec.key, _headers_json(rec),
        dl.client_id if dl else None, dl.event_id if dl else None, dl.batch_index if dl else None,
        dl.origin.topic if dl else None, dl.origin.partition if dl else None,
        dl.origin.offset if dl else None, dl.source.topic if dl else None,
        dl.source.partition if dl else None, dl.source.offset if dl else None,
        dl.attempt if dl else 0, _failed_at(rec), run_id,
    )  # fmt: skip


def deferred_row(rec: LetterRecord, defer: Defer, run_id: str | None) -> tuple[Any, ...]:
    dl = rec.letter
    assert dl is not None, "only readable letters are deferred"
    return (
        rec.coords.topic, rec.coords.partition, rec.coords.offset, rec.reason,
        f"{defer.detail}; router said: {dl.detail}", rec.value, rec.key, _headers_json(rec),
        dl.client_id, dl.event_id, dl.attempt, _failed_at(rec), run_id,
    )  # fmt: skip


def replayed_row(rec: LetterRecord, run_id: str | None) -> tuple[Any, ...]:
    dl = rec.letter
    assert dl is not None, "only readable letters are replayed"
    return (
        rec.coords.topic, rec.coords.partition, rec.coords.offset, rec.reason, dl.client_id,
        dl.event_id, dl.attempt, rec.deferred_id is not None, run_id,
    )  # fmt: skip
