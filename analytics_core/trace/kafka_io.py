"""The event on Kafka: its dead letters (bounded scan) and the raw messages that carried it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from datetime import UTC, datetime

from confluent_kafka import KafkaException, Message

from analytics_core.dead_letter import header_map
from analytics_core.event_contract import Origin, derive_event_id
from analytics_core.kafka_headers import readable_headers
from analytics_core.kafka_reads import ScanBounds, ScanResult, read_offsets, scan_topic
from analytics_core.settings import KafkaSettings
from analytics_core.trace.model import Coords, LetterHit, RawCopy


def _int(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _coords(h: dict[str, str], prefix: str) -> Coords | None:
    topic = h.get(f"{prefix}-topic")
    partition = _int(h.get(f"{prefix}-partition"))
    offset = _int(h.get(f"{prefix}-offset"))
    if not topic or partition is None or offset is None:
        return None
    return Coords(topic, partition, offset)


def letter_match(h: dict[str, str], event_id: str) -> str | None:
    """How a dead letter's headers name `event_id` ("dl-event-id", "derived id") or None."""
    own = h.get("dl-event-id") or ""
    if own:
        return "dl-event-id" if own.lower() == event_id else None
    origin = _coords(h, "dl-origin")
    if origin is None:
        return None
    batch_index = _int(h.get("dl-batch-index"))
    derived = derive_event_id(
        Origin(origin.topic, origin.partition, origin.offset),
        batch_index if batch_index is not None else 0,
    )
    return "derived id" if derived == event_id else None


def _letter(msg: Message, h: dict[str, str], matched_by: str) -> LetterHit:
    _ts_type, ts_ms = msg.timestamp()
    return LetterHit(
        dl=Coords(str(msg.topic()), int(msg.partition() or 0), int(msg.offset() or 0)),
        produced_at=datetime.fromtimestamp(ts_ms / 1000, UTC) if ts_ms > 0 else None,
        reason=h.get("dl-reason", "?"),
        detail=h.get("dl-detail", ""),
        attempt=_int(h.get("dl-attempt")),
        client_id=h.get("dl-client-id") or None,
        event_id=h.get("dl-event-id") or None,
        batch_index=_int(h.get("dl-batch-index")),
        origin=_coords(h, "dl-origin"),
        source=_coords(h, "dl-source"),
        first_failed_at=h.get("dl-first-failed-at", ""),
        matched_by=matched_by,
    )


def find_dead_letters(
    kafka: KafkaSettings, event_id: str, bounds: ScanBounds
) -> tuple[list[LetterHit], ScanResult]:
    hits: list[LetterHit] = []

    def visit(msg: Message) -> None:
        h = header_map(readable_headers(msg))
        how = letter_match(h, event_id)
        if how is not None:
            hits.append(_letter(msg, h, how))

    result = scan_topic(kafka, kafka.dead_letter_topic, bounds, visit)
    hits.sort(key=lambda x: (x.produced_at or datetime.min.replace(tzinfo=UTC), x.dl.offset))
    return hits, result


def fetch_raw_copies(
    kafka: KafkaSettings, wanted: dict[Coords, set[str]], *, timeout_s: float = 5.0
) -> list[RawCopy]:
    """The messages at these coordinates; a copy no longer in Kafka (retention, a deleted
    topic) or not delivered within `timeout_s` is reported as not available."""
    seen: dict[Coords, RawCopy] = {}
    by_topic: dict[str, dict[int, set[int]]] = {}
    for c in wanted:
        by_topic.setdefault(c.topic, {}).setdefault(c.partition, set()).add(c.offset)
    for topic, offsets in sorted(by_topic.items()):

        def keep(msg: Message, topic: str = topic) -> None:
            c = Coords(topic, int(msg.partition() or 0), int(msg.offset() or 0))
            h = header_map(readable_headers(msg))
            ts_ms = msg.timestamp()[1]
            seen[c] = RawCopy(
                c,
                tuple(sorted(wanted[c])),
                available=True,
                produced_at=datetime.fromtimestamp(ts_ms / 1000, UTC) if ts_ms > 0 else None,
                replay_attempt=_int(h.get("replay-attempt")),
            )

        with contextlib.suppress(KafkaException):  # what was not read stays "not available"
            read_offsets(kafka, topic, offsets, keep, stall_timeout_s=timeout_s)
    return [
        seen.get(c) or RawCopy(c, tuple(sorted(wanted[c])), available=False)
        for c in sorted(wanted, key=lambda c: (c.topic, c.partition, c.offset))
    ]


def add_role(wanted: dict[Coords, set[str]], coords: Iterable[Coords | None], role: str) -> None:
    for c in coords:
        if c is not None:
            wanted.setdefault(c, set()).add(role)
