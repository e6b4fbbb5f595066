"""Answers given before the body is read (a screened 401 or 429, a wrong path or method, a
preflight, headers too large) go out first, and the body is then read to its end and
dropped: an HTTP server left with unread body closes the connection with a reset that can
destroy the answer before the client reads it (tests/integration/capture/test_quotas.py
shows that over real sockets)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import MutableMapping
from typing import Any

import pytest

from analytics_core.quotas import Quota
from capture.app import CaptureApp
from capture.auth import Authenticated, Refused
from capture.config import CaptureSettings
from capture.handler import Capture
from capture.native_path import load_native
from capture.retry_memory import RetryMemory

CHUNKS = 4


class CachedVerdicts:
    def cached(self, key: str) -> Authenticated | Refused | None:
        if key == "wrong":
            return Refused(401, "invalid_write_key", "unknown write key")
        return Authenticated("acme", "a" * 64)


class Refusing:
    def still_refused(self, client_id: str) -> int | None:
        return 7


def app() -> CaptureApp:
    settings = CaptureSettings(default_quota=Quota(1e9, 10**9), cors_origins=("*",))
    served = CaptureApp(settings)
    served.capture = Capture(
        settings,
        None,  # type: ignore[arg-type]  # nothing here reaches Kafka
        CachedVerdicts(),  # type: ignore[arg-type]
        Refusing(),  # type: ignore[arg-type]
        RetryMemory(60, 1000),
        served.metrics,
        load_native("off", settings.max_event_bytes),
    )
    return served


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("POST", "/v1/batch", [(b"authorization", b"Bearer wrong")], 401),
        ("POST", "/v1/batch", [(b"authorization", b"Bearer k")], 429),
        ("POST", "/v1/no-such-path", [], 404),
        ("POST", "/healthz", [], 405),
        ("PUT", "/v1/batch", [], 405),
        ("OPTIONS", "/v1/batch", [(b"origin", b"https://shop.example")], 204),
        ("POST", "/v1/batch", [(b"x-padding", b"p" * 70_000)], 431),
    ],
)
def test_the_answer_goes_out_first_then_the_body_is_read_to_its_end(
    method: str, path: str, headers: list[tuple[bytes, bytes]], status: int
) -> None:
    events: list[str] = []

    async def receive() -> MutableMapping[str, Any]:
        events.append("chunk")
        await asyncio.sleep(0)
        more = events.count("chunk") < CHUNKS
        return {"type": "http.request", "body": b"\x00" * 16_384, "more_body": more}

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            events.append(f"answer {message['status']}")

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": b"",
        "headers": [*headers, (b"content-length", str(CHUNKS * 16_384).encode())],
    }
    asyncio.run(app()(scope, receive, send))
    assert events == [f"answer {status}"] + ["chunk"] * CHUNKS


def test_a_screened_answer_says_why_and_no_body_byte_is_counted() -> None:
    served = app()
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": b"{not json", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/batch",
        "query_string": b"",
        "headers": [(b"authorization", b"Bearer k"), (b"content-length", b"9")],
    }
    asyncio.run(served(scope, receive, send))
    assert sent[0]["status"] == 429
    assert (b"retry-after", b"7") in sent[0]["headers"]
    assert json.loads(sent[1]["body"])["code"] == "rate_limited"
    assert "capture_request_bytes_total{" not in served.metrics.exposition().decode()
