"""capture.kafka_sink against the real broker: delivery reports are served on the event
loop's thread (no poll thread), an idle sink starts polling at once when a message is
produced, and `close` from another thread still resolves every future."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator

import pytest
import uvloop

from analytics_core.settings import Settings
from capture import kafka_sink
from capture.config import CaptureSettings
from capture.kafka_sink import Delivered, DeliveryOutcome, KafkaSink
from tests.integration.router_support import private_topics


@pytest.fixture(scope="module")
def topic_settings(stack: Settings) -> Iterator[CaptureSettings]:
    with private_topics(stack, "sink", partitions=2) as settings:
        yield CaptureSettings(common=settings)


def with_sink(settings: CaptureSettings, scenario: Callable[[KafkaSink], Awaitable[None]]) -> None:
    """`scenario` on a uvloop loop with a sink made there (closed after, if it has not)."""

    async def main() -> None:
        sink = KafkaSink(settings, asyncio.get_running_loop())
        try:
            await scenario(sink)
        finally:
            sink.close(10)

    uvloop.run(main())


def test_reports_resolve_every_future_on_the_loop_thread_without_a_poll_thread(
    topic_settings: CaptureSettings,
) -> None:
    threads_before = set(threading.enumerate())

    async def scenario(sink: KafkaSink) -> None:
        futures = [sink.produce(f"m{i}".encode(), f"k{i % 7}".encode()) for i in range(300)]
        outcomes = await asyncio.wait_for(asyncio.gather(*futures), 30)
        assert all(isinstance(o, Delivered) for o in outcomes), outcomes[:3]
        placed = {(o.partition, o.offset) for o in outcomes if isinstance(o, Delivered)}
        assert len(placed) == 300  # one acknowledged place per message
        # No Python thread was started to serve the reports (librdkafka's own threads are
        # not Python threads), and nothing is left waiting.
        started = set(threading.enumerate()) - threads_before
        assert not started, [t.name for t in started]
        assert sink._in_flight == 0 and sink.queued() == 0

    with_sink(topic_settings, scenario)


def test_an_idle_sink_polls_at_once_when_a_message_is_produced(
    topic_settings: CaptureSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With the idle poll this rare, only the switch to busy polling on produce can get the
    # acknowledgement back within the wait below.
    monkeypatch.setattr(kafka_sink, "POLL_IDLE_S", 600.0)

    async def scenario(sink: KafkaSink) -> None:
        first = await asyncio.wait_for(sink.produce(b"first", b"k"), 30)
        assert isinstance(first, Delivered)
        await asyncio.sleep(0.2)  # nothing in flight: the sink is back to idle polling
        assert not sink._busy
        again = await asyncio.wait_for(sink.produce(b"again", b"k"), 30)
        assert isinstance(again, Delivered) and again.offset > first.offset

    with_sink(topic_settings, scenario)


def test_close_from_another_thread_resolves_what_its_flush_delivers(
    topic_settings: CaptureSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The loop never polls here: every report is served by close's flush, on the executor's
    # thread, and handed to the loop.
    monkeypatch.setattr(kafka_sink, "POLL_BUSY_S", 600.0)
    monkeypatch.setattr(kafka_sink, "POLL_IDLE_S", 600.0)

    async def scenario(sink: KafkaSink) -> None:
        futures: list[asyncio.Future[DeliveryOutcome]] = [
            sink.produce(f"c{i}".encode(), b"k") for i in range(50)
        ]
        left = await asyncio.get_running_loop().run_in_executor(None, sink.close, 10)
        assert left == 0
        outcomes = await asyncio.wait_for(asyncio.gather(*futures), 10)
        assert all(isinstance(o, Delivered) for o in outcomes)
        assert sink._in_flight == 0

    with_sink(topic_settings, scenario)
