"""When client buffers become INSERTs (pure: thresholds in, sealed batches out).

Invariants:
- a client is written once it has `min_rows` rows or its oldest row would wait longer than
  `max_wait_s` by the next round (flush rounds are `round_s` apart, so no row waits longer
  than `max_wait_s` for its INSERT to start);
- while the router catches up on a backlog (Kafka lag of a poll or more, or paused),
  `catchup_min_rows` and `catchup_max_wait_s` replace those (never smaller): each INSERT
  creates a part in the client's table, ClickHouse's cost per part and per merge is what
  limits the router, and latency is the backlog's anyway; when the backlog is gone, every
  open buffer is written at once (its rows waited through the backlog already);
- under memory pressure (open rows or bytes at the flush thresholds) the biggest buffers
  are sealed first, down to half the thresholds, so the rows go out in the fewest,
  largest INSERTs however many clients share the budget;
- the flush thresholds sit at 2/3 of the pause thresholds: rows keep flowing in while a
  write is in flight, and consumption pauses only when ClickHouse falls behind;
- while consumption is paused the pressure rule applies whatever the open rows: it seals
  down to 1/3 of the budget, below the 1/2 at which consumption resumes, so a pause
  always ends with the next write (never waits for a client's time limit).
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass

from router.buffers import NO_TARGETS, Batch, ClientBuffers
from router.config import RouterSettings


@dataclass(frozen=True)
class FlushLimits:
    min_rows: int
    max_wait_s: float
    catchup_max_wait_s: float
    flush_rows: int
    flush_bytes: int
    catchup_min_rows: int = 0  # 0: min_rows
    round_s: float = 0.0  # time between flush rounds

    @classmethod
    def from_settings(cls, rs: RouterSettings, round_s: float = 0.0) -> FlushLimits:
        """`round_s`: how often the router checks its buffers."""
        return cls(
            min_rows=rs.client_min_rows,
            max_wait_s=rs.client_max_wait_s,
            catchup_max_wait_s=max(rs.client_max_wait_s, rs.catchup_max_wait_s),
            flush_rows=min(rs.flush_max_rows, rs.max_buffered_rows * 2 // 3),
            flush_bytes=rs.max_buffered_bytes * 2 // 3,
            catchup_min_rows=max(rs.client_min_rows, rs.catchup_min_rows),
            round_s=round_s,
        )

    def wait_s(self, catching_up: bool) -> float:
        return self.catchup_max_wait_s if catching_up else self.max_wait_s

    def rows(self, catching_up: bool) -> int:
        return max(self.min_rows, self.catchup_min_rows) if catching_up else self.min_rows


def under_pressure(buffers: ClientBuffers, limits: FlushLimits, *, paused: bool = False) -> bool:
    """Open rows at the flush thresholds, or any open row while consumption is paused."""
    if paused and buffers.open_rows:
        return True
    return buffers.open_rows >= limits.flush_rows or buffers.open_bytes >= limits.flush_bytes


def seal_due(
    buffers: ClientBuffers,
    limits: FlushLimits,
    now: float,
    *,
    catching_up: bool,
    paused: bool = False,
    caught_up: bool = False,
    blocked: Container[str] = NO_TARGETS,
) -> list[Batch]:
    """The batches to write now (they leave the open buffers). `caught_up`: a backlog was
    just drained. Buffers of `blocked` targets (a write in flight, or down) stay open."""
    if caught_up:
        return buffers.seal(blocked)
    wait = max(0.0, limits.wait_s(catching_up) - limits.round_s)
    sealed = buffers.seal_ready(now, limits.rows(catching_up), wait, blocked)
    if under_pressure(buffers, limits, paused=paused):
        sealed += buffers.seal_largest(limits.flush_rows // 2, limits.flush_bytes // 2, blocked)
    return sealed
