"""capture.read_deadlines: one sweeper ends the body reads past their deadline."""

from __future__ import annotations

import asyncio
import time

import pytest

from capture.read_deadlines import ReadDeadlines


async def _never() -> bytes:
    await asyncio.Event().wait()
    return b"unreachable"


async def _soon(delay_s: float) -> bytes:
    await asyncio.sleep(delay_s)
    return b"body"


def test_a_read_past_its_deadline_ends_in_timeout_and_its_task_goes_on() -> None:
    async def scenario() -> None:
        deadlines = ReadDeadlines(0.2)
        sweeper = asyncio.create_task(deadlines.run())

        async def request() -> str:
            try:
                await deadlines.within(_never())
            except TimeoutError:
                # The task was uncancelled: it can still await (as it does to answer 408).
                await asyncio.sleep(0.01)
                return "408"
            return "read"

        started = time.monotonic()
        assert await asyncio.wait_for(request(), 3) == "408"
        took = time.monotonic() - started
        assert 0.2 <= took < 0.2 + deadlines.tick_s + 0.2, took
        assert len(deadlines) == 0
        sweeper.cancel()

    asyncio.run(scenario())


def test_a_read_within_its_deadline_is_untouched_and_leaves_nothing_behind() -> None:
    async def scenario() -> None:
        deadlines = ReadDeadlines(0.5)
        sweeper = asyncio.create_task(deadlines.run())
        bodies = await asyncio.gather(*(deadlines.within(_soon(0.05)) for _ in range(50)))
        assert bodies == [b"body"] * 50
        assert len(deadlines) == 0
        sweeper.cancel()

    asyncio.run(scenario())


def test_a_read_cancelled_for_another_reason_stays_cancelled() -> None:
    async def scenario() -> None:
        deadlines = ReadDeadlines(30)
        reading = asyncio.create_task(deadlines.within(_never()))
        await asyncio.sleep(0.01)
        assert len(deadlines) == 1
        reading.cancel()  # e.g. shutdown: not a deadline, so no TimeoutError, no 408
        with pytest.raises(asyncio.CancelledError):
            await reading
        assert len(deadlines) == 0

    asyncio.run(scenario())


def test_sweep_cancels_only_the_reads_past_their_deadline() -> None:
    async def scenario() -> None:
        short, long = ReadDeadlines(0.1), ReadDeadlines(60)
        late = asyncio.create_task(short.within(_never()))
        early = asyncio.create_task(long.within(_never()))
        await asyncio.sleep(0.01)
        now = time.monotonic()
        assert long.sweep(now) == 0
        assert short.sweep(now) == 0  # 0.1 s not yet passed
        assert short.sweep(now + 0.2) == 1
        assert short.sweep(now + 0.3) == 0  # already cancelled: not again
        with pytest.raises(TimeoutError):
            await late
        assert not early.done()
        early.cancel()
        with pytest.raises(asyncio.CancelledError):
            await early

    asyncio.run(scenario())


def test_the_sweep_interval_follows_the_timeout() -> None:
    # A fifth of the timeout, at most 0.5 s: a read ends at most 20% (or 0.5 s) late.
    assert ReadDeadlines(0.1).tick_s == pytest.approx(0.02)
    assert ReadDeadlines(30).tick_s == 0.5
