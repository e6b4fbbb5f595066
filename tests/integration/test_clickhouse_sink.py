"""The router's ClickHouse sink against the real server: idempotent retries, outcomes."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from analytics_core.event_contract import Origin, ValidEvent
from analytics_core.settings import Settings
from router.buffers import Batch
from router.clickhouse_sink import ClickHouseSink, Inserted, Rejected
from router.decision import Routed
from router.rows import PendingRow, pending_row
from tests.conftest import ch_scalar

pytestmark = pytest.mark.integration


def rows(
    client_id: str,
    database: str,
    n: int,
    first_offset: int = 0,
    timestamp_ms: Callable[[int], int] = lambda i: 1795771200000 + i,
) -> list[PendingRow]:
    out = []
    for i in range(n):
        off = first_offset + i
        ev = ValidEvent(
            0,
            client_id,
            "h",
            f"00000000-0000-4000-8000-{off:012d}",
            False,
            "pv",
            timestamp_ms(i),
            None,
            "u",
            b'{"url": "/p/%d", "nested": {"a": [1]}, "big": 123456789012345678901234567890}' % i,
        )
        routed = Routed(client_id, database, ev, Origin("raw", 0, off), 1)
        out.append(pending_row(routed, "raw", 0, off, 0, 1795771200000))
    return out


def test_retried_batch_with_the_same_token_is_stored_once(stack: Settings, make_client) -> None:  # type: ignore[no-untyped-def]
    c = make_client("sink")
    batch = Batch.from_rows(c.database, c.client_id, rows(c.client_id, c.database, 500))
    sink = ClickHouseSink(stack.clickhouse, "t")
    try:
        assert isinstance(sink.insert(batch, 1795771201000), Inserted)
        # The answer was "lost": the router re-sends the same sealed batch.
        assert isinstance(sink.insert(batch, 1795771202000), Inserted)
    finally:
        sink.close()
    count = ch_scalar(stack, f"SELECT count() FROM `{c.database}`.events_base")
    assert count == 500
    props = ch_scalar(
        stack, f"SELECT event_properties FROM `{c.database}`.events_base WHERE kafka_offset = 3"
    )
    # stored byte for byte as the producer wrote it: spaces, key order, a big integer
    assert props == '{"url": "/p/3", "nested": {"a": [1]}, "big": 123456789012345678901234567890}'
    page_url = ch_scalar(
        stack, f"SELECT page_url FROM `{c.database}`.events_base WHERE kafka_offset = 3"
    )
    assert page_url == "/p/3"  # v001 materialized column fills from live inserts


def test_missing_database_is_a_rejection_not_an_outage(stack: Settings) -> None:
    sink = ClickHouseSink(stack.clickhouse, "t")
    try:
        r = rows("ghost", "client_does_not_exist_db", 3)
        outcome = sink.insert(Batch.from_rows("client_does_not_exist_db", "ghost", r), 0)
    finally:
        sink.close()
    assert isinstance(outcome, Rejected) and outcome.code == 81


def test_a_database_name_that_is_no_identifier_is_a_rejection_not_a_crash(
    stack: Settings,
) -> None:
    # A registry row edited by hand ('' or a name with a quote) must cost its client a
    # dead-lettered batch, never raise out of the router's write loop.
    sink = ClickHouseSink(stack.clickhouse, "t")
    try:
        for bad in ("", "client`x"):
            outcome = sink.insert(Batch.from_rows(bad, "ghost", rows("ghost", bad, 2)), 0)
            assert isinstance(outcome, Rejected) and "client database name" in outcome.detail
    finally:
        sink.close()


def test_a_batch_spanning_hundreds_of_months_is_inserted_not_an_endless_outage(
    stack: Settings,
    make_client,  # type: ignore[no-untyped-def]
) -> None:
    """Found by the hostile-message test: one client's events with timestamps all over
    1970..2299 made ClickHouse refuse the batch with code 252 ("too many partitions"), which
    the sink must treat as an overload, so every client stalled. Now it is inserted."""
    c = make_client("sink")
    # One month apart: 300 partitions in one INSERT.
    batch_rows = rows(c.client_id, c.database, 300, timestamp_ms=lambda i: i * 2_700_000_000)
    batch = Batch.from_rows(c.database, c.client_id, batch_rows)
    sink = ClickHouseSink(stack.clickhouse, "t")
    try:
        assert isinstance(sink.insert(batch, 1795771201000), Inserted)
    finally:
        sink.close()
    months = ch_scalar(
        stack, f"SELECT uniqExact(toYYYYMM(event_timestamp)) FROM `{c.database}`.events_base"
    )
    assert months == 300
