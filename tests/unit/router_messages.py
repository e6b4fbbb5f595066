"""Kafka messages and a client registry for the router's pure tests (no broker)."""

from __future__ import annotations

from dataclasses import dataclass

from analytics_core.clients import ClientFound, ClientMissing, ClientRecord, ClientStatus
from analytics_core.dead_letter import ReplayKeys
from analytics_core.event_contract import hash_api_key
from router.buffers import ClientBuffers
from router.decision import ClientLookup, RawMessage, Retry
from router.offsets import OffsetTracker
from router.poll import PollResult, PollRouter
from router.processing import MessageFates, ProcessingContext, process_message

RECORDS = {
    "acme": ClientRecord("acme", ClientStatus.ACTIVE, hash_api_key("k-acme"), "client_acme"),
    "beta": ClientRecord("beta", ClientStatus.ACTIVE, hash_api_key("k-beta"), "client_beta"),
    "idle": ClientRecord("idle", ClientStatus.PENDING, hash_api_key("k-idle"), "client_idle"),
    # placed on the second ClickHouse target (issue 15)
    "gamma": ClientRecord(
        "gamma", ClientStatus.ACTIVE, hash_api_key("k-gamma"), "client_gamma", "ch2"
    ),
}


def lookup(client_id: str) -> ClientFound | ClientMissing:
    record = RECORDS.get(client_id)
    return ClientFound(record) if record else ClientMissing(client_id)


@dataclass
class FakeMessage:
    """What the router reads of a confluent_kafka.Message."""

    _value: bytes | None
    _partition: int
    _offset: int
    _headers: list[tuple[str, bytes | None]] | None = None
    _timestamp_ms: int = 1795771200000

    def error(self) -> None:
        return None

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes | None]] | None:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return (1, self._timestamp_ms)


KEYS = ReplayKeys(b"router-tests-replay-key-0123456789ab")
RECEIVED_MS = 1795771200999
NOW_ISO = "2026-11-27T10:00:00.000Z"
TOPIC = "raw"


def reference(
    value: bytes | None, headers: list[tuple[str, bytes | None]] | None, partition: int, offset: int
) -> MessageFates | Retry:
    """The reference path's outcome for one message (router.processing)."""
    ctx = ProcessingContext(NOW_ISO, "test", KEYS)
    raw = RawMessage(TOPIC, partition, offset, value, headers, RECEIVED_MS)
    return process_message(raw, lookup, ctx, FakeMessage(value, partition, offset).timestamp()[1])


def poll_once(
    msgs: list[FakeMessage], client_lookup: ClientLookup = lookup
) -> tuple[PollResult, ClientBuffers, OffsetTracker]:
    """One poll through the router's hot path (router.poll), on fresh buffers."""
    buffers, tracker = ClientBuffers(), OffsetTracker()
    router = PollRouter(TOPIC, buffers, tracker, client_lookup, KEYS, "test")
    return router.route(msgs, RECEIVED_MS, NOW_ISO, 1.0), buffers, tracker


def assert_paths_agree(
    value: bytes | None,
    headers: list[tuple[str, bytes | None]] | None,
    partition: int = 1,
    offset: int = 42,
) -> MessageFates | Retry:
    """The hot path gives one message exactly the reference path's fates: the same rows
    (bytes, database and its target, batch index, origin), the same letters, the same count."""
    ref = reference(value, headers, partition, offset)
    result, buffers, tracker = poll_once([FakeMessage(value, partition, offset, headers)])
    if isinstance(ref, Retry):
        assert [(r.partition, r.offset, r.detail) for r in result.rewinds] == [
            (partition, offset, ref.detail)
        ]
        assert buffers.open_rows == 0 and not result.letters
        return ref
    got = sorted(
        (db, block.target, block.batch_indexes[i], line, block.origins.get(i))
        for db, block in buffers.open.items()
        for i, line in enumerate(block.lines())
    )
    expected = sorted(
        (r.database, r.target, r.row.batch_index, r.row.line, r.row.origin) for r in ref.rows
    )
    assert got == expected
    assert [item.letter for item in result.letters] == ref.letters
    assert all(
        (item.value, item.partition, item.offset) == (value, partition, offset)
        for item in result.letters
    )
    assert (result.messages, result.events) == (1, ref.events)
    assert tracker.outstanding_count() == ref.events
    assert [u for _, u in result.unprocessable] == (
        [] if ref.unprocessable is None else [ref.unprocessable]
    )
    return ref
