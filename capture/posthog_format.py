"""PostHog's capture API (Python SDK `/batch/`, browser `/e/`, single `/capture/`) mapped
to event contract v1 (pure).

The mapping (README "Capture endpoint (HTTP)" has it as a table):
- `uuid` -> `event_id` (`capture.mapping.event_id`); `event` -> `event_name`;
- `distinct_id`, else `properties.distinct_id` -> `user_id`;
- `timestamp` -> `timestamp`; else time received minus `offset` ms; else time received;
- batch `sent_at`, else the `_` query parameter (epoch ms, posthog-js) -> `sent_at`;
- `properties` (without `token`) -> `properties`; every other field F (`$set`,
  `$set_once`, `type`...) -> `properties[F]` if F starts with `$`, else `properties["$F"]`;
- `api_key`, `token`, `properties.token` are the credential and are never stored.
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

BATCH_PATHS = frozenset({"batch", "e", "capture", "track", "i/v0/e"})
_CONSUMED = frozenset({"event", "distinct_id", "uuid", "timestamp", "offset", "properties"})
_SECRETS = frozenset({"api_key", "token"})


def messages(doc: object, kind: str) -> list[Any] | str:
    """Events of a request body: an array, an object with `batch`, or a single event."""
    if isinstance(doc, list):
        batch: object = doc
    elif isinstance(doc, dict):
        batch = doc.get("batch", [doc])
    else:
        return "body must be a JSON object or array"
    if not isinstance(batch, list):
        return "'batch' must be an array"
    if not batch:
        return "the batch is empty"
    return batch


def _event_key(m: object) -> str | None:
    if not isinstance(m, dict):
        return None
    for key in ("api_key", "token"):
        if isinstance(m.get(key), str):
            return str(m[key])
    props = m.get("properties")
    if isinstance(props, dict) and isinstance(props.get("token"), str):
        return str(props["token"])
    return None


def body_key(doc: object, msgs: list[Any]) -> str | Unmappable | None:
    if isinstance(doc, dict):
        for key in ("api_key", "token"):
            if isinstance(doc.get(key), str):
                return str(doc[key])
    keys = {k for k in map(_event_key, msgs) if k is not None}
    if len(keys) > 1:
        return Unmappable("invalid_request", "events carry different project keys")
    return keys.pop() if keys else None


def batch_sent_at(doc: object, query_sent_ms: str) -> object:
    if isinstance(doc, dict) and doc.get("sent_at"):
        return doc.get("sent_at")
    return int(query_sent_ms) if query_sent_ms.isdigit() else None


def map_message(msg: object, index: int, ctx: MapContext) -> EventOutcome:
    if not isinstance(msg, dict):
        return EventRejected(index, "invalid_event", "event must be a JSON object")
    try:
        name = msg.get("event")
        if not isinstance(name, str) or not name:
            raise Unmappable("invalid_event", "event needs a non-empty 'event' name")
        raw_props = msg.get("properties")
        if raw_props is None:
            raw_props = {}
        elif not isinstance(raw_props, dict):
            raise Unmappable("invalid_event", "properties must be a JSON object")
        distinct = msg.get("distinct_id")
        if distinct is None or distinct == "":
            distinct = raw_props.get("distinct_id")
        user = identity(distinct, "distinct_id")
        if user is None:
            raise Unmappable("invalid_event", "distinct_id is required")
        props = {k: v for k, v in raw_props.items() if k not in _SECRETS}
        for key, value in msg.items():
            if key not in _CONSUMED and key not in _SECRETS:
                props[extra_key(key)] = value
        ts = time_ms(msg.get("timestamp"), "timestamp")
        if ts is None:
            offset = msg.get("offset")
            if isinstance(offset, int) and not isinstance(offset, bool) and offset >= 0:
                ts = ctx.received_ms - offset
        eid = event_id(ctx.client_id, msg.get("uuid"), msg)
    except Unmappable as exc:
        return EventRejected(index, exc.code, exc.message)
    return finish(
        ctx,
        index,
        eid=eid,
        name=name,
        user_id=user,
        anonymous_id=None,
        timestamp_ms=ts,
        sent_at_ms=None,
        properties=props,
    )
