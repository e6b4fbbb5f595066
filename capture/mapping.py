"""What every wire format shares when it maps a message to event contract v1 (pure).

A mapped event is a contract v1 document whose `client_id` and credential come from the
authenticated write key, never from the body. Each wire format decodes its messages into
a typed `msgspec.Struct` in one pass (`properties` as `dict[str, Raw]` and every other
object-valued field as `Raw`, so values pass through as the bytes the SDK sent) and maps
them with one pure function that also checks every rule of the contract the router
applies (`analytics_core.event_contract`): text lengths, timestamp range, nesting depth;
`capture.chunks` checks the sizes. So an event the capture service accepts is one the
router will route, without encoding it and parsing it again:
tests/unit/test_capture_mapping.py runs what the mappers emit through
`event_contract.parse_message` to keep it so.

Event ids: an SDK message id that is a UUID is kept (lower-cased); any other message id
becomes `uuid5(CAPTURE_ID_NAMESPACE, "<client_id>/<message id>")`; a message without an id
gets `uuid5(..., "<client_id>/sha256:<hash of the message's canonical JSON>")`. All three
are stable, so an SDK retry of the same message maps to the same event id.

Nesting: a message as sent may nest at most `MAX_SENT_DEPTH` levels. Mapping moves a value
at most two levels deeper (a top-level field F becomes `properties.$F`, and the event sits
in the Kafka message's batch array), so the contract's `MAX_NESTING_DEPTH` always holds.
"""

from __future__ import annotations

import functools
import hashlib
import re
import typing
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Generic, TypeVar

import msgspec
import orjson
from msgspec import UNSET, Raw

from analytics_core.event_contract import (
    MAX_NESTING_DEPTH,
    MAX_TEXT,
    MAX_TIMESTAMP_MS,
    nests_deeper_than,
)
from analytics_core.rfc3339 import epoch_ms, rfc3339_ms

CAPTURE_ID_NAMESPACE = uuid.UUID("2b7c8f0e-3d7a-4a8e-9f61-5c1e0d9b7a42")
MAX_SENT_DEPTH = MAX_NESTING_DEPTH - 2
MAX_ID_CHARS = 200
UUID_TEXT = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_NAMESPACE_BYTES = CAPTURE_ID_NAMESPACE.bytes


@dataclass(frozen=True, slots=True)
class MapContext:
    """Facts about the request every event of it shares."""

    client_id: str
    key_hash: str  # hex sha256 of the write key: the credential written to Kafka
    received_ms: int
    sent_at_ms: int | None  # the request's send time, when valid (else dropped)
    max_event_bytes: int


@dataclass(frozen=True, slots=True)
class EventRejected:
    index: int
    code: str
    message: str


class Unmappable(Exception):
    """Control flow inside one message's mapping only; never escapes `capture`'s mappers."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ContractEvent(msgspec.Struct, omit_defaults=True, gc=False):
    """A contract v1 event as capture writes it (field names are the contract's)."""

    client_id: str
    api_key_hash: str
    event_id: str
    event_name: str
    timestamp: int
    properties: dict[str, Raw]
    user_id: str | None = None
    anonymous_id: str | None = None
    sent_at: int | None = None


M = TypeVar("M", bound=msgspec.Struct)


@dataclass(slots=True)
class Item(Generic[M]):
    """One message of a request, decoded and waiting to be mapped."""

    index: int
    msg: M
    extras: dict[str, Raw] | None  # fields the struct does not know (loose decoding only)
    raw: Raw | bytes  # the message as sent (an id-less message's id comes from it)


@dataclass(slots=True)
class Parsed(Generic[M]):
    """A request body read by its wire format: the messages to map, those refused already
    (not an object, too deep), the write key and send time the body carries."""

    items: list[Item[M]]
    rejected: list[EventRejected]
    key: str | None
    key_problem: str | None  # the messages carry different keys
    sent_at: object


_ENCODER = msgspec.json.Encoder()
_FIELDS = msgspec.json.Decoder(dict[str, Raw])
_PROPERTIES = msgspec.json.Decoder(dict[str, Raw] | None)
# `properties` of a message decoded field by field that is neither an object nor null:
# the mapper rejects the message when it gets to it (identity-compared, never filled).
NOT_AN_OBJECT: Final[dict[str, Raw]] = {}


def encode_value(value: object) -> Raw:
    """A Python value as raw JSON (for values capture adds to `properties`)."""
    return Raw(_ENCODER.encode(value))


def decode_value(raw: Raw) -> Any:
    return msgspec.json.decode(raw)


# -- decoding --------------------------------------------------------------------------
def decode_messages(
    body: bytes, raws: list[Raw], decoder: msgspec.json.Decoder[M], struct_type: type[M]
) -> tuple[list[Item[M]], list[EventRejected]]:
    """Each message of a batch (`raws`, read from `body`) on its own, so one bad message
    costs only itself: typed in one pass when it has the usual shape, else field by field
    (`decode_loose`); deeper than `MAX_SENT_DEPTH`, rejected."""
    items: list[Item[M]] = []
    rejected: list[EventRejected] = []
    # Every level of nesting takes two bytes at least: a small body can not be too deep.
    measure = len(body) > 2 * MAX_SENT_DEPTH
    decode = decoder.decode
    for index, raw in enumerate(raws):
        if measure:
            data = bytes(raw)
            # nests_deeper_than's first test, inline: most messages have few brackets.
            if data.count(b"{") + data.count(b"[") > MAX_SENT_DEPTH and nests_deeper_than(
                data, MAX_SENT_DEPTH
            ):
                rejected.append(too_deep(index))
                continue
        try:
            items.append(Item(index, decode(raw), None, raw))
            continue
        except msgspec.ValidationError:
            loose = decode_loose(struct_type, raw)
        if loose is None:
            rejected.append(EventRejected(index, "invalid_event", "message must be a JSON object"))
        else:
            items.append(Item(index, loose[0], loose[1], raw))
    return items, rejected


def too_deep(index: int) -> EventRejected:
    return EventRejected(
        index,
        "invalid_event",
        f"arrays/objects nest deeper than {MAX_SENT_DEPTH} levels (the message counts)",
    )


def decode_loose(struct_type: type[M], raw: bytes | Raw) -> tuple[M, dict[str, Raw]] | None:
    """A message the typed decoder refused (an unknown field, a field of another type),
    field by field: known fields set on the struct, the others returned as raw JSON in
    message order. None when the message is not a JSON object."""
    try:
        fields = _FIELDS.decode(raw)
    except msgspec.ValidationError:
        return None
    known = _json_names(struct_type)
    msg = struct_type()
    extras: dict[str, Raw] = {}
    for name, value in fields.items():
        attr, is_raw = known.get(name, ("", False))
        if not attr:
            extras[name] = value
        elif attr == "properties":
            try:
                setattr(msg, attr, _PROPERTIES.decode(value))
            except msgspec.ValidationError:
                setattr(msg, attr, NOT_AN_OBJECT)
        elif is_raw:
            setattr(msg, attr, value)
        else:
            try:
                setattr(msg, attr, msgspec.json.decode(value))
            except msgspec.ValidationError:  # a number no Python type holds (1e999)
                setattr(msg, attr, value)  # refused by the mapper as the wrong type
    return msg, extras


@functools.cache
def _json_names(struct_type: type[msgspec.Struct]) -> dict[str, tuple[str, bool]]:
    """JSON name -> (attribute name, kept as raw JSON) of a message struct's fields."""
    return {
        f.encode_name: (f.name, Raw in typing.get_args(f.type))
        for f in msgspec.structs.fields(struct_type)
    }


def one_key(keys: set[str]) -> tuple[str | None, str | None]:
    """The write key the messages of a body agree on: (key or None, problem or None)."""
    if len(keys) > 1:
        return None, "the messages carry different write keys"
    return (keys.pop() if keys else None), None


# -- field rules -----------------------------------------------------------------------
def uuid5(name: str) -> str:
    """`str(uuid.uuid5(CAPTURE_ID_NAMESPACE, name))`, without building UUID objects (this
    runs once per event on the hot path): the SHA-1's first 32 hex digits with the version
    digit set to 5 and the variant bits to 10."""
    h = hashlib.sha1(_NAMESPACE_BYTES + name.encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def canonical_json(raw: bytes | Raw, overrides: dict[str, Any]) -> bytes:
    """The message as sorted-key JSON (what an id-less message's id is derived from), with
    `overrides` applied (fields the endpoint implies, like a single-event path's type)."""
    try:
        doc = orjson.loads(bytes(raw))
    except orjson.JSONDecodeError:  # valid JSON orjson can not hold (integers past 64 bits)
        return bytes(raw)
    if isinstance(doc, dict):
        doc.update(overrides)
    try:
        return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # orjson.JSONEncodeError: nesting past its encoder's limit
        return bytes(raw)


def event_id(
    client_id: str, message_id: object, raw: bytes | Raw, implied_type: object = UNSET
) -> str:
    """The event id of a message (see the module docstring). An id-less message's comes
    from its canonical JSON: `raw` as sent, with the type its endpoint implies if any."""
    if type(message_id) is str and 0 < len(message_id) <= MAX_ID_CHARS:
        if len(message_id) == 36 and UUID_TEXT.fullmatch(message_id):
            return message_id.lower()
        return uuid5(f"{client_id}/{message_id}")
    if isinstance(message_id, int) and not isinstance(message_id, bool):
        return uuid5(f"{client_id}/{message_id}")
    if type(message_id) is str and len(message_id) > MAX_ID_CHARS:
        raise Unmappable("invalid_event", f"message id is longer than {MAX_ID_CHARS}")
    if message_id is not None and message_id is not UNSET and message_id != "":
        raise Unmappable("invalid_event", "message id must be a string")
    implied = {} if implied_type is UNSET else {"type": implied_type}
    digest = hashlib.sha256(canonical_json(raw, implied)).hexdigest()
    return uuid5(f"{client_id}/sha256:{digest}")


def keep_fields(
    props: dict[str, Raw], extras: dict[str, Raw], secrets: frozenset[str], ctx: MapContext
) -> None:
    """A message's fields its struct does not know, kept inside `properties`: under their
    own name when it starts with `$`, else as `$<name>`; credentials are never kept. A
    `client_id` that is not the write key's client refuses the event (`wrong_client`): the
    key alone says whose it is, and an event claiming another client is not stored."""
    claimed = extras.get("client_id")
    if claimed is not None and decode_value(claimed) != ctx.client_id:
        raise Unmappable(
            "wrong_client",
            f"client_id {bytes(claimed)[:60].decode('utf-8', 'replace')} is not the write "
            f"key's client ({ctx.client_id})",
        )
    for field, value in extras.items():
        if field not in secrets:
            props[field if field.startswith("$") else "$" + field] = value


def time_ms(value: object, field: str) -> int | None:
    """Epoch milliseconds of an SDK time: ISO 8601 (no zone means UTC) or epoch ms. None
    when absent or empty. The typed decoders hand most RFC 3339 times over as datetime
    already (msgspec, in C: microseconds, a finer fraction rounded); text that did not
    decode so (a leap second, lower-case t/z) is read as the router reads it first."""
    if type(value) is datetime:
        parsed = value
    elif value is None or value is UNSET or value == "":
        return None
    elif isinstance(value, bool):
        raise Unmappable("invalid_event", f"{field} must be an ISO 8601 string or epoch ms")
    elif isinstance(value, int):
        return value
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise Unmappable("invalid_event", f"{field} is out of range")
        return int(value)
    elif isinstance(value, str) and len(value) <= 64:
        exact = rfc3339_ms(value)
        if exact is not None:
            return exact
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise Unmappable("invalid_event", f"{field} {value!r} is not ISO 8601") from None
    else:
        raise Unmappable("invalid_event", f"{field} must be an ISO 8601 string or epoch ms")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return epoch_ms(parsed)
    except (OverflowError, OSError, ValueError):
        raise Unmappable("invalid_event", f"{field} {value!r} is out of range") from None


def device_time_ms(original: Raw, sent_ms: int | None, received_ms: int) -> int | None:
    """When an event happened by an `originalTimestamp` (the device's clock, which
    RudderStack's SDKs send instead of `timestamp`), corrected as Segment and RudderStack
    correct it for a device clock that is off: received - (sentAt - originalTimestamp);
    as is without a sentAt. None when it is unreadable or the result out of range: the
    field is not required, so the event is kept (with the time received) rather than
    refused for it."""
    try:
        value = msgspec.json.decode(original)
        original_ms = time_ms(value, "originalTimestamp")
    except (msgspec.DecodeError, Unmappable):
        return None
    if original_ms is None:
        return None
    at = original_ms if sent_ms is None else received_ms - (sent_ms - original_ms)
    return at if in_contract_range(at) else None


def identity(value: object, field: str) -> str | None:
    """A user identifier as the contract wants it: a string (SDKs may send numbers)."""
    if type(value) is str:
        return value or None
    if value is None or value is UNSET:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise Unmappable("invalid_event", f"{field} must be a string")


def in_contract_range(ms: int) -> bool:
    return 0 <= ms <= MAX_TIMESTAMP_MS


def _out_of_range(field: str, contract_field: str) -> Unmappable:
    return Unmappable(
        "invalid_event",
        f"{field} is outside 1970-01-01..2299-12-31 (contract v1 {contract_field})",
    )


def _too_long(field: str, contract_field: str) -> Unmappable:
    return Unmappable(
        "invalid_event",
        f"{field} is longer than {MAX_TEXT} characters (contract v1 {contract_field})",
    )


def finish(
    ctx: MapContext,
    eid: str,
    name: str,
    name_field: str,
    user_id: str | None,
    anonymous_id: str | None,
    user_field: str,
    timestamp_ms: int | None,
    sent_at_ms: int | None,
    properties: dict[str, Raw],
) -> ContractEvent:
    """The contract v1 event, once every contract rule a mapper can break is checked
    (`*_field` name the SDK's fields in the reasons). Raises Unmappable."""
    if len(name) > MAX_TEXT:
        raise _too_long(name_field, "event_name")
    if user_id is not None:
        if len(user_id) > MAX_TEXT:
            raise _too_long(user_field, "user_id")
    elif anonymous_id is not None and len(anonymous_id) > MAX_TEXT:
        raise _too_long(user_field, "anonymous_id")
    if timestamp_ms is None:
        timestamp_ms = ctx.received_ms
    elif not 0 <= timestamp_ms <= MAX_TIMESTAMP_MS:
        raise _out_of_range("timestamp", "timestamp")
    if sent_at_ms is None:
        sent_at_ms = ctx.sent_at_ms  # in range: the handler drops the request's when not
    elif not 0 <= sent_at_ms <= MAX_TIMESTAMP_MS:
        raise _out_of_range("sentAt", "sent_at")
    return ContractEvent(
        ctx.client_id,
        ctx.key_hash,
        eid,
        name,
        timestamp_ms,
        properties,
        user_id,
        anonymous_id,
        sent_at_ms,
    )


@dataclass(slots=True)
class Mapped:
    """A request's mapped events in request order, with their positions in the request."""

    events: list[ContractEvent]
    indices: list[int]


def map_all(
    items: list[Item[M]],
    map_item: Callable[[Item[M], MapContext], ContractEvent],
    ctx: MapContext,
) -> tuple[Mapped, list[EventRejected]]:
    """Every message of a request mapped: the events to produce and those refused with
    their index and reason."""
    events: list[ContractEvent] = []
    indices: list[int] = []
    rejected: list[EventRejected] = []
    for item in items:
        try:
            events.append(map_item(item, ctx))
        except Unmappable as exc:
            rejected.append(EventRejected(item.index, exc.code, exc.message))
            continue
        indices.append(item.index)
    return Mapped(events, indices), rejected
