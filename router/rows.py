"""Turning a routed event into an `events_base` row (pure).

A row is encoded once, when its event is routed, and buffered as bytes: the parsed
event and the original message are dropped at once, so a buffered row costs about its
encoded size (the rare dead letter of a rejected row reads its original back from Kafka,
where it stays until its offset is committed). Rows are
JSONCompactEachRow arrays in `EVENT_COLUMNS` order, serialised with orjson: ClickHouse
parses them server-side, which is several times cheaper for this process than
client-side binary encoding.

Invariants:
- `PendingRow.line` is the row's array up to and including `received_at`, without the
  closing bracket; `encode_batch` appends `ingested_at` and `router_instance`, the only
  values not known when the event is routed;
- DateTime64 values travel as decimal seconds (ms / 1000), read exactly to the ms;
- `properties` travels as the producer's JSON text of the object (an `orjson.Fragment`:
  copied, never re-serialised, so no recursion and no change), and ClickHouse stores that
  text byte for byte in the `event_properties String` column
  (input_format_json_read_objects_as_strings copies an object's text as it is).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson

from analytics_core.event_contract import Origin
from router.decision import Routed

# async_insert is on by default in recent ClickHouse and ignores deduplication tokens
# (async_insert_deduplicate=0): the router already batches, so it inserts synchronously.
# A batch whose events span more than max_partitions_per_insert_block (100) months would be
# refused with code 252, which also means "too many parts" (an overload, retried): one
# client's clock-skewed or hostile timestamps would then stall every client. Over the
# limit the server logs a warning instead, and the rows land in their own table.
INSERT_SETTINGS = {
    "input_format_json_read_objects_as_strings": 1,
    "async_insert": 0,
    "throw_on_max_partitions_per_insert_block": 0,
}

# Memory of a buffered row beyond its encoded bytes: the PendingRow object, its ints, the
# bytes object header and its list slot (~190), plus its message's entries in the offset
# tracker and the accounting until the commit (~140). Measured with tracemalloc on
# CPython 3.11; tests/unit/test_offsets_and_buffers.py keeps it honest.
ROW_OVERHEAD_BYTES = 330

# Positions in the encoded row (EVENT_COLUMNS order).
_EVENT_ID = 0
_ATTEMPT = 11


@dataclass(slots=True)
class PendingRow:
    """A routed event waiting for its INSERT, with what is needed to ack or dead-letter it."""

    partition: int
    offset: int
    batch_index: int
    produced_ms: int  # event sent_at, else Kafka produce timestamp: for end-to-end latency
    line: bytes  # the encoded row without ingested_at and router_instance (see module doc)
    origin: Origin | None  # where the event first entered; None: this very message

    def memory(self) -> int:
        """Bytes this row keeps alive while buffered (what the memory budget counts)."""
        return len(self.line) + ROW_OVERHEAD_BYTES

    def letter_fields(self) -> tuple[str, int]:
        """(event_id, attempt), read back from the encoded row: only the rare dead letter of
        a rejected row needs them, so they are not kept beside it."""
        values = read_row(self.line)
        return str(values[_EVENT_ID]), int(values[_ATTEMPT])

    def source_origin(self, topic: str) -> Origin:
        return self.origin or Origin(topic, self.partition, self.offset)


def read_row(line: bytes) -> list[Any]:
    """An encoded row's values (rare paths only). The stdlib parser, not orjson: the
    producer's properties text may hold numbers orjson refuses (1e999 is valid JSON)."""
    values: list[Any] = json.loads(line + b"]")
    return values


def pending_row(
    routed: Routed,
    topic: str,
    partition: int,
    offset: int,
    produced_ms: int,
    received_ms: int,
) -> PendingRow:
    ev = routed.event
    origin = routed.origin
    line = orjson.dumps(
        (
            ev.event_id,
            ev.event_name,
            ev.timestamp_ms / 1000,
            ev.user_id,
            orjson.Fragment(ev.properties),  # validated JSON object text (INSERT_SETTINGS)
            topic,
            partition,
            offset,
            ev.batch_index,
            origin.partition,
            origin.offset,
            routed.attempt,
            produced_ms / 1000 if produced_ms > 0 else None,
            received_ms / 1000,
        )
    )[:-1]
    same = origin.offset == offset and origin.partition == partition and origin.topic == topic
    return PendingRow(
        partition, offset, ev.batch_index, produced_ms, line, None if same else origin
    )


def encode_batch(rows: list[PendingRow], ingested_ms: int, instance: str) -> bytes:
    """JSONCompactEachRow lines in EVENT_COLUMNS order, ingested_at set for the whole batch."""
    tail = b"," + orjson.dumps(ingested_ms / 1000) + b"," + orjson.dumps(instance) + b"]"
    return (tail + b"\n").join([r.line for r in rows]) + tail
