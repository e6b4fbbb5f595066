"""PostHog's capture API (Python SDK `/batch/`, posthog-js `/e/`, single `/capture/`) mapped
to event contract v1 (pure).

The mapping (README "Capture endpoint (HTTP)" has it as a table):
- `uuid` -> `event_id` (`capture.mapping.event_id`); `event` -> `event_name`;
- `distinct_id`, else `properties.distinct_id` -> `user_id`;
- `timestamp` -> `timestamp`; else time received minus `offset` ms; else time received;
- batch `sent_at`, else the `_` query parameter (epoch ms, posthog-js) -> `sent_at`;
- `properties` (without `token`) -> `properties`; every other field F (`$set`,
  `$set_once`, `type`...) -> `properties[F]` if F starts with `$`, else `properties["$F"]`,
  as sent;
- `api_key`, `token`, `properties.token` are the credential and are never stored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from msgspec import UNSET, Raw, UnsetType

from capture.body import BodyProblem, invalid_json
from capture.mapping import (
    NOT_AN_OBJECT,
    ContractEvent,
    Item,
    MapContext,
    Parsed,
    Unmappable,
    decode_messages,
    decode_value,
    event_id,
    finish,
    identity,
    keep_fields,
    one_key,
    time_ms,
)

BATCH_PATHS = frozenset({"batch", "e", "capture", "track", "i/v0/e"})


class PostHogEvent(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """The fields PostHog's SDKs send. An event with any other field is decoded field by
    field (`capture.mapping.decode_loose`), so none is ever dropped."""

    event: Any = UNSET
    distinct_id: Any = UNSET
    uuid: Any = UNSET
    # RFC 3339 times arrive as datetime; any other value is decoded field by field.
    timestamp: datetime | int | float | UnsetType | None = UNSET
    offset: Any = UNSET
    properties: dict[str, Raw] | UnsetType | None = UNSET
    # Credentials: read for the project key, never stored.
    api_key: Any = UNSET
    token: Any = UNSET
    # Kept inside properties (as `$type`, `$library`, `$library_version`, `$set`...).
    type: Raw | UnsetType = UNSET
    library: Raw | UnsetType = UNSET
    library_version: Raw | UnsetType = UNSET
    set: Raw | UnsetType = msgspec.field(default=UNSET, name="$set")
    set_once: Raw | UnsetType = msgspec.field(default=UNSET, name="$set_once")


class PostHogBatch(msgspec.Struct, gc=False):
    batch: list[Raw] | UnsetType = UNSET
    api_key: Any = UNSET
    token: Any = UNSET
    sent_at: Any = UNSET


_SECRETS = frozenset({"api_key", "token"})
_EVENT = msgspec.json.Decoder(PostHogEvent)
_BATCH = msgspec.json.Decoder(PostHogBatch)
_ARRAY = msgspec.json.Decoder(list[Raw])

PostHogItem = Item[PostHogEvent]


def parse(data: bytes, kind: str, query_sent_ms: str = "") -> Parsed[PostHogEvent] | BodyProblem:
    """Events of a request body: an array, an object with `batch`, or a single event.
    `query_sent_ms` is the `_` query parameter (posthog-js's send time, epoch ms)."""
    try:
        if data.lstrip()[:1] == b"[":
            events: list[Raw] = _ARRAY.decode(data)
            top = PostHogBatch()
        else:
            top = _BATCH.decode(data)
            events = [Raw(data)] if top.batch is UNSET else top.batch  # UNSET: one event
    except msgspec.ValidationError:
        try:
            msgspec.json.decode(data, type=Raw)
        except (msgspec.DecodeError, RecursionError) as exc:
            return invalid_json(exc)
        if data.lstrip()[:1] == b"{":
            return BodyProblem(400, "invalid_request", "'batch' must be an array")
        return BodyProblem(400, "invalid_request", "body must be a JSON object or array")
    except (msgspec.DecodeError, RecursionError) as exc:
        return invalid_json(exc)
    if not events:
        return BodyProblem(400, "invalid_request", "the batch is empty")
    items, rejected = decode_messages(data, events, _EVENT, PostHogEvent)
    keys = {k for item in items for k in _event_keys(item)}
    keys.update(k for k in (top.api_key, top.token) if isinstance(k, str))
    key, problem = one_key(keys)
    sent: object = top.sent_at
    if not sent:
        sent = int(query_sent_ms) if query_sent_ms.isdigit() else None
    return Parsed(items, rejected, key, problem, sent)


def _event_keys(item: PostHogItem) -> list[str]:
    """Every key an event carries (`api_key`, `token`, `properties.token`)."""
    msg = item.msg
    keys = [k for k in (msg.api_key, msg.token) if isinstance(k, str)]
    props = msg.properties
    if isinstance(props, dict) and "token" in props:
        token = _value(props["token"])
        if isinstance(token, str):
            keys.append(token)
    return keys


def _value(raw: Raw) -> Any:
    try:
        return decode_value(raw)
    except msgspec.ValidationError:  # a number JSON allows but Python can not hold (1e999)
        return None


def map_item(item: PostHogItem, ctx: MapContext) -> ContractEvent:
    """One event as a contract v1 event; raises Unmappable with the reason. (Runs once per
    event: the common shapes are tested inline before the general helpers.)"""
    msg = item.msg
    name = msg.event
    if type(name) is not str or not name:
        raise Unmappable("invalid_event", "event needs a non-empty 'event' name")
    props = msg.properties
    if props is NOT_AN_OBJECT:
        raise Unmappable("invalid_event", "properties must be a JSON object")
    if props is UNSET or props is None:
        props = {}
    distinct = msg.distinct_id
    if (distinct is UNSET or distinct is None or distinct == "") and "distinct_id" in props:
        distinct = _value(props["distinct_id"])
    user = distinct if type(distinct) is str and distinct else identity(distinct, "distinct_id")
    if user is None:
        raise Unmappable("invalid_event", "distinct_id is required")
    if "token" in props or "api_key" in props:
        for secret in _SECRETS:
            props.pop(secret, None)
    # One line per kept field: measured 3.5 times faster than a loop over them.
    if msg.type is not UNSET:
        props["$type"] = msg.type
    if msg.library is not UNSET:
        props["$library"] = msg.library
    if msg.library_version is not UNSET:
        props["$library_version"] = msg.library_version
    if msg.set is not UNSET:
        props["$set"] = msg.set
    if msg.set_once is not UNSET:
        props["$set_once"] = msg.set_once
    if item.extras:
        keep_fields(props, item.extras, _SECRETS, ctx)
    ts = time_ms(msg.timestamp, "timestamp")
    if ts is None:
        offset = msg.offset
        if isinstance(offset, int) and not isinstance(offset, bool) and offset >= 0:
            ts = ctx.received_ms - offset
    eid = event_id(ctx.client_id, msg.uuid, item.raw)
    return finish(ctx, eid, name, "event", user, None, "distinct_id", ts, None, props)
