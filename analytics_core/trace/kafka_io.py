"""The event on Kafka: its dead letters (bounded scan) and the raw messages that carried it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from analytics_core.dead_letter import header_map
from analytics_core.event_contract import Origin, derive_event_id
from analytics_core.settings import KafkaSettings
from analytics_core.trace.model import Coords, LetterHit, RawCopy
from analytics_core.trace.topic_scan import ScanBounds, ScanResult, scan_topic


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
        h = header_map(msg.headers())  # type: ignore[arg-type]
        how = letter_match(h, event_id)
        if how is not None:
            hits.append(_letter(msg, h, how))

    result = scan_topic(kafka, kafka.dead_letter_topic, bounds, visit)
    hits.sort(key=lambda x: (x.produced_at or datetime.min.replace(tzinfo=UTC), x.dl.offset))
    return hits, result


def fetch_raw_copies(
    kafka: KafkaSettings, wanted: dict[Coords, set[str]], *, timeout_s: float = 5.0
) -> list[RawCopy]:
    """The messages at these coordinates (one read each; gone = removed by retention)."""
    if not wanted:
        return []
    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap_servers,
            "group.id": f"trace-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    out: list[RawCopy] = []
    try:
        for coords in sorted(wanted, key=lambda c: (c.topic, c.partition, c.offset)):
            out.append(_fetch_one(consumer, coords, tuple(sorted(wanted[coords])), timeout_s))
    finally:
        consumer.close()
    return out


def _fetch_one(consumer: Consumer, c: Coords, roles: tuple[str, ...], timeout_s: float) -> RawCopy:
    try:
        lo, hi = consumer.get_watermark_offsets(TopicPartition(c.topic, c.partition), timeout=10)
    except KafkaException:  # topic or partition gone
        return RawCopy(c, roles, available=False)
    if not lo <= c.offset < hi:
        return RawCopy(c, roles, available=False)
    consumer.assign([TopicPartition(c.topic, c.partition, c.offset)])
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    break
                continue
            if msg.offset() != c.offset:
                break  # compacted away or transaction marker
            h = header_map(msg.headers())  # type: ignore[arg-type]
            ts_ms = msg.timestamp()[1]
            return RawCopy(
                c,
                roles,
                available=True,
                produced_at=datetime.fromtimestamp(ts_ms / 1000, UTC) if ts_ms > 0 else None,
                replay_attempt=_int(h.get("replay-attempt")),
            )
    finally:
        consumer.unassign()
    return RawCopy(c, roles, available=False)


def add_role(wanted: dict[Coords, set[str]], coords: Iterable[Coords | None], role: str) -> None:
    for c in coords:
        if c is not None:
            wanted.setdefault(c, set()).add(role)
