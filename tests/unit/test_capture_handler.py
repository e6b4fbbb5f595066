"""The request flow's delivery rule, with a Kafka sink whose acknowledgements the test
controls: 200 only once every message is acknowledged; a 503'd request's events are not
produced again when the SDK retries, whether their first copy is still on its way or was
acknowledged after the 503; a copy that definitely failed is produced again. Every test
runs twice: Segment batches mapped by the Python path, and by the compiled fast path
(capture.native_path), which must keep every one of these rules."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from analytics_core.quotas import Quota
from capture.auth import Authenticated, Refused
from capture.config import CaptureSettings
from capture.handler import Capture, Incoming
from capture.kafka_sink import Delivered, DeliveryOutcome, NotDelivered
from capture.metrics import CaptureMetrics
from capture.native_path import NativeBatchMapper, load_native
from capture.quota import Admitted
from capture.retry_memory import RetryMemory
from capture.routes import CaptureRoute

BODY = json.dumps(
    {
        "batch": [
            {"type": "track", "event": "e", "userId": "u", "messageId": f"m{i}"} for i in range(3)
        ]
    }
).encode()
REQUEST = Incoming(CaptureRoute("segment", "batch"), {"authorization": "Bearer k"}, {}, BODY)


@dataclass
class ControlledSink:
    """Records what would go to Kafka; the test decides when and how each message ends."""

    pending: list[asyncio.Future[DeliveryOutcome]] = field(default_factory=list)
    values: list[bytes] = field(default_factory=list)
    brokers_down: bool = False

    def produce(self, value: bytes, key: bytes) -> asyncio.Future[DeliveryOutcome]:
        fut: asyncio.Future[DeliveryOutcome] = asyncio.get_running_loop().create_future()
        self.pending.append(fut)
        self.values.append(value)
        return fut


class AlwaysAuthenticated:
    async def authenticate(self, key: str) -> Authenticated:
        return Authenticated("acme", "a" * 64)


class NoLimit:
    async def take(self, client_id: str, cost: int) -> Admitted:
        return Admitted()

    def still_refused(self, client_id: str) -> int | None:
        return None


MAPPER: list[NativeBatchMapper | None] = [None]


@pytest.fixture(autouse=True, params=["python", "native"])
def mapper(request: pytest.FixtureRequest) -> Iterator[str]:
    MAPPER[0] = load_native("required", 256 * 1024) if request.param == "native" else None
    yield request.param
    MAPPER[0] = None


def capture(sink: ControlledSink) -> Capture:
    settings = CaptureSettings(ack_timeout_s=0.2, default_quota=Quota(1e9, 10**9))
    memory = RetryMemory(ttl_s=60, max_events=1000)
    return Capture(
        settings,
        sink,  # type: ignore[arg-type]
        AlwaysAuthenticated(),  # type: ignore[arg-type]
        NoLimit(),  # type: ignore[arg-type]
        memory,
        CaptureMetrics(),
        MAPPER[0],
    )


def events_in(value: bytes) -> list[str]:
    return [e["event_id"] for e in json.loads(value)]


def test_acknowledged_request_is_200() -> None:
    async def scenario() -> None:
        sink = ControlledSink()
        cap = capture(sink)
        task = asyncio.create_task(cap.handle(REQUEST))
        await asyncio.sleep(0.05)
        sink.pending[0].set_result(Delivered(0, 1))
        answer = await task
        assert answer.status == 200 and json.loads(answer.body)["accepted"] == 3
        assert len(sink.values) == 1 and len(events_in(sink.values[0])) == 3
        paths = {("native",): 1} if MAPPER[0] is not None else {}
        assert cap.metrics.native.values == paths

    asyncio.run(scenario())


def test_a_retry_after_a_503_waits_for_the_first_copy_instead_of_producing_again() -> None:
    async def scenario() -> None:
        sink = ControlledSink()
        cap = capture(sink)
        first = await cap.handle(REQUEST)  # Kafka does not answer within the ack timeout
        assert first.status == 503 and ("retry-after", "5") in first.headers
        retry = asyncio.create_task(cap.handle(REQUEST))
        await asyncio.sleep(0.05)
        sink.pending[0].set_result(Delivered(0, 7))  # the first copy lands after the 503
        assert (await retry).status == 200
        assert len(sink.values) == 1  # one copy in Kafka
        again = await cap.handle(REQUEST)  # and a later retry is acknowledged at once
        assert again.status == 200 and len(sink.values) == 1
        assert cap.metrics.events_deduplicated._value.get() == 6

    asyncio.run(scenario())


def test_a_mixed_retry_produces_only_the_new_events() -> None:
    async def scenario() -> None:
        sink = ControlledSink()
        cap = capture(sink)
        assert (await cap.handle(REQUEST)).status == 503
        sink.pending[0].set_result(Delivered(0, 7))
        doc = json.loads(BODY)
        doc["batch"].append({"type": "track", "event": "e", "userId": "u", "messageId": "new"})
        mixed = Incoming(REQUEST.route, REQUEST.headers, {}, json.dumps(doc).encode())
        task = asyncio.create_task(cap.handle(mixed))
        await asyncio.sleep(0.05)
        sink.pending[1].set_result(Delivered(0, 8))
        assert (await task).status == 200
        assert len(events_in(sink.values[1])) == 1  # only the new event went to Kafka

    asyncio.run(scenario())


def test_a_copy_that_definitely_failed_is_produced_again() -> None:
    async def scenario() -> None:
        sink = ControlledSink()
        cap = capture(sink)
        task = asyncio.create_task(cap.handle(REQUEST))
        await asyncio.sleep(0.05)
        sink.pending[0].set_result(NotDelivered("Local: Message timed out"))
        assert (await task).status == 503
        retry = asyncio.create_task(cap.handle(REQUEST))
        await asyncio.sleep(0.05)
        assert len(sink.values) == 2  # produced again: the first copy is not in Kafka
        sink.pending[1].set_result(Delivered(1, 1))
        assert (await retry).status == 200

    asyncio.run(scenario())


def test_kafka_known_down_is_503_without_producing() -> None:
    async def scenario() -> None:
        sink = ControlledSink(brokers_down=True)
        answer = await capture(sink).handle(REQUEST)
        assert answer.status == 503 and json.loads(answer.body)["code"] == "kafka_unavailable"
        assert sink.values == []

    asyncio.run(scenario())


class StillRefused(NoLimit):
    def still_refused(self, client_id: str) -> int | None:
        return 3


def test_a_client_inside_its_retry_after_is_refused_before_its_body_is_read() -> None:
    async def scenario() -> None:
        sink = ControlledSink()
        cap = capture(sink)
        cap.limiter = StillRefused()  # type: ignore[assignment]
        garbage = Incoming(REQUEST.route, REQUEST.headers, {}, b"not even json")
        answer = await cap.handle(garbage)
        assert answer.status == 429 and ("retry-after", "3") in answer.headers
        assert sink.values == []

    asyncio.run(scenario())


class CachedVerdicts:
    """Verdicts known without a lookup for two keys; any other key would need one."""

    def cached(self, key: str) -> Authenticated | Refused | None:
        known = {
            "k": Authenticated("acme", "a" * 64),
            "wrong": Refused(401, "invalid_write_key", "unknown write key"),
        }
        return known.get(key)


@pytest.mark.parametrize(
    ("authorization", "refused_for", "answer"),
    [
        ("Bearer k", 3, (429, "rate_limited")),
        ("Bearer k", None, None),
        ("Bearer wrong", None, (401, "invalid_write_key")),
        ("Bearer not-cached", 3, None),  # needs a lookup: the body is read meanwhile
        ("", 3, None),  # the key may be in the body
    ],
)
def test_what_is_answered_from_the_headers_alone(
    authorization: str, refused_for: int | None, answer: tuple[int, str] | None
) -> None:
    """`screen` answers only from what is known without a lookup: a cached refusal of the
    header key, or its client inside its last 429's Retry-After; a cached admission is
    handed on so `handle` does not look the key up again."""

    class Limit(NoLimit):
        def still_refused(self, client_id: str) -> int | None:
            assert client_id == "acme"
            return refused_for

    cap = capture(ControlledSink())
    cap.auth = CachedVerdicts()  # type: ignore[assignment]
    cap.limiter = Limit()  # type: ignore[assignment]
    got = cap.screen({"authorization": authorization} if authorization else {})
    assert not isinstance(got, Authenticated) or answer is None
    if answer is None:
        admitted = authorization == "Bearer k"
        assert got == (Authenticated("acme", "a" * 64) if admitted else None)
        return
    assert got is not None and (got.status, json.loads(got.body)["code"]) == answer
    if answer[0] == 429:
        assert ("retry-after", "3") in got.headers
        assert cap.metrics.quota_refusals.labels("acme")._value.get() == 1
    else:
        assert cap.metrics.auth_failures.labels("invalid_write_key")._value.get() == 1


def test_a_screened_admission_is_taken_as_it_is_without_a_second_lookup() -> None:
    class NoLookups:
        async def authenticate(self, key: str) -> Authenticated:
            raise AssertionError("looked up again")

    async def scenario() -> None:
        sink = ControlledSink()
        cap = capture(sink)
        cap.auth = NoLookups()  # type: ignore[assignment]
        who = Authenticated("acme", "a" * 64)
        task = asyncio.create_task(cap.handle(dataclasses.replace(REQUEST, screened=who)))
        await asyncio.sleep(0.05)
        sink.pending[0].set_result(Delivered(0, 1))
        assert (await task).status == 200
        assert all(b'"client_id":"acme"' in v for v in sink.values)

    asyncio.run(scenario())


def test_a_body_key_that_is_not_the_header_key_is_400_and_nothing_is_produced() -> None:
    async def scenario() -> None:
        sink = ControlledSink()
        body = json.loads(BODY)
        for key, status in (("other", 400), ("k", None)):
            request = Incoming(
                REQUEST.route, REQUEST.headers, {}, json.dumps({**body, "writeKey": key}).encode()
            )
            task = asyncio.create_task(capture(sink).handle(request))
            await asyncio.sleep(0.05)
            if status is None:  # the same key twice is no conflict: produced and answered
                sink.pending[0].set_result(Delivered(0, 1))
                assert (await task).status == 200
            else:
                answer = await task
                assert answer.status == status and b"Authorization header" in answer.body
                assert sink.values == []

    asyncio.run(scenario())
