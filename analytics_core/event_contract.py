"""Event contract v1 (see contract/event-v1.schema.json): pure parsing and validation.

`parse_message` turns the raw bytes of one Kafka message into a list of
per-event outcomes. Each outcome is either a `ValidEvent` (the contract holds;
authentication has not happened yet) or a `ContractViolation` with a reason
code from `analytics_core.reasons`. Nothing here does I/O or raises for bad
input: every event gets an explicit fate.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from analytics_core.naming import client_id_problem
from analytics_core.reasons import Reason

CONTRACT_VERSION = 1
MAX_MESSAGE_BYTES = (
    524_288  # below Kafka's default 1 MB message limit, so a dead letter always fits
)
MAX_BATCH_EVENTS = 500
MAX_TEXT = 200
MAX_TIMESTAMP_MS = 10_413_791_999_999  # 2299-12-31T23:59:59.999Z, the end of DateTime64's range
# Namespace for ids derived from Kafka coordinates: replays of the same message
# always derive the same event id, so re-inserts collapse on event_id.
_CANONICAL_UUID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
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
    credential_hash: str  # hex sha256 of the api key (or the pre-hashed value)
    event_id: str
    event_id_derived: bool
    event_name: str
    timestamp_ms: int
    sent_at_ms: int | None
    user_id: str
    properties: dict[str, Any]  # serialised once, when the row is written


@dataclass(frozen=True, slots=True)
class ContractViolation:
    batch_index: int | None  # None: the whole message is affected
    reason: Reason
    detail: str
    client_id: str | None = None
    event_id: str | None = None


EventOutcome = ValidEvent | ContractViolation


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
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as uexc:
            return [ContractViolation(None, Reason.INVALID_ENCODING, f"not UTF-8: {uexc}")]
        return [ContractViolation(None, Reason.INVALID_JSON, f"not JSON: {exc}")]
    if isinstance(doc, dict):
        return [parse_event(doc, 0, origin)]
    if isinstance(doc, list):
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
        return [parse_event(item, i, origin) for i, item in enumerate(doc)]
    return [
        ContractViolation(
            None,
            Reason.SCHEMA_VIOLATION,
            f"message must be a JSON object or array, got {type(doc).__name__}",
        )
    ]


def _text(doc: dict[str, Any], key: str, *, required: bool) -> str | None:
    value = doc.get(key)
    if value is None:
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
    elif isinstance(value, str) and len(value) <= 40:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise _Violation(f"{key} {value!r} is not an RFC 3339 date-time") from None
        if parsed.tzinfo is None:
            raise _Violation(f"{key} {value!r} has no time zone; add 'Z' or an offset")
        ms = int(parsed.timestamp() * 1000)
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


def parse_event(doc: object, batch_index: int, origin: Origin) -> EventOutcome:
    """One event's outcome. A fast path accepts the common shape (plain api_key, epoch-ms
    timestamps, canonical UUIDs); anything else, valid or not, takes `_parse_event_checked`,
    which is the authority: the fast path only ever accepts what it would accept."""
    if type(doc) is dict:
        get = doc.get
        cid = get("client_id")
        eid = get("event_id")
        key = get("api_key")
        name = get("event_name")
        if name is None:
            name = get("event_type")
        user = get("user_id")
        ts = get("timestamp")
        sent = get("sent_at")
        props = get("properties")
        if (
            type(cid) is str
            and (cid in _valid_client_ids or _remember_client_id(cid))
            and (eid is None or (type(eid) is str and _CANONICAL_UUID.fullmatch(eid)))
            and type(key) is str
            and 0 < len(key) <= MAX_TEXT
            and type(name) is str
            and 0 < len(name) <= MAX_TEXT
            and type(user) is str
            and 0 < len(user) <= MAX_TEXT
            and type(ts) is int
            and 0 <= ts <= MAX_TIMESTAMP_MS
            and (sent is None or (type(sent) is int and 0 <= sent <= MAX_TIMESTAMP_MS))
            and type(props) is dict
        ):
            return ValidEvent(
                batch_index,
                cid,
                _hash_key_memo(key),
                derive_event_id(origin, batch_index) if eid is None else eid.lower(),
                eid is None,
                name,
                ts,
                sent,
                user,
                props,
            )
    return _parse_event_checked(doc, batch_index, origin)


def _remember_client_id(cid: str) -> bool:
    if client_id_problem(cid) is not None:
        return False
    if len(_valid_client_ids) >= _MEMO_LIMIT:
        _valid_client_ids.clear()
    _valid_client_ids.add(cid)
    return True


def _parse_event_checked(doc: object, batch_index: int, origin: Origin) -> EventOutcome:
    if not isinstance(doc, dict):
        return ContractViolation(
            batch_index,
            Reason.SCHEMA_VIOLATION,
            f"event must be an object, got {type(doc).__name__}",
        )
    raw_client = doc.get("client_id")
    client_problem = client_id_problem(raw_client)
    client_id = raw_client if client_problem is None else None
    raw_event_id = doc.get("event_id")
    event_id: str | None = None
    try:
        if client_problem is not None:
            raise _Violation(client_problem)
        if raw_event_id is not None:
            if not isinstance(raw_event_id, str) or len(raw_event_id) > 40:
                raise _Violation("event_id must be a UUID string")
            if _CANONICAL_UUID.fullmatch(raw_event_id):
                event_id = raw_event_id.lower()
            else:
                try:
                    event_id = str(uuid.UUID(raw_event_id))
                except ValueError:
                    raise _Violation(f"event_id {raw_event_id!r} is not a UUID") from None
        api_key = _text(doc, "api_key", required=False) if "api_key" in doc else None
        key_hash = doc.get("api_key_hash")
        if api_key:
            credential_hash = hash_api_key(api_key)
        elif isinstance(key_hash, str) and len(key_hash) == 64:
            credential_hash = key_hash.lower()
            try:
                int(credential_hash, 16)
            except ValueError:
                raise _Violation("api_key_hash must be 64 hex characters") from None
        else:
            raise _Violation("a credential is required: api_key, or api_key_hash (hex sha256)")
        name = _text(doc, "event_name", required=False) or _text(doc, "event_type", required=False)
        if not name:
            raise _Violation("event_name (or event_type) is required")
        user = _text(doc, "user_id", required=False) or _text(doc, "anonymous_id", required=False)
        if user is None:
            raise _Violation("user_id (or anonymous_id) is required")
        if "timestamp" not in doc:
            raise _Violation("timestamp is required")
        ts = _timestamp_ms(doc["timestamp"], "timestamp")
        sent = doc.get("sent_at")
        sent_ms = None if sent is None else _timestamp_ms(sent, "sent_at")
        props = doc.get("properties")
        if not isinstance(props, dict):
            raise _Violation("properties must be a JSON object")
    except _Violation as v:
        return ContractViolation(batch_index, Reason.SCHEMA_VIOLATION, str(v), client_id, event_id)
    return ValidEvent(
        batch_index=batch_index,
        client_id=raw_client,  # type: ignore[arg-type]  # validated above
        credential_hash=credential_hash,
        event_id=event_id or derive_event_id(origin, batch_index),
        event_id_derived=event_id is None,
        event_name=name,
        timestamp_ms=ts,
        sent_at_ms=sent_ms,
        user_id=user,
        properties=props,
    )
