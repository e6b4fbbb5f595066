"""Turning a routed event into an `events_base` row (pure).

Rows are JSONCompactEachRow arrays in `EVENT_COLUMNS` order, serialised with
orjson: ClickHouse parses them server-side, which is several times cheaper for
this process than client-side binary encoding. DateTime64 values travel as
decimal seconds (ms / 1000), which ClickHouse reads exactly to the millisecond.
`properties` travels as a JSON object and is stored as its compact JSON text in
the `event_properties String` column (input_format_json_read_objects_as_strings),
so it is serialised exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from router.decision import Routed


@dataclass(slots=True)
class PendingRow:
    """A row waiting for its INSERT, with what is needed to ack or dead-letter it."""

    values: list[object]
    partition: int
    offset: int
    routed: Routed
    raw: bytes | None
    produced_ms: int  # event sent_at, else Kafka produce timestamp: for end-to-end latency


# async_insert is on by default in recent ClickHouse and ignores deduplication tokens
# (async_insert_deduplicate=0): the router already batches, so it inserts synchronously.
INSERT_SETTINGS = {"input_format_json_read_objects_as_strings": 1, "async_insert": 0}
INGESTED_AT = 14  # index of ingested_at in EVENT_COLUMNS; filled when the batch is sealed


def build_row(
    routed: Routed, topic: str, partition: int, offset: int, received_ms: int, instance: str
) -> list[object]:
    ev = routed.event
    return [
        ev.event_id,
        ev.event_name,
        ev.timestamp_ms / 1000,
        ev.user_id,
        ev.properties,  # a JSON object; ClickHouse keeps its text (see INSERT_SETTINGS)
        topic,
        partition,
        offset,
        ev.batch_index,
        routed.origin.partition,
        routed.origin.offset,
        routed.attempt,
        None if ev.sent_at_ms is None else ev.sent_at_ms / 1000,
        received_ms / 1000,
        0.0,
        instance,
    ]


def encode_rows(rows: list[PendingRow], ingested_ms: int) -> bytes:
    ingested = ingested_ms / 1000
    for r in rows:
        r.values[INGESTED_AT] = ingested
    return b"\n".join([orjson.dumps(r.values) for r in rows])
