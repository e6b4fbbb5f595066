"""Segment's HTTP Tracking API (also RudderStack's) mapped to event contract v1 (pure).

The mapping (README "Capture endpoint (HTTP)" has it as a table):
- `messageId` -> `event_id` (`capture.mapping.event_id`);
- `type` track -> `event_name` = `event`; page / screen / identify / group / alias ->
  `$page` / `$screen` / `$identify` / `$group` / `$alias`;
- `userId` -> `user_id`, else `anonymousId` -> `anonymous_id` (with both, `anonymousId`
  is kept as `properties.$anonymousId`);
- `timestamp` -> `timestamp` (missing: time received); `sentAt` of the message, else of
  the batch -> `sent_at`; `properties` -> `properties`;
- every other field F (`context`, `traits`, `name`, `groupId`, `integrations`...) ->
  `properties["$F"]`; `writeKey` is the credential and is never stored.
"""

from __future__ import annotations

from typing import Any

from capture.mapping import (
    EventOutcome,
    EventRejected,
    MapContext,
    Unmappable,
    event_id,
    extra_key,
    finish,
    identity,
    time_ms,
)

EVENT_NAMES = {
    "page": "$page",
    "screen": "$screen",
    "identify": "$identify",
    "group": "$group",
    "alias": "$alias",
}
# Path suffix -> the type a single-message endpoint implies (analytics.js uses the short ones).
SINGLE_PATHS = {
    "track": "track",
    "t": "track",
    "identify": "identify",
    "i": "identify",
    "page": "page",
    "p": "page",
    "screen": "screen",
    "s": "screen",
    "group": "group",
    "g": "group",
    "alias": "alias",
    "a": "alias",
}
BATCH_PATHS = frozenset({"batch", "b", "import"})
_CONSUMED = frozenset(
    {"type", "event", "messageId", "userId", "anonymousId", "timestamp", "sentAt", "properties"}
)
_SECRETS = frozenset({"writeKey", "write_key", "api_key", "token"})


def messages(doc: object, kind: str) -> list[Any] | str:
    """The messages of a request body (`kind` is the path's last segment), or a problem."""
    if not isinstance(doc, dict):
        return "body must be a JSON object"
    if kind in BATCH_PATHS:
        batch = doc.get("batch")
        if not isinstance(batch, list):
            return "body must have a 'batch' array"
        if not batch:
            return "'batch' is empty"
        return batch
    return [dict(doc, type=SINGLE_PATHS[kind])]


def body_key(doc: object, msgs: list[Any]) -> str | Unmappable | None:
    """The write key carried in the body (batch level, else the messages'), if any."""
    keys = set()
    if isinstance(doc, dict) and isinstance(doc.get("writeKey"), str):
        return str(doc["writeKey"])
    for m in msgs:
        if isinstance(m, dict) and isinstance(m.get("writeKey"), str):
            keys.add(m["writeKey"])
    if len(keys) > 1:
        return Unmappable("invalid_request", "messages carry different write keys")
    return keys.pop() if keys else None


def batch_sent_at(doc: object) -> object:
    return doc.get("sentAt") if isinstance(doc, dict) else None


def map_message(msg: object, index: int, ctx: MapContext) -> EventOutcome:
    if not isinstance(msg, dict):
        return EventRejected(index, "invalid_event", "message must be a JSON object")
    try:
        mtype = msg.get("type", "track")
        if mtype == "track":
            name = msg.get("event")
            if not isinstance(name, str) or not name:
                raise Unmappable("invalid_event", "track message needs a non-empty 'event'")
        elif isinstance(mtype, str) and mtype in EVENT_NAMES:
            name = EVENT_NAMES[mtype]
        else:
            raise Unmappable("invalid_event", f"unknown message type {mtype!r}")
        user = identity(msg.get("userId"), "userId")
        anonymous = identity(msg.get("anonymousId"), "anonymousId")
        if user is None and anonymous is None:
            raise Unmappable("invalid_event", "userId or anonymousId is required")
        props = msg.get("properties")
        if props is None:
            props = {}
        elif not isinstance(props, dict):
            raise Unmappable("invalid_event", "properties must be a JSON object")
        else:
            props = dict(props)
        for key, value in msg.items():
            if key not in _CONSUMED and key not in _SECRETS:
                props[extra_key(key)] = value
        if user is not None and anonymous is not None:
            props["$anonymousId"] = anonymous
        eid = event_id(ctx.client_id, msg.get("messageId"), msg)
        ts = time_ms(msg.get("timestamp"), "timestamp")
        sent = time_ms(msg.get("sentAt"), "sentAt")
    except Unmappable as exc:
        return EventRejected(index, exc.code, exc.message)
    return finish(
        ctx,
        index,
        eid=eid,
        name=name,
        user_id=user,
        anonymous_id=None if user is not None else anonymous,
        timestamp_ms=ts,
        sent_at_ms=sent,
        properties=props,
    )
