"""Offset commit bookkeeping and per-client batches (pure)."""

from __future__ import annotations

import orjson

from analytics_core.clients import ClientStatus
from analytics_core.event_contract import Origin, ValidEvent
from router.accounting import ROUTED, Accounting
from router.buffers import ClientBuffers, dedup_token
from router.decision import Routed
from router.offsets import OffsetTracker
from router.rows import PendingRow, encode_batch, pending_row

T = "shared_raw_events"
_ = ClientStatus


def test_commit_never_passes_an_unacknowledged_part() -> None:
    t = OffsetTracker()
    t.seen((T, 0), 10, parts=2)  # a batch message with two events
    t.seen((T, 0), 11, parts=1)
    t.seen((T, 0), 12, parts=0)  # nothing to wait for (replay that selected nothing)
    assert t.committable() == {(T, 0): 10}
    t.ack((T, 0), 11)
    assert t.committable() == {(T, 0): 10}
    t.ack((T, 0), 10)
    assert t.committable() == {(T, 0): 10}  # one part of offset 10 still open
    t.ack((T, 0), 10)
    assert t.committable() == {(T, 0): 13}
    t.mark_committed({(T, 0): 13})
    assert t.committable() == {}
    assert t.positions() == {(T, 0): 13}


def test_partitions_are_independent_and_revocation_forgets() -> None:
    t = OffsetTracker()
    t.seen((T, 0), 5, 1)
    t.seen((T, 1), 9, 1)
    t.ack((T, 1), 9)
    assert t.committable() == {(T, 0): 5, (T, 1): 10}
    t.forget((T, 0))
    t.ack((T, 0), 5)  # late ack after revocation is ignored
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
    assert fresh.token != token and [r.offset for r in fresh.rows] == [3]


def test_dedup_token_is_deterministic_and_range_sensitive() -> None:
    rows = [row(0, 1), row(0, 2)]
    assert dedup_token("db", rows) == dedup_token("db", list(reversed(rows)))
    assert dedup_token("db", rows) != dedup_token("db", rows[:1])
    assert dedup_token("db", rows) != dedup_token("other", rows)


def test_revoked_partitions_are_dropped_from_buffers() -> None:
    b = ClientBuffers()
    b.add("client_acme", "acme", row(0, 1))
    b.add("client_acme", "acme", row(1, 1))
    assert b.drop_partitions({0}) == 1
    [batch] = b.seal()
    assert [r.partition for r in batch.rows] == [1]


def test_rows_encode_as_json_compact_each_row_with_ingested_time() -> None:
    import orjson

    encoded = encode_batch([row(0, 1), row(0, 2, index=3)], 1795771200999, 'r"1')
    lines = encoded.split(b"\n")
    assert len(lines) == 2
    values = orjson.loads(lines[0])
    assert values[0] == "00000000-0000-0000-0000-000000000001"
    assert values[2] == 1795771200.123 and values[14] == 1795771200.999
    assert len(values) == 16 and values[4] == {"url": "/a"}  # the object text, parsed back
    assert values[12] is None and values[13] == 1.0  # no sent_at; received_at
    assert values[15] == 'r"1'  # the instance name is JSON-escaped
    second = orjson.loads(lines[1])
    assert second[7] == 2 and second[8] == 3 and second[14] == 1795771200.999


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


def test_the_memory_budget_counts_what_buffered_rows_really_hold() -> None:
    import tracemalloc

    events = [
        ValidEvent(
            0,
            "acme",
            "h",
            f"00000000-0000-4000-8000-{i:012d}",
            False,
            "page_view",
            1795771200123 + i,
            None,
            f"user-{i}",
            orjson.dumps({"url": f"/p/{i}/" + "x" * 150, "ref": "https://example.com", "n": i}),
        )
        for i in range(20_000)
    ]
    # What the router keeps per routed row until its offset is committed, built the way
    # Router._process builds it: the row, the offset tracker entry, the accounting entry.
    b = ClientBuffers()
    tracker = OffsetTracker()
    accounting = Accounting(T)
    accounting.assigned(0, 10**9)
    shared: dict[tuple[str, str, str, int], tuple[str, str, str, int]] = {}
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i, ev in enumerate(events):
            routed = Routed("acme", "client_acme", ev, Origin(T, 0, 10**9 + i), 1)
            r = pending_row(routed, T, 0, 10**9 + i, 1795771200000 + i, 1795771200999 + i)
            tracker.seen((T, 0), 10**9 + i, 1)
            key = (f"client-{i % 100}", ROUTED, "", 1795770000)
            accounting.record(0, 10**9 + i, [shared.setdefault(key, key)])
            b.add(f"client_{i % 100}", "acme", r, 1.0, r.memory())
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert 0.8 <= b.open_bytes / held <= 1.25, (b.open_bytes, held)
