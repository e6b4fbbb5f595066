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

# async_insert is on by default in recent ClickHouse and ignores deduplication tokens
# (async_insert_deduplicate=0): the router already batches, so it inserts synchronously.
INSERT_SETTINGS = {"input_format_json_read_objects_as_strings": 1, "async_insert": 0}


@dataclass(slots=True)
class PendingRow:
    """A routed event waiting for its INSERT, with what is needed to ack or dead-letter it.

    The row itself is built only when the batch is encoded, straight from the event.
    """

    partition: int
    offset: int
    routed: Routed
    raw: bytes | None
    produced_ms: int  # event sent_at, else Kafka produce timestamp: for end-to-end latency
    received_ms: int


def encode_rows(rows: list[PendingRow], ingested_ms: int, topic: str, instance: str) -> bytes:
    """JSONCompactEachRow lines in EVENT_COLUMNS order."""
    ingested = ingested_ms / 1000
    dumps = orjson.dumps
    out = []
    for r in rows:
        routed = r.routed
        ev = routed.event
        origin = routed.origin
        produced = r.produced_ms
        out.append(
            dumps(
                (
                    ev.event_id,
                    ev.event_name,
                    ev.timestamp_ms / 1000,
                    ev.user_id,
                    ev.properties,  # a JSON object; ClickHouse keeps its text (INSERT_SETTINGS)
                    topic,
                    r.partition,
                    r.offset,
                    ev.batch_index,
                    origin.partition,
                    origin.offset,
                    routed.attempt,
                    produced / 1000 if produced > 0 else None,
                    r.received_ms / 1000,
                    ingested,
                    instance,
                )
            )
        )
    return b"\n".join(out)
