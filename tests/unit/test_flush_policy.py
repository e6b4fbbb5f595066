"""When buffered client rows become INSERTs (pure)."""

from __future__ import annotations

from analytics_core.event_contract import Origin, ValidEvent
from router.buffers import ClientBuffers
from router.config import RouterSettings
from router.decision import Routed
from router.flush_policy import FlushLimits, seal_due, under_pressure
from router.rows import PendingRow, pending_row

T = "shared_raw_events"
LIMITS = FlushLimits(
    min_rows=100, max_wait_s=5.0, catchup_max_wait_s=30.0, flush_rows=1000, flush_bytes=10_000
)


def row(offset: int) -> PendingRow:
    ev = ValidEvent(
        0, "c", "h", f"00000000-0000-4000-8000-{offset:012d}", False, "pv", 1, None, "u", b"{}"
    )
    return pending_row(Routed("c", "db", ev, Origin(T, 0, offset), 1), T, 0, offset, 0, 1)


def fill(b: ClientBuffers, db: str, n: int, at: float, nbytes: int = 10) -> None:
    for i in range(n):
        b.add(db, db, row(i), now=at, nbytes=nbytes)


def test_old_rows_wait_longer_while_catching_up_on_a_backlog() -> None:
    b = ClientBuffers()
    fill(b, "client_a", 5, at=0.0)
    assert seal_due(b, LIMITS, now=6.0, catching_up=True) == []  # 6 s < 30 s
    [batch] = seal_due(b, LIMITS, now=6.0, catching_up=False)  # 6 s >= 5 s
    assert batch.database == "client_a" and len(batch.rows) == 5
    fill(b, "client_b", 5, at=10.0)
    [late] = seal_due(b, LIMITS, now=40.0, catching_up=True)  # the catch-up bound holds too
    assert late.database == "client_b"


def test_a_full_client_is_written_at_once_even_while_catching_up() -> None:
    b = ClientBuffers()
    fill(b, "client_big", 100, at=0.0)
    fill(b, "client_small", 3, at=0.0)
    [batch] = seal_due(b, LIMITS, now=0.5, catching_up=True)
    assert batch.database == "client_big" and b.open_rows == 3


def test_memory_pressure_seals_the_biggest_clients_down_to_half_the_threshold() -> None:
    b = ClientBuffers()
    # 12 clients: 4 big (20 rows x 100 bytes), 8 small (5 rows x 100 bytes): 12 000 bytes.
    for i in range(4):
        fill(b, f"client_big{i}", 20, at=0.0, nbytes=100)
    for i in range(8):
        fill(b, f"client_small{i}", 5, at=0.0, nbytes=100)
    assert under_pressure(b, LIMITS)
    sealed = seal_due(b, LIMITS, now=1.0, catching_up=True)
    # 12 000 -> at most 5 000 open: the four big ones (8 000 bytes) go, the small ones stay.
    assert sorted(x.database for x in sealed) == [f"client_big{i}" for i in range(4)]
    assert b.open_bytes == 4000 and b.open_rows == 40 and not under_pressure(b, LIMITS)


def test_row_thresholds_bind_like_byte_thresholds() -> None:
    b = ClientBuffers()
    fill(b, "client_a", 600, at=0.0, nbytes=1)
    fill(b, "client_b", 450, at=0.0, nbytes=1)
    limits = FlushLimits(10_000, 5.0, 30.0, flush_rows=1000, flush_bytes=10**9)
    assert under_pressure(b, limits)
    sealed = seal_due(b, limits, now=0.1, catching_up=False)
    assert [x.database for x in sealed] == ["client_a"] and b.open_rows == 450


def test_limits_from_settings_flush_at_two_thirds_of_the_budget() -> None:
    rs = RouterSettings(
        max_buffered_bytes=300 * 2**20,
        max_buffered_rows=3000,
        flush_max_rows=5000,
        client_max_wait_s=40.0,
        catchup_max_wait_s=30.0,
    )
    limits = FlushLimits.from_settings(rs)
    assert limits.flush_bytes == 200 * 2**20 and limits.flush_rows == 2000
    assert limits.wait_s(catching_up=True) == 40.0  # catching up never shortens the wait
    assert limits.wait_s(catching_up=False) == 40.0


def test_a_paused_router_writes_down_below_the_resume_level_whatever_the_wait() -> None:
    b = ClientBuffers()
    for i in range(3):
        fill(b, f"client_{i}", 20, at=0.0, nbytes=100)  # 6 000 bytes: below flush_bytes
    assert not under_pressure(b, LIMITS) and under_pressure(b, LIMITS, paused=True)
    assert seal_due(b, LIMITS, now=1.0, catching_up=True) == []
    sealed = seal_due(b, LIMITS, now=1.0, catching_up=True, paused=True)
    # Down to flush_bytes / 2 = 1/3 of the budget: below the 1/2 at which consumption resumes.
    assert len(sealed) == 1 and b.open_bytes == 4000


def test_while_catching_up_clients_are_written_in_bigger_inserts() -> None:
    limits = FlushLimits(100, 5.0, 30.0, flush_rows=10**6, flush_bytes=10**9, catchup_min_rows=500)
    b = ClientBuffers()
    fill(b, "client_a", 400, at=0.0)
    fill(b, "client_b", 500, at=0.0)
    [batch] = seal_due(b, limits, now=1.0, catching_up=True)  # 400 < 500: a waits
    assert batch.database == "client_b" and b.open_rows == 400
    [batch] = seal_due(b, limits, now=1.0, catching_up=False)  # normal rules again
    assert batch.database == "client_a"


def test_when_a_backlog_is_drained_every_open_buffer_is_written() -> None:
    b = ClientBuffers()
    fill(b, "client_a", 3, at=9.0)
    fill(b, "client_b", 1, at=9.5)
    assert seal_due(b, LIMITS, now=10.0, catching_up=False) == []  # young and small
    sealed = seal_due(b, LIMITS, now=10.0, catching_up=False, caught_up=True)
    assert sorted(x.database for x in sealed) == ["client_a", "client_b"] and b.open_rows == 0


def test_no_row_waits_longer_than_the_wait_for_its_insert_to_start() -> None:
    limits = FlushLimits(100, 5.0, 30.0, flush_rows=10**6, flush_bytes=10**9, round_s=1.0)
    b = ClientBuffers()
    fill(b, "client_a", 1, at=0.0)
    assert seal_due(b, limits, now=3.9, catching_up=False) == []
    # The round after this one would come at 5.0 + up to a second: seal at 4 s.
    [batch] = seal_due(b, limits, now=4.0, catching_up=False)
    assert batch.database == "client_a"


def test_limits_from_settings_carry_the_catch_up_rows_and_the_round() -> None:
    rs = RouterSettings(client_min_rows=1000, catchup_min_rows=50_000)
    limits = FlushLimits.from_settings(rs, round_s=0.5)
    assert limits.rows(catching_up=True) == 50_000 and limits.rows(catching_up=False) == 1000
    assert limits.round_s == 0.5
