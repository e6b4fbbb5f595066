"""What every wire format shares when it maps a message to event contract v1 (pure).

A mapped event is a contract v1 document whose `client_id` and credential come from the
authenticated write key, never from the body. `contract_check` validates the bytes the
router will read, a Kafka message at a time, with the contract's own parser
(`analytics_core.event_contract.parse_message`), so an event the capture service accepts
is one the router will route.

Event ids: an SDK message id that is a UUID is kept (lower-cased); any other message id
becomes `uuid5(CAPTURE_ID_NAMESPACE, "<client_id>/<message id>")`; a message without an id
gets `uuid5(..., "<client_id>/sha256:<hash of the message's canonical JSON>")`. All three
are stable, so an SDK retry of the same message maps to the same event id.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from analytics_core.event_contract import ContractViolation, Origin, parse_message
from capture.chunks import chunk, message_value

CAPTURE_ID_NAMESPACE = uuid.UUID("2b7c8f0e-3d7a-4a8e-9f61-5c1e0d9b7a42")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# The contract's parser needs an origin only to derive ids; mapped events carry their own.
_NO_ORIGIN = Origin("capture", 0, 0)
_MAX_ID_CHARS = 200


@dataclass(frozen=True, slots=True)
class MapContext:
    """Facts about the request every event of it shares."""

    client_id: str
    key_hash: str  # hex sha256 of the write key: the credential written to Kafka
    received_ms: int
    sent_at_ms: int | None  # batch-level send time, when the SDK gave one
    max_event_bytes: int


@dataclass(frozen=True, slots=True)
class MappedEvent:
    index: int  # position in the request
    event_id: str
    encoded: bytes  # the contract v1 JSON object


@dataclass(frozen=True, slots=True)
class EventRejected:
    index: int
    code: str
    message: str


EventOutcome = MappedEvent | EventRejected


class Unmappable(Exception):
    """Control flow inside one message's mapping only; never escapes `capture`'s mappers."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


_NAMESPACE_BYTES = CAPTURE_ID_NAMESPACE.bytes


def uuid5(name: str) -> str:
    """`str(uuid.uuid5(CAPTURE_ID_NAMESPACE, name))`, without building UUID objects (this
    runs once per event on the hot path)."""
    d = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name.encode()).digest()[:16])
    d[6] = (d[6] & 0x0F) | 0x50  # version 5
    d[8] = (d[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = d.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def event_id(client_id: str, message_id: object, message: dict[str, Any]) -> str:
    if isinstance(message_id, int) and not isinstance(message_id, bool):
        message_id = str(message_id)
    if isinstance(message_id, str) and message_id:
        if len(message_id) > _MAX_ID_CHARS:
            raise Unmappable("invalid_event", f"message id is longer than {_MAX_ID_CHARS}")
        if _UUID.fullmatch(message_id):
            return message_id.lower()
        return uuid5(f"{client_id}/{message_id}")
    if message_id is not None and message_id != "":
        raise Unmappable("invalid_event", "message id must be a string")
    try:
        canonical = orjson.dumps(message, option=orjson.OPT_SORT_KEYS)
    except TypeError as exc:  # orjson.JSONEncodeError, e.g. nesting past the encoder's limit
        raise Unmappable("invalid_event", f"message cannot be encoded: {exc}") from None
    digest = hashlib.sha256(canonical).hexdigest()
    return uuid5(f"{client_id}/sha256:{digest}")


def time_ms(value: object, field: str) -> int | None:
    """Epoch milliseconds of an SDK time: ISO 8601 (no zone means UTC) or epoch ms."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise Unmappable("invalid_event", f"{field} must be an ISO 8601 string or epoch ms")
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str) and len(value) <= 64:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise Unmappable("invalid_event", f"{field} {value!r} is not ISO 8601") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        try:
            return int(parsed.timestamp() * 1000)
        except (OverflowError, OSError, ValueError):
            raise Unmappable("invalid_event", f"{field} {value!r} is out of range") from None
    raise Unmappable("invalid_event", f"{field} must be an ISO 8601 string or epoch ms")


def identity(value: object, field: str) -> str | None:
    """A user identifier as the contract wants it: a string (SDKs may send numbers)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise Unmappable("invalid_event", f"{field} must be a string")


def extra_key(name: str) -> str:
    """Where an unmapped top-level field of a message is kept inside `properties`."""
    return name if name.startswith("$") else "$" + name


def finish(
    ctx: MapContext,
    index: int,
    *,
    eid: str,
    name: object,
    user_id: str | None,
    anonymous_id: str | None,
    timestamp_ms: int | None,
    sent_at_ms: int | None,
    properties: dict[str, Any],
) -> EventOutcome:
    """Build the contract v1 document (`contract_check` then checks it with the contract)."""
    doc: dict[str, Any] = {
        "client_id": ctx.client_id,
        "api_key_hash": ctx.key_hash,
        "event_id": eid,
        "event_name": name,
        "timestamp": ctx.received_ms if timestamp_ms is None else timestamp_ms,
        "properties": properties,
    }
    if user_id is not None:
        doc["user_id"] = user_id
    if anonymous_id is not None:
        doc["anonymous_id"] = anonymous_id
    sent = sent_at_ms if sent_at_ms is not None else ctx.sent_at_ms
    if sent is not None:
        doc["sent_at"] = sent
    try:
        encoded = orjson.dumps(doc)
    except orjson.JSONEncodeError as exc:
        return EventRejected(index, "invalid_event", f"event cannot be encoded: {exc}")
    if len(encoded) > ctx.max_event_bytes:
        return EventRejected(
            index,
            "event_too_large",
            f"event is {len(encoded)} bytes once mapped; the limit is {ctx.max_event_bytes}",
        )
    return MappedEvent(index, eid, encoded)


def contract_check(
    events: list[MappedEvent],
) -> tuple[list[MappedEvent], list[EventRejected]]:
    """Split mapped events into those the contract accepts and those it refuses, checking
    them as the router will read them: in the Kafka messages `chunk` makes (the batch array
    counts for nesting), one parse per message."""
    accepted: list[MappedEvent] = []
    refused: list[EventRejected] = []
    for part in chunk(events):
        verdicts = parse_message(message_value(part), _NO_ORIGIN)
        if len(verdicts) != len(part):  # a whole-message verdict: judge each event alone
            verdicts = [parse_message(message_value([ev]), _NO_ORIGIN)[0] for ev in part]
        for ev, verdict in zip(part, verdicts, strict=True):
            if isinstance(verdict, ContractViolation):
                refused.append(EventRejected(ev.index, "invalid_event", verdict.detail))
            else:
                accepted.append(ev)
    return accepted, refused
