"""When consumption pauses and resumes (pure).

Invariant: every row the router holds counts (open buffers, the write in flight, batches
waiting for a retry), in rows and in bytes. Consumption pauses when either reaches its
budget and resumes only when both are back under half of it, so it does not flap.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True, slots=True)
class Held:
    """What the router holds in memory now."""

    rows: int
    nbytes: int


@dataclass(frozen=True, slots=True)
class Budget:
    max_rows: int
    max_bytes: int


class Change(Enum):
    NONE = "none"
    PAUSE = "pause"
    RESUME = "resume"


def pause_change(paused: bool, held: Held, budget: Budget) -> Change:
    if not paused and (held.rows >= budget.max_rows or held.nbytes >= budget.max_bytes):
        return Change.PAUSE
    if paused and held.rows < budget.max_rows // 2 and held.nbytes < budget.max_bytes // 2:
        return Change.RESUME
    return Change.NONE
