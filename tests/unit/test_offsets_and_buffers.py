"""Offset commit bookkeeping and per-client batches (pure)."""

from __future__ import annotations

from analytics_core.clients import ClientStatus
from analytics_core.event_contract import Origin, ValidEvent
from router.buffers import ClientBuffers, dedup_token
from router.decision import Routed
from router.offsets import OffsetTracker
from router.rows import PendingRow, encode_rows

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
        {"url": "/a"},
    )
    routed = Routed("acme", "client_acme", ev, Origin(T, partition, offset), 1)
    return PendingRow(partition, offset, routed, b"raw", 0, 1000)


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
    encoded = encode_rows([row(0, 1)], 1795771200999, T, "r1")
    import orjson

    values = orjson.loads(encoded)
    assert values[0] == "00000000-0000-0000-0000-000000000001"
    assert values[2] == 1795771200.123 and values[14] == 1795771200.999
    assert len(values) == 16 and values[4] == {"url": "/a"}


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
