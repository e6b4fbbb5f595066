"""Baseline: the bare HTTP -> Kafka handler, the ceiling of the capture service.

The same HTTP server (granian, same settings) and the same producer (capture.kafka_sink:
acks=all, idempotent, answered after the acknowledgement), but nothing else: no body
decoding, no parsing, no authentication, no quota, no mapping. Each request body becomes one
Kafka message as is, keyed by the request's Authorization header (one key per client, as
capture keys by the authenticated client: the same spread over partitions, no parsing). Run:
`python -m bench.baselines.bare_http_kafka` (CAPTURE_PORT, KAFKA_RAW_TOPIC as for the
capture service).
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from capture import open_files
from capture.config import CaptureSettings
from capture.kafka_sink import Delivered, KafkaSink

OK = b'{"success":true}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(OK)).encode())]
FAILED = [(b"content-type", b"text/plain"), (b"content-length", b"0")]


async def read_body(receive: Any) -> bytes:
    """An ASGI request body, whole (the baselines read it without limits)."""
    parts = []
    more = True
    while more:
        message = await receive()
        parts.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(parts)


class BareApp:
    def __init__(self) -> None:
        self.sink: KafkaSink | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    settings = CaptureSettings.from_env()
                    self.sink = KafkaSink(settings, asyncio.get_running_loop())
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    if self.sink is not None:
                        self.sink.close(10)
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = await read_body(receive)
        assert self.sink is not None
        key = next((v for k, v in scope["headers"] if k == b"authorization"), b"bare")
        outcome = await self.sink.produce(body, key)
        ok = isinstance(outcome, Delivered)
        await send(
            {
                "type": "http.response.start",
                "status": 200 if ok else 503,
                "headers": HEADERS if ok else FAILED,
            }
        )
        await send({"type": "http.response.body", "body": OK if ok else b""})


def create_app() -> BareApp:
    return BareApp()


def main() -> int:
    from capture.server import build_server

    # The same connection limit (and open files) as capture's: only the handler differs.
    settings = open_files.fit(CaptureSettings.from_env())
    build_server(
        settings,
        os.environ.get("LOG_LEVEL", "WARNING"),
        "bench.baselines.bare_http_kafka:create_app",
    ).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
