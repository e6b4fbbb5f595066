"""Event contract v1 (see contract/event-v1.schema.json): pure parsing and validation.

`parse_message` turns the raw bytes of one Kafka message into a list of
per-event outcomes. Each outcome is either a `ValidEvent` (the contract holds;
authentication has not happened yet) or a `ContractViolation` with a reason
code from `analytics_core.reasons`. Nothing here does I/O or raises for bad
input: every event gets an explicit fate.

Invariants:
- `ValidEvent.properties` is the producer's JSON text of the `properties` object, byte for
  byte (msgspec hands it over as `Raw`, validated but never re-serialised), so big
  integers, key order, float text and escapes survive to `events_base.event_properties`;
- a message nests at most `MAX_NESTING_DEPTH` levels of arrays/objects (the batch array
  and the event object count). It is checked at parse time, on the whole message, and is
  far below what the decoder (Python's recursion limit, ~1000) and ClickHouse (its input
  parser copies object text without a depth limit; measured past 1500) accept, so an
  accepted event can never make a client's INSERT fail;
- credentials are ASCII: `credential_hash` is 64 lower-case ASCII hex digits, so the
  constant-time comparison never sees a character it refuses;
- a message the decoder refuses only for escaped lone UTF-16 surrogates or a leading byte
  order mark is read repaired (each surrogate as `\\ufffd`, the BOM dropped:
  analytics_core.json_text), as capture reads request bodies: a string cut inside an emoji
  by a JavaScript producer costs no event. Its text is then the repaired text, the only
  exception to "byte for byte";
- `common_events` (the router's hot path) only ever accepts messages `parse_message` accepts
  whole, with the same values: it declines (None) anything else, and the caller then asks
  `parse_message`, the authority.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from itertools import accumulate
from typing import Annotated, Any

import msgspec
from msgspec import UNSET, Meta, Raw, UnsetType

from analytics_core.json_text import repaired
from analytics_core.naming import client_id_problem
from analytics_core.reasons import Reason
from analytics_core.rfc3339 import rfc3339_ms, why_not_rfc3339

CONTRACT_VERSION = 1
MAX_MESSAGE_BYTES = (
    524_288  # below Kafka's default 1 MB message limit, so a dead letter always fits
)
MAX_BATCH_EVENTS = 500
MAX_TEXT = 200
MAX_NESTING_DEPTH = 128  # arrays/objects in one message, the batch array and event included
MAX_TIMESTAMP_MS = 10_413_791_999_999  # 2299-12-31T23:59:59.999Z, the end of DateTime64's range
# Namespace for ids derived from Kafka coordinates: replays of the same message
# always derive the same event id, so re-inserts collapse on event_id.
_CANONICAL_UUID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
# The schema's pattern: the canonical form, or the same 32 digits with any of its 4 dashes left out.
_UUID_FORMS = re.compile(
    r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"
)
_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}")  # explicit ASCII classes: no Unicode digits
DERIVED_ID_NAMESPACE = uuid.UUID("6f0d3c2e-6c1e-4f7a-9a63-3d1f0b0e5a11")


# Hot-path records below are slotted but not frozen: a frozen dataclass pays an
# object.__setattr__ per field on construction, which is measurable at 30k events/s.
# Treat them as immutable all the same.
@dataclass(slots=True)
class Origin:
    """Where a message first entered the pipeline (kept across dead-letter replays)."""

    topic: str
    partition: int
    offset: int


@dataclass(slots=True)
class ValidEvent:
    batch_index: int
    client_id: str
    credential_hash: str  # 64 lower-case ASCII hex digits: sha256 of the api key, or the hash
    event_id: str
    event_id_derived: bool
    event_name: str
    timestamp_ms: int
    sent_at_ms: int | None
    user_id: str
    properties: bytes  # the producer's JSON text of the properties object, unchanged


@dataclass(frozen=True, slots=True)
class ContractViolation:
    batch_index: int | None  # None: the whole message is affected
    reason: Reason
    detail: str
    client_id: str | None = None
    event_id: str | None = None


EventOutcome = ValidEvent | ContractViolation


class EventDoc(msgspec.Struct, gc=False):
    """The contract's fields of one event object as decoded; anything else is ignored.

    Values keep their JSON types (checked below, with a message naming the field);
    `UNSET` means the field is absent. `properties` is the raw JSON text of the value.
    """

    client_id: Any = UNSET
    api_key: Any = UNSET
    api_key_hash: Any = UNSET
    event_id: Any = UNSET
    event_name: Any = UNSET
    event_type: Any = UNSET
    timestamp: Any = UNSET
    sent_at: Any = UNSET
    user_id: Any = UNSET
    anonymous_id: Any = UNSET
    properties: Raw | UnsetType = UNSET


_MESSAGE_DECODER = msgspec.json.Decoder(EventDoc | list[Raw])
_EVENT_DECODER = msgspec.json.Decoder(EventDoc)
_JSON_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"')  # possessive: linear on any input
_BRACKETS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # open +1, close -1 (signed)
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))


def nesting_depth(raw: bytes) -> int:
    """How deeply arrays/objects nest in a JSON text (brackets inside strings ignored)."""
    text = _JSON_STRING.sub(b"", raw) if b'"' in raw else raw
    steps = memoryview(text.translate(_BRACKETS, _NOT_BRACKETS)).cast("b")
    return max(accumulate(steps), default=0)


def nests_deeper_than(raw: bytes, limit: int) -> bool:
    """Cheap for the usual message: it has fewer brackets than the limit, so it can not
    nest deeper; only a message with more brackets is measured exactly."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    return nesting_depth(raw) > limit


def _too_deep(batch_index: int | None) -> ContractViolation:
    return ContractViolation(
        batch_index,
        Reason.INVALID_JSON,
        f"arrays/objects nest deeper than {MAX_NESTING_DEPTH} levels (the batch array and "
        "the event object count)",
    )


def derive_event_id(origin: Origin, batch_index: int) -> str:
    key = f"{origin.topic}/{origin.partition}/{origin.offset}/{batch_index}"
    return str(uuid.uuid5(DERIVED_ID_NAMESPACE, key))


def hash_api_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


def parse_message(raw: bytes | None, origin: Origin) -> list[EventOutcome]:
    """All outcomes of one message, in batch order."""
    if raw is None or len(raw) == 0:
        return [ContractViolation(None, Reason.INVALID_JSON, "empty message")]
    if len(raw) > MAX_MESSAGE_BYTES:
        return [
            ContractViolation(
                None,
                Reason.PAYLOAD_TOO_LARGE,
                f"message is {len(raw)} bytes; the limit is {MAX_MESSAGE_BYTES}",
            )
        ]
    if not raw.isascii():  # the decoder does not check text it hands over raw (properties)
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return [ContractViolation(None, Reason.INVALID_ENCODING, f"not UTF-8: {exc}")]
    doc = _decoded(raw)
    if isinstance(doc, msgspec.DecodeError):  # once: the repaired text is not repaired again
        fixed = repaired(raw)  # never longer and still UTF-8: the checks above hold for it
        if fixed is not raw:
            raw, doc = fixed, _decoded(fixed)
    if isinstance(doc, msgspec.DecodeError):
        return [ContractViolation(None, Reason.INVALID_JSON, f"not JSON: {doc}")]
    if isinstance(doc, ContractViolation):
        return [doc]
    if type(doc) is EventDoc:
        if nests_deeper_than(raw, MAX_NESTING_DEPTH):
            return [_too_deep(None)]
        return [parse_event(doc, 0, origin)]
    assert isinstance(doc, list)
    if not doc:
        return [ContractViolation(None, Reason.SCHEMA_VIOLATION, "empty batch array")]
    if len(doc) > MAX_BATCH_EVENTS:
        return [
            ContractViolation(
                None,
                Reason.PAYLOAD_TOO_LARGE,
                f"batch has {len(doc)} events; the limit is {MAX_BATCH_EVENTS}",
            )
        ]
    return [_parse_batch_item(item, i, origin) for i, item in enumerate(doc)]


def _decoded(raw: bytes) -> EventDoc | list[Raw] | ContractViolation | msgspec.DecodeError:
    """The message decoded, why it is not a message, or the decoder's error (the text may
    be repairable: see analytics_core.json_text)."""
    try:
        doc: EventDoc | list[Raw] = _MESSAGE_DECODER.decode(raw)
    except msgspec.ValidationError as exc:
        return _not_object_or_array(raw, exc)
    except msgspec.DecodeError as exc:
        return exc
    except RecursionError:  # deeper than the decoder's stack allows: far past the limit
        return _too_deep(None)
    return doc


def _parse_batch_item(item: Raw, batch_index: int, origin: Origin) -> EventOutcome:
    text = bytes(item)
    if nests_deeper_than(text, MAX_NESTING_DEPTH - 1):  # inside the batch array
        return _too_deep(batch_index)
    try:
        doc = _EVENT_DECODER.decode(text)
    except msgspec.ValidationError as exc:
        got = _json_type_name(text)
        detail = f"event must be an object, got {got}" if got != "object" else str(exc)
        return ContractViolation(batch_index, Reason.SCHEMA_VIOLATION, detail[:500])
    return parse_event(doc, batch_index, origin)


_JSON_TYPES = {ord("{"): "object", ord("["): "array", ord('"'): "string", ord("t"): "boolean"}
_JSON_TYPES |= {ord("f"): "boolean", ord("n"): "null"}


def _json_type_name(text: bytes) -> str:
    """The JSON type of a value the decoder already read (so valid JSON), by its first byte."""
    stripped = text.lstrip(b" \t\r\n")
    return _JSON_TYPES.get(stripped[0], "number") if stripped else "nothing"


def _not_object_or_array(raw: bytes, exc: msgspec.ValidationError) -> ContractViolation:
    # Either the message is a scalar, or a contract field holds a number JSON allows but
    # no type can (1e999): the decoder's message names the field's path then.
    got = _json_type_name(raw) if str(exc).startswith("Expected `object | array`") else ""
    detail = f"message must be a JSON object or array, got {got}" if got else str(exc)
    return ContractViolation(None, Reason.SCHEMA_VIOLATION, detail[:500])


def _field(value: Any) -> Any:
    return None if value is UNSET else value


def _text(value: Any, key: str, *, required: bool) -> str | None:
    if value is None or value is UNSET:
        if required:
            raise _Violation(f"{key} is required")
        return None
    if not isinstance(value, str):
        raise _Violation(f"{key} must be a string, got {type(value).__name__}")
    if len(value) > MAX_TEXT:
        raise _Violation(f"{key} is longer than {MAX_TEXT} characters")
    return value


class _Violation(Exception):
    """Internal control flow inside parse_event only; never escapes this module."""


def _timestamp_ms(value: object, key: str) -> int:
    if isinstance(value, bool):
        raise _Violation(f"{key} must be an RFC 3339 string or epoch milliseconds")
    if isinstance(value, int):
        ms = value
    elif isinstance(value, float) and value.is_integer():
        ms = int(value)  # 1.7e12 is an integer to JSON Schema; exact below 2**53
    elif isinstance(value, str) and len(value) <= 40:
        parsed = rfc3339_ms(value)
        if parsed is None:
            raise _Violation(f"{key} {why_not_rfc3339(value)}")
        if value[17:19] == "60":  # the seconds, once the text is RFC 3339's
            raise _Violation(
                f"{key} {value!r} is a leap second, which JSON Schema's date-time and "
                "ClickHouse do not have; write :59.999"
            )
        ms = parsed
    else:
        raise _Violation(f"{key} must be an RFC 3339 string or epoch milliseconds")
    if not 0 <= ms <= MAX_TIMESTAMP_MS:
        raise _Violation(f"{key} is outside 1970-01-01..2299-12-31")
    return ms


# Bounded memo tables for the fast path (values repeat across events of a client).
_MEMO_LIMIT = 50_000
_valid_client_ids: set[str] = set()
_key_hashes: dict[str, str] = {}


def _hash_key_memo(api_key: str) -> str:
    h = _key_hashes.get(api_key)
    if h is None:
        if len(_key_hashes) >= _MEMO_LIMIT:
            _key_hashes.clear()
        h = _key_hashes[api_key] = hash_api_key(api_key)
    return h


def parse_event(doc: EventDoc, batch_index: int, origin: Origin) -> EventOutcome:
    """One event's outcome. A fast path accepts the common shape (a plain api_key or an
    api_key_hash, epoch-ms timestamps, canonical UUIDs); anything else, valid or not, takes
    `_parse_event_checked`, which is the authority: the fast path only ever accepts what it
    would accept."""
    cid = doc.client_id
    eid = doc.event_id
    key = doc.api_key
    key_hash = doc.api_key_hash
    if type(key) is str and 0 < len(key) <= MAX_TEXT and key_hash is UNSET:
        credential: str | None = _hash_key_memo(key)
    elif key is UNSET and type(key_hash) is str and _HEX_SHA256.fullmatch(key_hash):
        credential = key_hash.lower()
    else:
        credential = None
    # One member of each alias pair, the other absent: a pair that needs its rule (both
    # given, null, empty) takes the checked path.
    name = doc.event_name
    if name is UNSET:
        name = doc.event_type
    elif doc.event_type is not UNSET:
        name = None
    user = doc.user_id if doc.anonymous_id is UNSET else None
    ts = doc.timestamp
    sent = doc.sent_at
    props = doc.properties
    if (
        type(cid) is str
        and (cid in _valid_client_ids or _remember_client_id(cid))
        and (eid is UNSET or (type(eid) is str and _CANONICAL_UUID.fullmatch(eid)))
        and credential is not None
        and type(name) is str
        and 0 < len(name) <= MAX_TEXT
        and type(user) is str
        and 0 < len(user) <= MAX_TEXT
        and type(ts) is int
        and 0 <= ts <= MAX_TIMESTAMP_MS
        and (sent is UNSET or (type(sent) is int and 0 <= sent <= MAX_TIMESTAMP_MS))
        and type(props) is Raw
    ):
        text = bytes(props)
        if text[:1] == b"{":
            return ValidEvent(
                batch_index,
                cid,
                credential,
                derive_event_id(origin, batch_index) if eid is UNSET else eid.lower(),
                eid is UNSET,
                name,
                ts,
                None if sent is UNSET else sent,
                user,
                text,
            )
    return _parse_event_checked(doc, batch_index, origin)


def _remember_client_id(cid: str) -> bool:
    if client_id_problem(cid) is not None:
        return False
    if len(_valid_client_ids) >= _MEMO_LIMIT:
        _valid_client_ids.clear()
    _valid_client_ids.add(cid)
    return True


def _event_id(raw_event_id: Any) -> str | None:
    if raw_event_id is None or raw_event_id is UNSET:
        return None
    if not isinstance(raw_event_id, str) or len(raw_event_id) > 40 or not raw_event_id.isascii():
        raise _Violation("event_id must be a UUID string")
    if _CANONICAL_UUID.fullmatch(raw_event_id):
        return raw_event_id.lower()
    if not _UUID_FORMS.fullmatch(raw_event_id):  # uuid.UUID would take braces, urn:uuid:
        raise _Violation(f"event_id {raw_event_id!r} is not a UUID")
    return str(uuid.UUID(raw_event_id))


def _credential_hash(doc: EventDoc) -> str:
    """Both fields are checked when present; api_key is used when both are given."""
    api_key = _text(doc.api_key, "api_key", required=False)
    key_hash = _field(doc.api_key_hash)
    if key_hash not in (None, "") and (
        not isinstance(key_hash, str) or not _HEX_SHA256.fullmatch(key_hash)
    ):
        raise _Violation("api_key_hash must be 64 hex characters (0-9, a-f)")
    if api_key:
        return hash_api_key(api_key)
    if key_hash:
        return str(key_hash).lower()
    raise _Violation("a credential is required: api_key, or api_key_hash (hex sha256)")


def _one_of(first: Any, first_key: str, second: Any, second_key: str) -> str | None:
    """The first non-empty member of an alias pair (event_name/event_type,
    user_id/anonymous_id); both are checked when present. Null or "" count as absent."""
    a = _text(first, first_key, required=False)
    b = _text(second, second_key, required=False)
    return a or b or None


def _parse_event_checked(doc: EventDoc, batch_index: int, origin: Origin) -> EventOutcome:
    raw_client = _field(doc.client_id)
    client_problem = client_id_problem(raw_client)
    client_id = raw_client if client_problem is None else None
    event_id: str | None = None
    try:
        if client_problem is not None:
            raise _Violation(client_problem)
        event_id = _event_id(doc.event_id)
        credential_hash = _credential_hash(doc)
        name = _one_of(doc.event_name, "event_name", doc.event_type, "event_type")
        if not name:
            raise _Violation("event_name (or event_type) is required and not empty")
        user = _one_of(doc.user_id, "user_id", doc.anonymous_id, "anonymous_id")
        if not user:
            raise _Violation("user_id (or anonymous_id) is required and not empty")
        if doc.timestamp is UNSET:
            raise _Violation("timestamp is required")
        ts = _timestamp_ms(doc.timestamp, "timestamp")
        sent = _field(doc.sent_at)
        sent_ms = None if sent is None else _timestamp_ms(sent, "sent_at")
        props = doc.properties
        text = bytes(props) if type(props) is Raw else b""
        if text[:1] != b"{":
            raise _Violation("properties must be a JSON object")
    except _Violation as v:
        return ContractViolation(batch_index, Reason.SCHEMA_VIOLATION, str(v), client_id, event_id)
    return ValidEvent(
        batch_index=batch_index,
        client_id=raw_client,  # validated above
        credential_hash=credential_hash,
        event_id=event_id or derive_event_id(origin, batch_index),
        event_id_derived=event_id is None,
        event_name=name,
        timestamp_ms=ts,
        sent_at_ms=sent_ms,
        user_id=user,
        properties=text,
    )


# ---------------------------------------------------------------------------- hot path
_Text = Annotated[str, Meta(min_length=1, max_length=MAX_TEXT)]
_Millis = Annotated[int, Meta(ge=0, le=MAX_TIMESTAMP_MS)]


class _CommonDoc(msgspec.Struct, gc=False):
    """An event in the common shape, typed so that one decoding pass (in C) checks every
    field's type, length and range: plain api_key or api_key_hash, epoch-ms (or RFC 3339)
    timestamps, text fields of 1..MAX_TEXT characters. Anything else fails to decode, and
    the message goes to `parse_message`."""

    client_id: str
    timestamp: _Millis | str
    properties: Raw
    api_key: _Text | UnsetType = UNSET
    api_key_hash: str | UnsetType = UNSET
    event_id: str | UnsetType = UNSET
    event_name: _Text | UnsetType = UNSET
    event_type: _Text | UnsetType = UNSET
    user_id: _Text | UnsetType = UNSET
    anonymous_id: _Text | UnsetType = UNSET
    sent_at: _Millis | str | UnsetType = UNSET


# One valid event in the common shape, with the contract's values: (client_id, credential
# (lower-case hex sha256), event id as 16 big-endian bytes or None (derive it from the
# origin), event_name, timestamp_ms, user_id, properties (the producer's text: a bytes-like
# Raw), sent_at_ms or None). A tuple: the hot path builds millions.
CommonEvent = tuple[str, str, bytes | None, str, int, str, Raw, int | None]

_COMMON_MESSAGE = msgspec.json.Decoder(_CommonDoc | list[Raw])
_COMMON_EVENT = msgspec.json.Decoder(_CommonDoc)


def common_events(raw: bytes) -> list[CommonEvent] | None:
    """Every event of a message in the common shape, all valid by the contract, or None
    (something is unusual: `parse_message` decides). Same checks as `parse_message`, in the
    same order of precedence, so a message accepted here is accepted there with the same
    values (tests/unit/test_event_contract.py)."""
    if len(raw) > MAX_MESSAGE_BYTES or not raw:
        return None
    if not raw.isascii():
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
    try:
        doc = _COMMON_MESSAGE.decode(raw)
    except (msgspec.MsgspecError, RecursionError):
        return None
    if type(doc) is _CommonDoc:
        if nests_deeper_than(raw, MAX_NESTING_DEPTH):
            return None
        event = _common(doc)
        return None if event is None else [event]
    assert isinstance(doc, list)
    if not 0 < len(doc) <= MAX_BATCH_EVENTS:
        return None
    events = []
    for item in doc:
        text = bytes(item)
        if nests_deeper_than(text, MAX_NESTING_DEPTH - 1):
            return None
        try:
            event = _common(_COMMON_EVENT.decode(text))
        except (msgspec.MsgspecError, RecursionError):
            return None
        if event is None:
            return None
        events.append(event)
    return events


def uuid_bytes(event_id: str) -> bytes | None:
    """The 16 bytes of a canonical UUID (8-4-4-4-12 ASCII hex digits), else None. Same
    acceptance as `_CANONICAL_UUID`: 36 characters with the dashes in place, the 32 others
    hex digits (`fromhex` takes only ASCII hex, and whitespace, which would leave fewer
    than 16 bytes)."""
    if len(event_id) != 36 or not (
        event_id[8] == event_id[13] == event_id[18] == event_id[23] == "-"
    ):
        return None
    try:
        out = bytes.fromhex(event_id.replace("-", ""))
    except ValueError:
        return None
    return out if len(out) == 16 else None


def _common(doc: _CommonDoc) -> CommonEvent | None:
    """The checks decoding can not express, and the contract's values; None when
    `parse_event` would not accept the event as it is."""
    cid = doc.client_id
    if not (cid in _valid_client_ids or _remember_client_id(cid)):
        return None
    key = doc.api_key
    key_hash = doc.api_key_hash
    if key_hash is not UNSET and not _HEX_SHA256.fullmatch(key_hash):
        return None
    if type(key) is str:
        credential = _hash_key_memo(key)
    elif type(key_hash) is str:
        credential = key_hash.lower()
    else:
        return None
    eid = doc.event_id
    event_uuid = None
    if type(eid) is str:
        event_uuid = uuid_bytes(eid)
        if event_uuid is None:
            return None
    name = doc.event_name
    if name is UNSET:
        name = doc.event_type
        if name is UNSET:
            return None
    user = doc.user_id
    if user is UNSET:
        user = doc.anonymous_id
        if user is UNSET:
            return None
    ts, sent = doc.timestamp, doc.sent_at
    if type(ts) is str or type(sent) is str:
        try:
            ts = _timestamp_ms(ts, "timestamp")
            if sent is not UNSET:
                sent = _timestamp_ms(sent, "sent_at")
        except _Violation:
            return None
    props = doc.properties
    if memoryview(props)[:1] != b"{":
        return None
    return (
        cid,
        credential,
        event_uuid,
        name,  # type: ignore[return-value]  # str once the aliases are resolved
        ts,
        user,
        props,
        None if sent is UNSET else sent,
    )
