"""Offset commit bookkeeping and per-client batches (pure)."""

from __future__ import annotations

import orjson
import pytest

from analytics_core.clients import ClientStatus
from analytics_core.event_contract import Origin, ValidEvent
from router.accounting import ROUTED
from router.buffers import ClientBuffers, dedup_token, offset_spans
from router.decision import Routed
from router.offsets import OffsetTracker
from router.rows import PendingRow, pending_row, read_row

T = "shared_raw_events"
W = 1795770000
_ = ClientStatus


def test_commit_never_passes_an_unacknowledged_part() -> None:
    t = OffsetTracker()
    seg = t.open((T, 0), 10, W)
    seg.add(10, parts=2)  # a batch message with two events
    seg.add(11, parts=1)
    seg.add(12, parts=0)  # nothing to wait for (replay that selected nothing)
    assert t.committable() == {(T, 0): 10}
    t.ack((T, 0), 11, "acme", ROUTED)
    assert t.committable() == {(T, 0): 10}
    t.ack((T, 0), 10, "acme", ROUTED)
    assert t.committable() == {(T, 0): 10}  # one part of offset 10 still open
    t.ack((T, 0), 10, "acme", ROUTED)
    assert t.committable() == {(T, 0): 13}
    t.mark_committed({(T, 0): 13})
    assert t.committable() == {}
    assert t.positions() == {(T, 0): 13}


def test_skipping_past_transaction_markers_never_passes_a_part_still_open() -> None:
    t = OffsetTracker()
    seg = t.open((T, 0), 10, W)
    seg.add(10, parts=1)
    assert t.skip_to((T, 0), 12)  # offset 11: a commit marker, never handed to the router
    assert t.committable() == {(T, 0): 10}  # offset 10 is not durable yet
    t.ack((T, 0), 10, "acme", ROUTED)
    assert t.committable() == {(T, 0): 12}
    t.mark_committed({(T, 0): 12})
    assert not t.skip_to((T, 0), 12) and not t.skip_to((T, 0), 11)  # never backwards
    assert t.committable() == {}
    assert t.skip_to((T, 1), 5) and t.committable()[(T, 1)] == 5  # a partition seen only now


def test_a_commit_stops_at_the_oldest_segment_with_a_part_open() -> None:
    t = OffsetTracker()
    first = t.open((T, 0), 10, W)  # poll 1: offsets 10-11
    first.add(10, 1)
    first.add(11, 1)
    second = t.open((T, 0), 12, W)  # poll 2: offsets 12-13
    second.add(12, 1)
    second.add(13, 1)
    second.done(2, "acme", ROUTED)  # an insert acknowledged poll 2's rows
    assert t.committable() == {(T, 0): 10}  # never past poll 1's open rows
    first.done(1, "acme", ROUTED)
    assert t.committable() == {(T, 0): 10}
    t.ack((T, 0), 11, "", "dead_lettered", "invalid_json")  # a letter delivered
    assert t.committable() == {(T, 0): 14}
    assert t.segment_of((T, 0), 13) is second and t.segment_of((T, 0), 14) is None
    assert t.committed_segments((T, 0), 14) == [first, second]
    t.mark_committed({(T, 0): 14})
    assert t.committed_segments((T, 0), 14) == [] and t.outstanding_count() == 0


def test_partitions_are_independent_and_revocation_forgets() -> None:
    t = OffsetTracker()
    t.open((T, 0), 5, W).add(5, 1)
    t.open((T, 1), 9, W).add(9, 1)
    t.ack((T, 1), 9, "acme", ROUTED)
    assert t.committable() == {(T, 0): 5, (T, 1): 10}
    t.forget((T, 0))
    t.ack((T, 0), 5, "acme", ROUTED)  # late ack after revocation is ignored
    assert t.committable() == {(T, 1): 10}
    assert t.outstanding_count() == 0


def row(partition: int, offset: int, index: int = 0) -> PendingRow:
    ev = ValidEvent(
        index,
        "acme",
        "h",
        f"00000000-0000-0000-0000-{offset:012d}",
        False,
        "pv",
        1795771200123,
        None,
        "u",
        b'{"url": "/a"}',
    )
    routed = Routed("acme", "client_acme", ev, Origin(T, partition, offset), 1)
    return pending_row(routed, T, partition, offset, 0, 1000)


def test_sealed_batches_keep_their_rows_and_token_for_retries() -> None:
    b = ClientBuffers()
    b.add("client_acme", "acme", row(0, 1))
    b.add("client_acme", "acme", row(0, 2))
    b.add("client_beta", "beta", row(1, 1))
    assert b.total_rows() == 3
    batches = {x.database: x for x in b.seal()}
    assert b.total_rows() == 0
    acme = batches["client_acme"]
    token = acme.token
    b.park_for_retry(acme)
    b.add("client_acme", "acme", row(0, 3))  # new rows go to a new batch
    acme.next_attempt_at = 5.0
    assert b.due_retries(now=1.0) == []
    [again] = b.due_retries(now=6.0)
    assert again is acme and again.token == token and len(again.rows) == 2
    [fresh] = b.seal()
    assert fresh.token != token and list(fresh.rows.offsets) == [3]


def test_dedup_token_is_deterministic_and_range_sensitive() -> None:
    rows = [row(0, 1), row(0, 2)]

    def token(database: str, rs: list[PendingRow]) -> str:
        return dedup_token(
            database, offset_spans([r.partition for r in rs], [r.offset for r in rs])
        )

    assert token("db", rows) == token("db", list(reversed(rows)))
    assert token("db", rows) != token("db", rows[:1])
    assert token("db", rows) != token("other", rows)


def test_revoked_partitions_are_dropped_from_buffers() -> None:
    b = ClientBuffers()
    b.add("client_acme", "acme", row(0, 1))
    b.add("client_acme", "acme", row(1, 1))
    assert b.drop_partitions({0}) == 1
    [batch] = b.seal()
    assert list(batch.rows.partitions) == [1]


def test_rows_encode_as_row_binary_with_ingested_time() -> None:
    from analytics_core.events_table import EVENT_COLUMNS
    from router.rows import ROW_TYPES, encode_batch, insert_body, string, varint

    first, second = row(0, 1), row(0, 2, index=3)
    encoded = encode_batch([first.line, second.line], 1795771200999, 'r"1')
    header = varint(16) + b"".join(string(x.encode()) for x in (*EVENT_COLUMNS, *ROW_TYPES))
    tail = (1795771200999).to_bytes(8, "little") + b'\x03r"1'  # ingested_at, router_instance
    assert encoded == header + first.line + tail + second.line + tail
    # Streamed a group at a time, the same bytes.
    groups = list(insert_body([[first.line], [], [second.line]], 1795771200999, 'r"1'))
    assert b"".join(groups) == encoded and len(groups) == 3
    values = read_row(first.line)
    assert values.event_id == "00000000-0000-0000-0000-000000000001"
    assert values.timestamp_ms == 1795771200123
    assert values.properties == b'{"url": "/a"}'  # the object text, unchanged
    assert values.sent_at_ms is None and values.received_ms == 1000  # no sent_at
    assert (read_row(second.line).offset, read_row(second.line).batch_index) == (2, 3)


def test_a_block_compresses_its_rows_and_gives_them_back_exactly() -> None:
    from router.buffers import CHUNK_BYTES, RowBlock

    rows = [row(i % 3, i) for i in range(3000)]
    block = RowBlock("client_acme", "acme")
    for r in rows:
        block.add(r.line, r.partition, r.offset, r.batch_index, r.produced_ms, None)
    raw = b"".join(r.line for r in rows)
    assert len(raw) > 2 * CHUNK_BYTES and len(block.chunks) >= 2  # compressed as it grew
    assert block.data() == raw and block.lines() == [r.line for r in rows]
    groups = list(block.line_groups())  # what an INSERT streams: a chunk at a time
    assert len(groups) == len(block.chunks) + 1 and sum(map(len, groups)) == 3000
    assert block.nbytes < len(raw)  # what the budget counts: compressed bytes + columns
    kept = block.keeping(range(1, 3000, 2))
    assert kept.lines() == [r.line for r in rows[1::2]] and list(kept.offsets) == list(
        range(1, 3000, 2)
    )


def test_a_buffered_row_keeps_what_a_dead_letter_needs_without_the_parsed_event() -> None:
    r = row(2, 7, index=4)
    assert r.letter_fields() == ("00000000-0000-0000-0000-000000000007", 1)
    assert r.origin is None and r.source_origin(T) == Origin(T, 2, 7)
    assert r.batch_index == 4 and not hasattr(r, "raw")  # read back from Kafka if needed
    ev = ValidEvent(
        0, "acme", "h", "00000000-0000-0000-0000-000000000009", False, "pv", 1, None, "u", b"{}"
    )
    replayed = Routed("acme", "client_acme", ev, Origin("other", 0, 99), 3)
    rr = pending_row(replayed, T, 1, 5, 0, 1000)
    assert rr.origin == Origin("other", 0, 99) and rr.source_origin(T) == Origin("other", 0, 99)
    assert rr.letter_fields()[1] == 3 and not hasattr(rr, "routed")


def test_under_memory_pressure_the_biggest_clients_are_sealed_first() -> None:
    b = ClientBuffers()
    for i in range(5):
        b.add("client_big", "big", row(0, i), now=1.0, nbytes=100)
    for i in range(2):
        b.add("client_mid", "mid", row(1, i), now=1.0, nbytes=100)
    b.add("client_small", "small", row(2, 0), now=1.0, nbytes=100)
    assert (b.open_rows, b.open_bytes) == (8, 800)
    sealed = b.seal_largest(keep_rows=100, keep_bytes=300)
    assert [x.database for x in sealed] == ["client_big"] and sealed[0].nbytes == 500
    assert b.open_bytes == 300 and b.total_bytes() == 300
    sealed = b.seal_largest(keep_rows=0, keep_bytes=10_000)  # the row bound binds too
    assert [x.database for x in sealed] == ["client_mid", "client_small"]
    assert (b.open_rows, b.open_bytes) == (0, 0)
    b.park_for_retry(sealed[0])
    assert b.total_bytes() == 200 and b.total_rows() == 2
    assert b.drop_partitions({1}) == 2 and b.total_bytes() == 0


def test_small_clients_wait_until_they_are_worth_an_insert_or_too_old() -> None:
    b = ClientBuffers()
    for i in range(3):
        b.add("client_big", "big", row(0, i), now=10.0)
    b.add("client_small", "small", row(1, 1), now=10.0)
    b.add("client_late", "late", row(2, 1), now=11.5)
    [big] = b.seal_ready(now=12.0, min_rows=3, max_wait_s=5.0)
    assert big.database == "client_big" and b.open_rows == 2
    assert b.seal_ready(now=14.9, min_rows=3, max_wait_s=5.0) == []
    [small] = b.seal_ready(now=15.0, min_rows=3, max_wait_s=5.0)  # waited its 5 s
    assert small.database == "client_small"
    [late] = b.seal()
    assert late.database == "client_late" and b.total_rows() == 0


@pytest.mark.parametrize("clients", [100, 10])  # rows below / well above a chunk per client
def test_the_memory_budget_counts_what_buffered_rows_really_hold(clients: int) -> None:
    import tracemalloc

    from analytics_core.clients import ClientFound, ClientRecord
    from analytics_core.dead_letter import ReplayKeys
    from analytics_core.event_contract import hash_api_key
    from router.poll import PollRouter
    from tests.unit.router_messages import FakeMessage

    def event(i: int) -> bytes:
        return orjson.dumps(
            {
                "client_id": f"client-{i % clients}",
                "api_key": "k",
                "event_id": f"00000000-0000-4000-8000-{i:012d}",
                "event_name": "page_view",
                "timestamp": 1795771200123 + i,
                "user_id": f"user-{i}",
                "properties": {"url": f"/p/{i}/" + "x" * 150, "ref": "https://example.com", "n": i},
            }
        )

    def lookup(client_id: str) -> ClientFound:
        return ClientFound(
            ClientRecord(
                client_id, ClientStatus.ACTIVE, hash_api_key("k"), client_id.replace("-", "_")
            )
        )

    polls = [
        [FakeMessage(event(i), i % 6, 10**9 + i) for i in range(start, start + 2000)]
        for start in range(0, 20_000, 2000)
    ]
    keys = ReplayKeys(b"memory-test-replay-key-0123456789ab")
    # Memo tables (client ids, key hashes, event names) fill on first sight: not per row.
    PollRouter(T, ClientBuffers(), OffsetTracker(), lookup, keys, "t").route(polls[0], 1, "", 1.0)
    # What the router keeps per routed row until its offset is committed, built the way
    # Router._process builds it: client buffers (rows in columns) and offset segments.
    buffers, tracker = ClientBuffers(), OffsetTracker()
    router = PollRouter(T, buffers, tracker, lookup, keys, "t")
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for msgs in polls:
            router.route(msgs, 1795771200999, "2026-11-27T10:00:00.000Z", 1.0)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert buffers.open_rows == 20_000 and tracker.outstanding_count() == 20_000
    assert 0.8 <= buffers.open_bytes / held <= 1.25, (buffers.open_bytes, held)
