"""CPU of the capture request path alone, in process: no HTTP server, no Kafka, no Redis.

The real `capture.app.CaptureApp` (ASGI, called with in-memory messages) and the real
`capture.handler.Capture` decode, authenticate, map, pack and answer SDK-style bodies; only
the edges are replaced: a Kafka sink that acknowledges every message at once, a write key
that is always valid, a quota that always admits. 64 requests run concurrently (like the
benchmark's wrk connections). `native` picks the mapping of Segment batches: the compiled
fast path (capture.native_path, as the service runs by default) or the Python path. The
figure is process CPU time per event and per request, the best of a few rounds, with the
garbage collector set up as the service sets it up.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable, Coroutine, MutableMapping
from typing import Any

import uvloop

from analytics_core.quotas import Quota
from bench.capture_bodies import basic, body_of, client_id
from capture.app import CaptureApp, settle_heap
from capture.auth import Authenticated
from capture.config import CaptureSettings
from capture.handler import Capture, Incoming
from capture.kafka_sink import Delivered, DeliveryOutcome
from capture.native_path import load_native
from capture.quota import ADMITTED, Admitted
from capture.retry_memory import RetryMemory
from capture.routes import CaptureRoute

CONCURRENCY = 64


class AckingSink:
    """Every message is acknowledged on the next turn of the event loop."""

    brokers_down = False

    def produce(self, value: bytes, key: bytes) -> asyncio.Future[DeliveryOutcome]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[DeliveryOutcome] = loop.create_future()
        loop.call_soon(fut.set_result, Delivered(0, 0))
        return fut


class ValidKey:
    def cached(self, key: str) -> Authenticated:
        return Authenticated(client_id(0), "0" * 64)

    async def authenticate(self, key: str) -> Authenticated:
        return self.cached(key)


class NoQuota:
    async def take(self, client: str, cost: int) -> Admitted:
        return ADMITTED

    def still_refused(self, client: str) -> int | None:
        return None


def _capture(settings: CaptureSettings, app: CaptureApp, native: bool) -> Capture:
    return Capture(
        settings,
        AckingSink(),  # type: ignore[arg-type]
        ValidKey(),  # type: ignore[arg-type]
        NoQuota(),  # type: ignore[arg-type]
        RetryMemory(600, 1_000_000),
        app.metrics,
        load_native("required" if native else "off", settings.max_event_bytes),
    )


def measure(batch: int, requests: int, *, native: bool, rounds: int = 5) -> dict[str, float]:
    """CPU microseconds per event of the handler alone and of the ASGI app (handler
    included) on `requests` distinct bodies of `batch` events."""
    settings = CaptureSettings(default_quota=Quota(1e9, 10**9))
    app = CaptureApp(settings)
    app.capture = _capture(settings, app, native)
    handler = _capture(settings, app, native)
    bodies = [body_of(batch, f"rp-{i}") for i in range(requests)]
    auth = basic(client_id(0))
    headers = {"authorization": auth, "content-type": "application/json"}
    route = CaptureRoute("segment", "batch")
    scope_headers = [
        (b"host", b"127.0.0.1"),
        (b"content-type", b"application/json"),
        (b"authorization", auth.encode()),
    ]

    async def via_handler(body: bytes) -> None:
        answer = await handler.handle(Incoming(route, headers, {}, body))
        assert answer.status == 200, answer.body

    async def via_app(body: bytes) -> None:
        status: list[int] = []

        async def receive() -> MutableMapping[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/v1/batch",
            "query_string": b"",
            "headers": [*scope_headers, (b"content-length", str(len(body)).encode())],
        }
        await app(scope, receive, send)
        assert status == [200], status

    async def best(one: Callable[[bytes], Coroutine[Any, Any, None]]) -> float:
        fastest = float("inf")
        for _ in range(rounds):
            started = time.process_time()
            for i in range(0, len(bodies), CONCURRENCY):
                await asyncio.gather(*(one(b) for b in bodies[i : i + CONCURRENCY]))
            fastest = min(fastest, time.process_time() - started)
        return fastest * 1e6 / (requests * batch)

    async def run() -> dict[str, float]:
        settle_heap()
        return {"handler": await best(via_handler), "app": await best(via_app)}

    try:
        return uvloop.run(run())
    finally:
        gc.unfreeze()
