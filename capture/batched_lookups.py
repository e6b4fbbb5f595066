"""Blocking lookups of many keys, run together on an executor from the event loop.

Used for the write-key verdicts and the quotas: after a pause, a hundred clients' first
requests all need a lookup at once. Run one by one on the registry thread, each lookup
paid its own round trips (Redis, PostgreSQL) and its own two hand-overs of the GIL
between that thread and a busy event loop (milliseconds each under load), and the last
client waited for all the others.

Rule: at most one batch job runs at a time. Keys asked for while it runs wait in the next
batch, which starts as soon as it ends, so the batches grow with the load and the number
of thread hops does not. A key already waiting or running is shared, never looked up
twice at once. A job that fails is logged once; its keys' waiters get its exception.
Every key of a finished job is resolved, whatever `then` does.

A key nobody waits for yet (a refresh ahead of expiry) may be `start`-ed with `gather_s`:
its batch starts within that time rather than at once, so such keys of many clients share
one job. A key someone waits for starts the next batch at once, gathered keys included.
(With a hundred clients, refreshes started one at a time kept the registry thread busy
with about a hundred one-key jobs a second, each taking the GIL from the event loop.)
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Executor
from typing import Generic, TypeVar

log = logging.getLogger("capture")

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BatchedLookups(Generic[K, V]):
    def __init__(
        self,
        executor: Executor,
        job: Callable[[Sequence[K]], dict[K, V]],
        what: str,
        then: Callable[[K, V], None] | None = None,
    ) -> None:
        """`job(keys)` returns a value for every key; `then(key, value)`, if given, runs
        for each before anyone awaiting that key resumes."""
        self._executor = executor
        self._job = job
        self._then = then
        self._what = what  # names the job in the log when it fails
        # key -> its result to come and when it was first asked for (monotonic)
        self._waiting: dict[K, tuple[asyncio.Future[V], float]] = {}
        self._next: dict[K, None] = {}  # waiting keys not yet in a running job, in order
        self._running = False
        # When the next batch must start (monotonic); None while no key waits for one. It
        # only moves closer until that batch starts.
        self._due: float | None = None
        # The timer that starts the next batch at `_due`, while no job runs and it is later.
        self._gathering: asyncio.TimerHandle | None = None
        self.jobs = 0  # batch jobs started

    def start(self, key: K, gather_s: float = 0.0) -> asyncio.Future[V]:
        """The key's result to come (its lookup joins the next batch unless it is already
        waiting or running). That batch starts within `gather_s` (see the module
        docstring); at once by default."""
        now = time.monotonic()
        current = self._waiting.get(key)
        if current is None:
            fut: asyncio.Future[V] = asyncio.get_running_loop().create_future()
            self._waiting[key] = (fut, now)
            self._next[key] = None
        elif key in self._next:
            fut = current[0]
        else:  # in the running job
            return current[0]
        due = now + max(0.0, gather_s)
        if self._due is not None and self._due <= due:
            return fut  # the next batch starts by then: by its timer, or when the job ends
        self._due = due
        if not self._running:
            self._schedule()
        return fut

    def _schedule(self) -> None:
        """Start the next batch at `_due`: at once when that has come (someone waits for a
        key), else by a timer, which replaces an earlier one."""
        assert self._due is not None
        if self._gathering is not None:
            self._gathering.cancel()
            self._gathering = None
        left = self._due - time.monotonic()
        if left <= 0:
            self._launch()
        else:
            self._gathering = asyncio.get_running_loop().call_later(left, self._launch)

    async def result_within(self, key: K, wait_s: float) -> V | None:
        """The key's result, or None once `wait_s` has passed since it was first asked
        for. The lookup goes on: its result still reaches `then`."""
        fut = self.start(key)
        if fut.done():  # a key's entry in _waiting is gone once its future is done
            return fut.result()
        return await result_by(fut, self._waiting[key][1] + wait_s)

    def _launch(self) -> None:
        if self._gathering is not None:
            self._gathering.cancel()
            self._gathering = None
        if self._running or not self._next:
            return
        keys, self._next, self._due = list(self._next), {}, None
        self._running = True
        self.jobs += 1
        loop = asyncio.get_running_loop()
        try:
            running = loop.run_in_executor(self._executor, self._job, keys)
        except RuntimeError as exc:  # the executor is shut down: the service is stopping
            running = loop.create_future()
            running.set_exception(exc)
        running.add_done_callback(functools.partial(self._ended, keys))

    def _ended(self, keys: list[K], running: asyncio.Future[dict[K, V]]) -> None:
        self._running = False
        failure = running.exception() if not running.cancelled() else asyncio.CancelledError()
        if failure is not None:
            log.error("%s failed", self._what, exc_info=failure)
        results = {} if failure is not None else running.result()
        if failure is None and any(key not in results for key in keys):
            failure = LookupError(f"{self._what} returned no result for some keys")
            log.error("%s", failure)
        try:
            for key in keys:
                fut, _asked = self._waiting.pop(key)
                if key in results:
                    self._remember(key, results[key])
                    fut.set_result(results[key])
                else:
                    assert failure is not None
                    fut.set_exception(failure)
                    fut.exception()  # logged once above, not again for every unawaited key
        finally:
            if self._next:
                self._schedule()

    def _remember(self, key: K, value: V) -> None:
        """`then(key, value)`; if it raises, that is logged and the key's waiters still get
        `value` (a key left unresolved would hold its requests until their wait ends)."""
        if self._then is None:
            return
        try:
            self._then(key, value)
        except Exception:
            log.exception("%s: keeping the result of a key failed", self._what)


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
