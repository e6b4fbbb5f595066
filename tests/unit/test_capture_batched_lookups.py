"""capture.batched_lookups: one batch job at a time; keys asked for meanwhile go into the
next one together; a waiter gives up after its wait, the lookup does not."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import uvloop

from analytics_core.clients import ClientFound, ClientRecord, ClientStatus
from analytics_core.event_contract import hash_api_key
from capture.auth import Authenticated, Authenticator
from capture.batched_lookups import BatchedLookups
from tests.unit.auth_fakes import OneClientAtATimeDirectory, OneKeyAtATimeIndex


class Doubling:
    """A blocking job: each key's double, after `delay_s`; records every batch it ran."""

    def __init__(self, delay_s: float = 0.05) -> None:
        self.delay_s = delay_s
        self.batches: list[list[int]] = []
        self.started: list[float] = []  # when each batch began (monotonic)
        self.fail = False

    def __call__(self, keys: Sequence[int]) -> dict[int, int]:
        self.batches.append(list(keys))
        self.started.append(time.monotonic())
        time.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("registry exploded")
        return {k: 2 * k for k in keys if k >= 0}  # a negative key: one the job forgets


def test_keys_asked_for_while_a_batch_runs_go_into_the_next_one_together() -> None:
    async def scenario() -> None:
        job = Doubling()
        seen: dict[int, int] = {}
        lookups = BatchedLookups(ThreadPoolExecutor(1), job, "doubling", seen.__setitem__)
        first = lookups.start(1)
        rest = [lookups.start(k) for k in range(2, 52)]
        again = lookups.start(7)  # already waiting: the same lookup
        assert again is rest[5]
        assert await first == 2
        assert await asyncio.gather(*rest) == [2 * k for k in range(2, 52)]
        assert job.batches == [[1], list(range(2, 52))]
        assert lookups.jobs == 2
        assert seen == {k: 2 * k for k in range(1, 52)}  # `then` saw every result

    asyncio.run(scenario())


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, None]], None]:
    """The service runs on uvloop, whose timer handles differ from asyncio's."""
    return uvloop.run if request.param == "uvloop" else asyncio.run  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("first_gather", "second_gather", "due"), [(0.2, 0.5, 0.2), (0.5, 0.2, 0.25)]
)
def test_refreshes_nobody_waits_for_gather_into_one_job_when_the_first_is_due(
    run: Callable[[Coroutine[Any, Any, None]], None],
    first_gather: float,
    second_gather: float,
    due: float,
) -> None:
    async def scenario() -> None:
        job = Doubling(delay_s=0.01)
        lookups = BatchedLookups(ThreadPoolExecutor(1), job, "doubling")
        asked = time.monotonic()
        first = lookups.start(1, gather_s=first_gather)
        await asyncio.sleep(0.05)
        later = [lookups.start(k, gather_s=second_gather) for k in (2, 3)]
        assert job.batches == []  # nothing due yet
        assert await asyncio.gather(first, *later) == [2, 4, 6]
        assert job.batches == [[1, 2, 3]] and lookups.jobs == 1
        assert due - 0.01 <= job.started[0] - asked < due + 0.25

    run(scenario())


def test_a_gather_time_under_a_millisecond_then_another_key(
    run: Callable[[Coroutine[Any, Any, None]], None],
) -> None:
    """uvloop runs a sub-millisecond call_later as call_soon, whose handle has no when()."""

    async def scenario() -> None:
        job = Doubling(delay_s=0.01)
        lookups = BatchedLookups(ThreadPoolExecutor(1), job, "doubling")
        both = lookups.start(1, gather_s=0.0004), lookups.start(2, gather_s=0.3)
        assert await asyncio.gather(*both) == [2, 4]
        assert job.batches == [[1, 2]]

    run(scenario())


def test_a_batch_due_after_the_registry_thread_stopped_fails_its_waiters_only(
    run: Callable[[Coroutine[Any, Any, None]], None],
) -> None:
    """A refresh gathered just before shutdown: its batch comes due with the executor gone."""

    async def scenario() -> None:
        executor = ThreadPoolExecutor(1)
        lookups = BatchedLookups(executor, Doubling(delay_s=0.01), "doubling")
        late = lookups.start(1, gather_s=0.05)
        executor.shutdown()
        with pytest.raises(RuntimeError, match="after shutdown"):
            await late

    run(scenario())


def test_a_key_someone_waits_for_starts_the_batch_at_once_gathered_keys_included(
    run: Callable[[Coroutine[Any, Any, None]], None],
) -> None:
    async def scenario() -> None:
        job = Doubling(delay_s=0.01)
        lookups = BatchedLookups(ThreadPoolExecutor(1), job, "doubling")
        gathered = [lookups.start(k, gather_s=10.0) for k in (1, 2)]
        asked = time.monotonic()
        assert await lookups.result_within(2, 5.0) == 4  # a request now waits for key 2
        assert job.batches == [[1, 2]]
        assert job.started[0] - asked < 0.5
        assert await asyncio.gather(*gathered) == [2, 4]
        urgent = lookups.start(3, gather_s=10.0), lookups.start(4)
        assert await asyncio.gather(*urgent) == [6, 8]
        assert job.batches == [[1, 2], [3, 4]]

    run(scenario())


def test_refreshes_asked_for_during_a_job_do_not_start_the_next_one_before_they_are_due(
    run: Callable[[Coroutine[Any, Any, None]], None],
) -> None:
    """Jobs no longer run back to back for keys nobody waits for: the next batch keeps its
    gather time after a job ends."""

    async def scenario() -> None:
        job = Doubling(delay_s=0.1)
        lookups = BatchedLookups(ThreadPoolExecutor(1), job, "doubling")
        running = lookups.start(1)
        await asyncio.sleep(0.02)
        asked = time.monotonic()
        refresh = lookups.start(2, gather_s=0.4)
        assert await running == 2
        assert await refresh == 4
        assert job.batches == [[1], [2]]
        assert job.started[1] - asked >= 0.39

    run(scenario())


def test_a_waiter_gives_up_after_its_wait_and_the_result_still_arrives() -> None:
    async def scenario() -> None:
        job = Doubling(delay_s=0.3)
        seen: dict[int, int] = {}
        lookups = BatchedLookups(ThreadPoolExecutor(1), job, "doubling", seen.__setitem__)
        started = time.monotonic()
        assert await lookups.result_within(5, 0.05) is None
        assert time.monotonic() - started < 0.25
        await asyncio.sleep(0.4)
        assert seen == {5: 10}
        assert await lookups.result_within(6, 1.0) == 12

    asyncio.run(scenario())


def test_a_failed_batch_reaches_its_waiters_and_the_next_batch_still_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        job = Doubling()
        lookups = BatchedLookups(ThreadPoolExecutor(1), job, "doubling")
        job.fail = True
        failed = lookups.start(1)
        with pytest.raises(RuntimeError, match="exploded"):
            await failed
        job.fail = False
        assert await lookups.start(2) == 4
        with pytest.raises(LookupError):
            await lookups.start(-1)  # the job returned nothing for it

    with caplog.at_level(logging.ERROR, logger="capture"):
        asyncio.run(scenario())
    failures = [r for r in caplog.records if "doubling" in r.getMessage()]
    assert len(failures) == 2, [r.getMessage() for r in failures]


def test_a_then_that_raises_is_logged_and_every_waiter_still_gets_its_result(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        job = Doubling()
        seen: dict[int, int] = {}

        def then(key: int, value: int) -> None:
            if key == 3:
                raise ValueError("cannot keep 3")
            seen[key] = value

        lookups = BatchedLookups(ThreadPoolExecutor(1), job, "doubling", then)
        first = lookups.start(1)
        batch = [lookups.start(k) for k in (2, 3, 4, 5)]  # 3's `then` raises mid-batch
        assert await first == 2
        assert await asyncio.wait_for(asyncio.gather(*batch), 1.0) == [4, 6, 8, 10]
        assert seen == {1: 2, 2: 4, 4: 8, 5: 10}
        assert await asyncio.wait_for(lookups.start(6), 1.0) == 12  # later batches still run

    with caplog.at_level(logging.ERROR, logger="capture"):
        asyncio.run(scenario())
    failures = [r for r in caplog.records if "keeping the result" in r.getMessage()]
    assert len(failures) == 1 and "cannot keep 3" in (failures[0].exc_text or ""), failures


KEYS = {hash_api_key(f"k{i}"): f"client-{i}" for i in range(100)}


class GatedIndex(OneKeyAtATimeIndex):
    """Knows KEYS; the first batch waits until `opened` is set; records each batch's size."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.batches: list[int] = []

    def clients_for(self, key_hashes: Sequence[str]) -> dict[str, str]:
        self.batches.append(len(key_hashes))
        self.opened.wait(5)
        return {h: KEYS[h] for h in key_hashes}


class KeysDirectory(OneClientAtATimeDirectory):
    """Each client of KEYS, active, holding its key."""

    def lookup(self, client_id: str) -> ClientFound:
        key_hash = next(h for h, c in KEYS.items() if c == client_id)
        return ClientFound(ClientRecord(client_id, ClientStatus.ACTIVE, key_hash, "client_x"))


def test_a_hundred_new_keys_at_once_take_two_registry_jobs_not_a_hundred() -> None:
    async def scenario() -> None:
        index = GatedIndex()
        auth = Authenticator(
            index,  # type: ignore[arg-type]
            KeysDirectory(),  # type: ignore[arg-type]
            ThreadPoolExecutor(1),
            front_ttl_s=1.0,
        )
        waiting = [asyncio.ensure_future(auth.authenticate(f"k{i}")) for i in range(100)]
        await asyncio.sleep(0.05)  # every request is waiting; the first batch holds
        index.opened.set()
        outcomes = await asyncio.gather(*waiting)
        assert index.batches == [1, 99]
        assert outcomes == [
            Authenticated(KEYS[hash_api_key(f"k{i}")], hash_api_key(f"k{i}")) for i in range(100)
        ]

    asyncio.run(scenario())
