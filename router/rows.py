"""Turning a routed event into an `events_base` row (pure): ClickHouse RowBinary.

A row is encoded once, when its event is routed, and buffered as bytes: the parsed event
and the original message are dropped at once, so a buffered row costs about its encoded
size (the rare dead letter of a rejected row reads its original back from Kafka, where it
stays until its offset is committed).

Why RowBinary: ClickHouse parses it for less CPU than JSONCompactEachRow on our rows
(bench/bench_clickhouse_inserts.py), on the cores the router shares with it, and the
producer's properties text travels as a length-prefixed string: byte for byte, never
re-serialised and never re-parsed. The INSERT names every column and its type
(RowBinaryWithNamesAndTypes), so the server refuses a layout that does not match the table
instead of misreading it.

Invariants:
- a row holds the columns up to and including `received_at`; `insert_body` appends
  `ingested_at` and `router_instance` to every row, the only values not known when the
  event is routed (the same for a whole INSERT);
- an INSERT's body is streamed a group of rows at a time (`insert_body`): the router never
  holds a whole batch uncompressed;
- DateTime64(3) values are Int64 milliseconds, exact; a missing `sent_at` is NULL;
- every text is UTF-8 (the contract only passes valid UTF-8), so `read_row` gets back
  exactly what was encoded.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass

import orjson

from analytics_core.event_contract import Origin
from analytics_core.events_table import EVENT_COLUMNS
from router.decision import Routed

# async_insert is on by default in recent ClickHouse and ignores deduplication tokens
# (async_insert_deduplicate=0): the router already batches, so it inserts synchronously.
# A batch whose events span more than max_partitions_per_insert_block (100) months would be
# refused with code 252, which also means "too many parts" (an overload, retried): one
# client's clock-skewed or hostile timestamps would then stall every client. Over the
# limit the server logs a warning instead, and the rows land in their own table.
INSERT_SETTINGS = {
    "async_insert": 0,
    "throw_on_max_partitions_per_insert_block": 0,
    "max_threads": 1,
}
ROW_FORMAT = "RowBinaryWithNamesAndTypes"

# The ClickHouse type of each column of EVENT_COLUMNS, as the table declares it
# (clickhouse/schemas/01_events_base.sql): sent with every INSERT and checked by the server.
_DT = "DateTime64(3, 'UTC')"
ROW_TYPES: tuple[str, ...] = (
    "UUID",
    "LowCardinality(String)",
    _DT,
    "String",
    "String",
    "LowCardinality(String)",
    "UInt32",
    "UInt64",
    "UInt32",
    "UInt32",
    "UInt64",
    "UInt16",
    f"Nullable({_DT})",
    _DT,
    _DT,
    "LowCardinality(String)",
)
assert len(ROW_TYPES) == len(EVENT_COLUMNS)
assert EVENT_COLUMNS[-2:] == ("ingested_at", "router_instance")  # the per-INSERT tail

# Memory of a buffered row beyond its (compressed) encoded bytes: its columns in the client
# buffer's arrays (end, partition, offset, batch index, produced time, segment run). Offsets
# and accounting are kept per poll, not per row. Measured with tracemalloc on CPython 3.11;
# tests/unit/test_offsets_and_buffers.py keeps it honest.
ROW_OVERHEAD_BYTES = 56

_I64 = struct.Struct("<q")
# kafka_partition, kafka_offset, batch_index, origin_partition, origin_offset, attempt,
# then sent_at's null flag (0: a value follows), sent_at, received_at ...
_TAIL_SENT = struct.Struct("<IQIIQHBqq")
# ... or the null flag 1 and received_at alone.
_TAIL_NULL = struct.Struct("<IQIIQHBq")
_FIXED = struct.Struct("<IQIIQHB")  # what both tails begin with


_ONE_BYTE = tuple(bytes((n,)) for n in range(0x80))
_U16 = struct.Struct("<H")


def varint(n: int) -> bytes:
    """ClickHouse's (LEB128) length prefix."""
    if n < 0x80:
        return _ONE_BYTE[n]
    if n < 0x4000:
        return _U16.pack((n & 0x7F) | 0x80 | (n >> 7) << 8)
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def string(data: bytes) -> bytes:
    return varint(len(data)) + data


# Event names and topics repeat: their encoded form is kept (bounded).
_MEMO_LIMIT = 10_000
_strings: dict[str, bytes] = {}


def memo_string(text: str) -> bytes:
    encoded = _strings.get(text)
    if encoded is None:
        if len(_strings) >= _MEMO_LIMIT:
            _strings.clear()
        encoded = _strings[text] = string(text.encode())
    return encoded


def uuid_of(event_id: str) -> bytes:
    """The 16 big-endian bytes of a UUID in its canonical text form."""
    return bytes.fromhex(event_id.replace("-", ""))


def encode_row(
    event_uuid: bytes,
    name: bytes,
    timestamp_ms: int,
    user_id: str,
    properties: bytes,
    topic: bytes,
    partition: int,
    offset: int,
    batch_index: int,
    origin: Origin | None,
    attempt: int,
    produced_ms: int,
    received_ms: int,
) -> bytes:
    """One row up to `received_at`. `event_uuid`: the id's 16 big-endian bytes; `name` and
    `topic` come from `memo_string`; `origin` None means this very message; `produced_ms`
    <= 0 stores a NULL `sent_at`."""
    if origin is None:
        origin_partition, origin_offset = partition, offset
    else:
        origin_partition, origin_offset = origin.partition, origin.offset
    if produced_ms > 0:
        tail = _TAIL_SENT.pack(
            partition,
            offset,
            batch_index,
            origin_partition,
            origin_offset,
            attempt,
            0,
            produced_ms,
            received_ms,
        )
    else:
        tail = _TAIL_NULL.pack(
            partition, offset, batch_index, origin_partition, origin_offset, attempt, 1, received_ms
        )
    user = user_id.encode()
    # RowBinary's UUID: the high then the low 64 bits, each little-endian.
    return b"".join(
        (
            event_uuid[7::-1],
            event_uuid[15:7:-1],
            name,
            _I64.pack(timestamp_ms),
            varint(len(user)),
            user,
            varint(len(properties)),
            properties,
            topic,
            tail,
        )
    )


@dataclass(slots=True)
class RowValues:
    """A row read back (rare paths: a rejected row's dead letter, a replay's identity)."""

    event_id: str
    event_name: str
    timestamp_ms: int
    user_id: str
    properties: bytes
    topic: str
    partition: int
    offset: int
    batch_index: int
    origin_partition: int
    origin_offset: int
    attempt: int
    sent_at_ms: int | None
    received_ms: int

    def as_json(self) -> bytes:
        """The row as a JSON object (properties spliced in as the producer's text)."""
        fields = {
            "event_id": self.event_id,
            "event_name": self.event_name,
            "event_timestamp": self.timestamp_ms,
            "user_id": self.user_id,
            "event_properties": orjson.Fragment(self.properties),
            "kafka_topic": self.topic,
            "kafka_partition": self.partition,
            "kafka_offset": self.offset,
            "batch_index": self.batch_index,
            "origin_partition": self.origin_partition,
            "origin_offset": self.origin_offset,
            "attempt": self.attempt,
            "sent_at": self.sent_at_ms,
            "received_at": self.received_ms,
        }
        return orjson.dumps(fields)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError("row ends early")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def varint(self) -> int:
        shift = n = 0
        while True:
            byte = self.take(1)[0]
            n |= (byte & 0x7F) << shift
            if byte < 0x80:
                return n
            shift += 7

    def string(self) -> bytes:
        return self.take(self.varint())


def read_row(line: bytes) -> RowValues:
    """The values of an encoded row (the inverse of `encode_row`)."""
    r = _Reader(line)
    raw_id = r.take(16)
    event_id = str(uuid.UUID(bytes=raw_id[7::-1] + raw_id[15:7:-1]))
    name = r.string().decode()
    (ts,) = _I64.unpack(r.take(8))
    user = r.string().decode()
    props = r.string()
    topic = r.string().decode()
    p, o, bi, op, oo, attempt, null = _FIXED.unpack(r.take(_FIXED.size))
    sent = None if null else _I64.unpack(r.take(8))[0]
    (received,) = _I64.unpack(r.take(8))
    if r.pos != len(line):
        raise ValueError("bytes after the row")
    return RowValues(
        event_id, name, ts, user, props, topic, p, o, bi, op, oo, attempt, sent, received
    )


@dataclass(slots=True)
class PendingRow:
    """A routed event's row and what is needed to ack or dead-letter it (the slow path's
    result and the rare paths' view of one buffered row)."""

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
        return values.event_id, values.attempt

    def source_origin(self, topic: str) -> Origin:
        return self.origin or Origin(topic, self.partition, self.offset)


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
    same = origin.offset == offset and origin.partition == partition and origin.topic == topic
    kept = None if same else origin
    line = encode_row(
        uuid_of(ev.event_id),
        memo_string(ev.event_name),
        ev.timestamp_ms,
        ev.user_id,
        ev.properties,
        memo_string(topic),
        partition,
        offset,
        ev.batch_index,
        kept,
        routed.attempt,
        produced_ms,
        received_ms,
    )
    return PendingRow(partition, offset, ev.batch_index, produced_ms, line, kept)


def _header() -> bytes:
    parts = [varint(len(EVENT_COLUMNS))]
    parts += [string(name.encode()) for name in EVENT_COLUMNS]
    parts += [string(kind.encode()) for kind in ROW_TYPES]
    return b"".join(parts)


_HEADER = _header()


def insert_body(
    groups: Iterable[Sequence[bytes]], ingested_ms: int, instance: str
) -> Generator[bytes, None, None]:
    """The body of one INSERT (`ROW_FORMAT`), a group of rows at a time: the header, then
    every row with ingested_at (the same for the whole batch) and router_instance."""
    tail = _I64.pack(ingested_ms) + string(instance.encode())
    yield _HEADER
    for lines in groups:
        if lines:
            yield tail.join(lines) + tail


def encode_batch(lines: Sequence[bytes], ingested_ms: int, instance: str) -> bytes:
    """One INSERT's whole body (tests, small batches)."""
    return b"".join(insert_body([lines], ingested_ms, instance))
