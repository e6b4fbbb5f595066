"""Deadlines of request-body reads, enforced by one sweeper task for all of them.

A timer per request (`asyncio.timeout`) cost a few microseconds of every capture request;
here a read registers its task and deadline in a dict, and `run()` cancels the reads past
their deadline every `tick_s`. Invariants:
- a read that is cancelled for its deadline ends in TimeoutError, and its task is uncancelled
  (the request goes on to answer 408); a read cancelled for any other reason (shutdown)
  stays cancelled;
- a read ends between `timeout_s` and `timeout_s + tick_s` after it started, tick_s being a
  fifth of timeout_s and at most 0.5 s;
- a finished read leaves nothing behind (the dict only holds reads in progress).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_EXPIRED = -1.0  # the deadline of a read the sweeper has cancelled


class ReadDeadlines:
    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.tick_s = min(0.5, timeout_s / 5)
        self._reads: dict[asyncio.Task[Any], float] = {}  # task -> deadline (monotonic)

    def __len__(self) -> int:
        return len(self._reads)

    async def within(self, read: Coroutine[Any, Any, T]) -> T:
        """`read`'s result, or TimeoutError once `timeout_s` has passed (the read is then
        abandoned). Like asyncio.timeout, only inside a task (ASGI servers run each request
        in one)."""
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("ReadDeadlines.within must run inside a task")
        self._reads[task] = time.monotonic() + self.timeout_s
        try:
            return await read
        except asyncio.CancelledError:
            if self._reads.get(task) != _EXPIRED:
                raise
            task.uncancel()
            raise TimeoutError from None
        finally:
            del self._reads[task]

    def sweep(self, now: float) -> int:
        """Cancel the reads whose deadline is `now` or earlier; how many were cancelled."""
        late = [t for t, deadline in self._reads.items() if _EXPIRED < deadline <= now]
        for task in late:
            self._reads[task] = _EXPIRED
            task.cancel()
        return len(late)

    async def run(self) -> None:
        """Sweep every `tick_s`, until cancelled."""
        while True:
            await asyncio.sleep(self.tick_s)
            self.sweep(time.monotonic())
