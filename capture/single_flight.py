"""At most one blocking job per key at a time, run on an executor from the event loop.

Used for the registry thread's lookups (write-key verdicts, quotas): every request that
needs a key's job while it runs shares it instead of queueing its own. A job nobody
awaits (a background refresh) still has its exception retrieved and logged.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Executor
from typing import Generic, TypeVar

log = logging.getLogger("capture")

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    def __init__(self, executor: Executor, what: str) -> None:
        self._executor = executor
        self._what = what  # names the job in the log when it fails
        # key -> its running job and when it started (monotonic)
        self._running: dict[K, tuple[asyncio.Future[V], float]] = {}

    def start(
        self, key: K, job: Callable[[K], V], then: Callable[[K, V], None] | None = None
    ) -> asyncio.Future[V]:
        """`job(key)` on the executor (or the one already running for `key`); `then(key,
        result)` runs before anyone awaiting it resumes."""
        current = self._running.get(key)
        if current is not None:
            return current[0]
        running = asyncio.get_running_loop().run_in_executor(self._executor, job, key)
        self._running[key] = (running, time.monotonic())
        running.add_done_callback(functools.partial(self._ended, key, then))
        return running

    async def result_within(
        self,
        key: K,
        job: Callable[[K], V],
        then: Callable[[K, V], None] | None,
        wait_s: float,
    ) -> V | None:
        """`job(key)`'s result, or None once the job has run `wait_s` without finishing
        (counted from its start, which may be before this call). The job goes on: its
        result still reaches `then`."""
        running = self.start(key, job, then)
        return await result_by(running, self._running[key][1] + wait_s)

    def _ended(self, key: K, then: Callable[[K, V], None] | None, fut: asyncio.Future[V]) -> None:
        del self._running[key]
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            log.error("%s failed", self._what, exc_info=exc)
        elif then is not None:
            then(key, fut.result())


async def result_by(fut: asyncio.Future[V], deadline: float) -> V | None:
    """`fut`'s result, or None once the monotonic `deadline` has passed (`fut` goes on:
    it is shielded, never cancelled by the wait)."""
    if fut.done():
        return fut.result()
    left = deadline - time.monotonic()
    if left <= 0:
        return None
    try:
        return await asyncio.wait_for(asyncio.shield(fut), left)
    except TimeoutError:
        return None
