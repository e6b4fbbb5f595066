"""The capture service as an ASGI application (served by granian; see capture.server).

This module is the I/O shell: it reads request bodies within the size, memory and time
bounds, answers CORS preflights, serves /healthz, /readyz and /metrics, and hands capture
requests to `capture.handler.Capture`. Invariants:
- a body is never held beyond CAPTURE_MAX_BODY_BYTES, and all bodies held at once stay
  under CAPTURE_MAX_INFLIGHT_MB (else 503 at once): memory is bounded under overload;
- an exception inside a request is logged and answered 500; the service keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qsl

from prometheus_client import CONTENT_TYPE_LATEST

from analytics_core import pg
from analytics_core.client_cache import ClientDirectory
from capture import responses, sdk_settings
from capture.auth import Authenticator, KeyIndex
from capture.config import CaptureSettings
from capture.handler import Capture, Incoming
from capture.kafka_sink import Delivered, DeliveryOutcome, KafkaSink
from capture.metrics import CaptureMetrics
from capture.native_path import load_native
from capture.quota import QuotaBook, RateLimiter
from capture.read_deadlines import ReadDeadlines
from capture.responses import Response
from capture.restart_memory import read_recent
from capture.retry_memory import RetryMemory
from capture.routes import CaptureRoute, route_for
from capture.sdk_settings import SettingsRequest

log = logging.getLogger("capture")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PROBE_EVERY_S = 2.0
GC_THRESHOLD = 20_000  # container allocations between young-generation collections
DRAIN_LIMIT_BYTES = 64 * 2**20  # read and drop at most this much of a refused body
PREFLIGHT_HEADERS = "content-type, content-encoding, authorization, x-retry-count"
# The SDK settings documents change only with a deployment: browsers may keep them a while.
SETTINGS_CACHE = (("cache-control", "public, max-age=300"),)
# Segment's settings name the host they were asked of (without CAPTURE_PUBLIC_URL): a shared
# cache must keep one copy per Host, or one request with a forged Host poisons it for all.
SETTINGS_CACHE_PER_HOST = (*SETTINGS_CACHE, ("vary", "Host"))


_STATUS_TEXT = {status: str(status) for status in range(100, 600)}
CLIENT_CLOSED = "499"  # the status label of a request whose client left mid-body
HEADER_LIMIT_BYTES = 64 * 1024  # request line and headers (README: Limits)
# The request headers the service reads (ASGI servers give names in lower case); no other
# header is decoded.
_READ_HEADERS = tuple(
    (name.encode(), name)
    for name in (
        "authorization",
        "content-type",
        "content-encoding",
        "content-length",
        "origin",
        "access-control-request-headers",
    )
)
_NO_QUERY: dict[str, str] = {}


def _unread_label(route: CaptureRoute | str | SettingsRequest | None, status: int) -> str | None:
    """The `route` label a request answered before its body is counted under (404s under
    "unknown", a bounded label); None when it is counted elsewhere (settings documents)
    or not at all (/metrics, /healthz, /readyz: scrapes and probes)."""
    if isinstance(route, CaptureRoute):
        return route.label
    if route is None:
        return "unknown"
    if isinstance(route, SettingsRequest) and status == 431:
        return route.kind
    return None


def _repeated_authorization(raw_headers: list[tuple[bytes, bytes]]) -> bool:
    return sum(1 for name, _ in raw_headers if name == b"authorization") > 1


class _BodyTooLarge(Exception):
    pass


class _ClientGone(Exception):
    """The client disconnected before its body was complete (RFC 9112 8: an incomplete
    message is not processed)."""


_TOO_MANY_BODIES = "too many request bodies in flight; retry later"


class _Overloaded(Exception):
    """Past CAPTURE_MAX_CONCURRENT_REQUESTS or CAPTURE_MAX_INFLIGHT_MB; says which."""


class _Held:
    """Bytes of one request's body counted in the in-flight budget (given back at its end)."""

    __slots__ = ("bytes",)

    def __init__(self) -> None:
        self.bytes = 0


class CaptureApp:
    def __init__(self, settings: CaptureSettings | None = None) -> None:
        self._settings = settings
        self.metrics = CaptureMetrics()
        self.capture: Capture | None = None
        self._sink: KafkaSink | None = None
        self._kafka_problem: str | None = "not started"
        self._inflight_bytes = 0
        self._inflight = 0  # HTTP requests of any path in progress
        self._capturing = 0  # capture requests in progress (CAPTURE_MAX_CONCURRENT_REQUESTS)
        # Replaced at start-up by one for the settings read then.
        self._reads = ReadDeadlines((settings or CaptureSettings).body_timeout_s)
        self._tasks: list[asyncio.Task[None]] = []
        self._closers: list[Callable[[], object]] = []

    # -- lifecycle ------------------------------------------------------------------
    async def startup(self) -> None:
        s = self._settings = self._settings or CaptureSettings.from_env()
        self._reads = ReadDeadlines(s.body_timeout_s)
        loop = asyncio.get_running_loop()
        # A hung PostgreSQL holds the registry thread for one bounded call at a time, never
        # for good (requests themselves wait at most registry_wait_s).
        pg.bound_every_call(s.common.postgres.call_timeout_s)
        registry_thread = ThreadPoolExecutor(1, thread_name_prefix="registry")
        self._probe_thread = ThreadPoolExecutor(1, thread_name_prefix="kafka-probe")
        directory = ClientDirectory(
            s.common.redis,
            s.common.postgres,
            local_ttl_s=s.cache_local_ttl_s,
            redis_ttl_s=s.cache_ttl_s,
            negative_ttl_s=s.cache_negative_ttl_s,
        )
        directory.start_invalidation_listener()
        index = KeyIndex(
            s.common.redis,
            s.common.postgres,
            local_ttl_s=s.cache_local_ttl_s,
            redis_ttl_s=s.cache_ttl_s,
            negative_ttl_s=s.cache_negative_ttl_s,
        )
        # Verdicts are cached on the loop for at most 1 s: a deprovisioned client or a
        # rotated key stops being accepted within that (plus the directory's own TTLs).
        auth = Authenticator(
            index,
            directory,
            registry_thread,
            front_ttl_s=min(1.0, s.cache_local_ttl_s),
            wait_s=s.registry_wait_s,
            on_stale=lambda: self.metrics.stale_verdicts.add(()),
        )
        book = QuotaBook(s.common.postgres, s.default_quota, s.quota_cache_s)
        limiter = RateLimiter(
            s.common.redis,
            book,
            registry_thread,
            lease_s=s.quota_lease_s,
            registry_wait_s=s.registry_wait_s,
        )
        self._sink = KafkaSink(s, loop)
        memory = RetryMemory(s.retry_memory_s, s.retry_memory_events)
        native = load_native(s.native, s.max_event_bytes)
        self.capture = Capture(s, self._sink, auth, limiter, memory, self.metrics, native)
        self._closers = [directory.close, index.close, book.close, registry_thread.shutdown]
        self._limiter = limiter
        self._memory = memory
        await self._probe_once()
        await self._recall_recent_writes()
        self._tasks = [
            asyncio.create_task(self._housekeeping()),
            asyncio.create_task(self._reads.run()),
        ]
        self.metrics.watch_inflight(lambda: self._inflight, lambda: self._inflight_bytes)
        settle_heap()
        self.metrics.up.set(1)
        log.info(
            "capture ready",
            extra={
                "host": s.host,
                "port": s.port,
                "kafka": self._kafka_problem or "reachable",
                "native_fast_path": "on" if native is not None else "off",
            },
        )

    async def shutdown(self) -> None:
        """Drain: wait (bounded) for requests in flight, then flush the producer."""
        s = self._settings
        assert s is not None
        self.metrics.up.set(0)
        deadline = time.monotonic() + s.shutdown_timeout_s
        while self._inflight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for t in self._tasks:
            t.cancel()
        if self._sink is not None:
            loop = asyncio.get_running_loop()
            left = await loop.run_in_executor(
                None, self._sink.close, max(1.0, deadline - time.monotonic())
            )
            log.info("capture stopped", extra={"unflushed_messages": left})
        await self._limiter.close()
        for close in self._closers:
            with contextlib.suppress(Exception):
                close()
        self._probe_thread.shutdown(wait=False)

    async def _probe_once(self) -> None:
        assert self._sink is not None
        loop = asyncio.get_running_loop()
        self._kafka_problem = await loop.run_in_executor(self._probe_thread, self._sink.probe, 2.0)
        self.metrics.kafka_up.set(0 if self._kafka_problem else 1)

    async def _recall_recent_writes(self) -> None:
        """Remember what the raw topic received lately as acknowledged (see
        capture.restart_memory): before the first request, so no retry slips past it."""
        s = self._settings
        assert s is not None and self._sink is not None
        if s.restart_memory_s <= 0 or s.retry_memory_events <= 0:
            return
        if self._kafka_problem is not None:
            log.warning(
                "recent writes not read: Kafka unavailable at start; retries of requests "
                "a stopped process had written may be written twice",
                extra={"kafka": self._kafka_problem},
            )
            return
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        recent = await loop.run_in_executor(
            self._probe_thread,
            read_recent,
            s.common.kafka,
            self._sink.topic,
            s.restart_memory_s,
            s.retry_memory_events,
        )
        for written in recent.messages:
            fate: asyncio.Future[DeliveryOutcome] = loop.create_future()
            fate.set_result(Delivered(written.partition, written.offset))
            self._memory.remember(written.event_ids, fate)
        remembered = len(recent.messages)
        recent.messages.clear()
        give_back_freed_memory()  # what the read held: message values, batches
        log.info(
            "recent writes remembered as acknowledged",
            extra={
                "window_s": s.restart_memory_s,
                "messages_read": recent.read,
                "messages": remembered,
                "events": recent.events,
                "seconds": round(time.monotonic() - started, 2),
                "incomplete": recent.problem,
            },
        )

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(PROBE_EVERY_S)
            try:
                await self._probe_once()
                self._memory.expire()
                assert self._sink is not None
                self.metrics.kafka_queue.set(self._sink.queued())
                self.metrics.retry_memory.set(len(self._memory))
                self.metrics.quota_local_fallback.set(1 if self._limiter.local_fallback else 0)
            except Exception:
                log.exception("housekeeping failed")

    # -- ASGI -------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        self._inflight += 1
        try:
            await self._http(scope, receive, send)
        finally:
            self._inflight -= 1

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("capture failed to start")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await self.shutdown()
                finally:
                    await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_headers = scope["headers"]
        fields = dict(raw_headers)
        headers = {
            name: value.decode("latin-1")
            for key, name in _READ_HEADERS
            if (value := fields.get(key)) is not None
        }
        method = scope["method"]
        route = route_for(scope["path"])
        cors = self._cors_headers(headers.get("origin"))
        # hyper's buffer bound (HEADER_BUFFER_BYTES) cuts only past ~112 KiB: the documented
        # 64 KiB of request line and headers is enforced here, before anything else.
        size = len(scope.get("raw_path") or b"") + len(scope.get("query_string", b""))
        size += 4 * len(raw_headers) + sum(map(len, itertools.chain.from_iterable(raw_headers)))
        unread = self._answer_unread(route, method, headers, size, scope, fields)
        if unread is not None:
            answer, extra = unread
            label = _unread_label(route, answer.status)
            if label is not None:
                self.metrics.requests.add((label, _STATUS_TEXT[answer.status]))
            await self._send(send, answer, cors, extra)
            await self._drain(receive)
            return
        assert isinstance(route, CaptureRoute) and method == "POST"
        await self._capture(route, scope, headers, receive, send, cors)

    def _answer_unread(
        self,
        route: CaptureRoute | str | SettingsRequest | None,
        method: str,
        headers: dict[str, str],
        size: int,
        scope: Scope,
        fields: dict[bytes, bytes],
    ) -> tuple[Response, tuple[tuple[str, str], ...]] | None:
        """The answer (and its extra headers) to a request that is not a capture POST:
        given before its body, which the caller then drains; None for a capture POST."""
        if size > HEADER_LIMIT_BYTES:
            limit = HEADER_LIMIT_BYTES
            message = f"request line and headers are larger than {limit} bytes"
            return responses.error(431, "headers_too_large", message), ()
        if route is None:
            return responses.error(404, "not_found", "no such path"), ()
        if isinstance(route, str):
            return self._service(route, method), ()
        if isinstance(route, SettingsRequest):
            scheme = scope.get("scheme", "http")
            return self._sdk_settings(route, method, headers, scheme, fields.get(b"host"))
        if method == "OPTIONS":
            return self._preflight(headers), ()
        if method != "POST":
            allow = (("allow", "POST, OPTIONS"),)
            return responses.error(405, "method_not_allowed", "use POST"), allow
        if len(fields) < len(scope["headers"]) and _repeated_authorization(scope["headers"]):
            # (A name repeated is rare: only then are the headers counted.) Two would name
            # two clients (the last one would win here, and a proxy in front may read the
            # first): refused, like two different keys in a body.
            message = "more than one Authorization header; send one"
            return responses.error(400, "invalid_request", message), ()
        return None

    async def _capture(
        self,
        route: CaptureRoute,
        scope: Scope,
        headers: dict[str, str],
        receive: Receive,
        send: Send,
        cors: tuple[tuple[str, str], ...],
    ) -> None:
        s = self._settings
        assert s is not None and self.capture is not None
        started = time.monotonic()
        screened = self.capture.screen(headers)
        if isinstance(screened, Response):
            # Answered first, then the body is dropped unparsed and uncounted. Invariant: a
            # refused body is always drained (bounded): the HTTP server, left with unread
            # body in the socket, closes the connection with a reset that can destroy the
            # answer before the client reads it.
            await self._finish(route, send, screened, cors, started)
            await self._drain(receive)
            return
        length_header = headers.get("content-length", "")
        declared = int(length_header) if length_header.isdigit() else None
        if declared is not None and declared > s.max_body_bytes:
            # Answered first, then the body is dropped (bounded), as for a refused client.
            await self._finish(route, send, self._too_large(), cors, started)
            await self._drain(receive)
            return
        # Invariant: the in-flight budget counts body bytes as they arrive, never a declared
        # length: a client that declares megabytes and sends one byte (before its key is
        # even read) holds one byte of it, not the whole budget for the body timeout.
        held = _Held()
        self._capturing += 1
        try:
            try:
                if self._capturing > s.max_concurrent_requests:
                    raise _Overloaded("too many requests in progress; retry later")
                if self._inflight_bytes >= s.max_inflight_bytes:
                    raise _Overloaded(_TOO_MANY_BODIES)
                body = await self._reads.within(self._read_body(receive, s.max_body_bytes, held))
            except _Overloaded as why:
                self.metrics.unavailable.labels("overload").inc()
                busy = responses.error(503, "overloaded", str(why), retry_after_s=s.retry_after_s)
                await self._drain(receive)
                await self._finish(route, send, busy, cors, started)
                return
            except TimeoutError:
                slow = responses.error(
                    408, "request_timeout", f"body not received within {s.body_timeout_s}s"
                )
                await self._finish(route, send, slow, cors, None)
                return
            except _BodyTooLarge:
                await self._finish(route, send, self._too_large(), cors, started)
                await self._drain(receive)
                return
            except _ClientGone:
                # Nobody to answer; counted as nginx counts it ("client closed request").
                self.metrics.requests.add((route.label, CLIENT_CLOSED))
                return
            started = time.monotonic()  # the latency measured is from body read to answer
            self.metrics.request_bytes.add((route.label,), len(body))
            raw_query = scope.get("query_string", b"")
            query = dict(parse_qsl(raw_query.decode("latin-1"))) if raw_query else _NO_QUERY
            try:
                answer = await self.capture.handle(Incoming(route, headers, query, body, screened))
            except Exception:
                log.exception("capture request failed", extra={"route": route.label})
                answer = responses.error(500, "internal_error", "internal error; retry later")
            await self._finish(route, send, answer, cors, started)
        finally:
            self._capturing -= 1
            self._inflight_bytes -= held.bytes

    def _too_large(self) -> Response:
        assert self._settings is not None
        limit = self._settings.max_body_bytes
        return responses.error(
            413, "payload_too_large", f"request body is larger than {limit} bytes"
        )

    async def _read_body(self, receive: Receive, limit: int, held: _Held) -> bytes:
        """The body, each chunk counted in the in-flight budget (and in `held`) as it
        arrives; _Overloaded when that passes the budget."""
        assert self._settings is not None
        budget = self._settings.max_inflight_bytes
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _BodyTooLarge
            held.bytes += len(chunk)
            self._inflight_bytes += len(chunk)
            if self._inflight_bytes > budget:
                raise _Overloaded(_TOO_MANY_BODIES)
            parts.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(parts)

    async def _drain(self, receive: Receive) -> None:
        """Read and drop a refused body (bounded), so the client can read our answer."""
        dropped = 0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                while dropped < DRAIN_LIMIT_BYTES:
                    message = await receive()
                    dropped += len(message.get("body", b""))
                    if message["type"] == "http.disconnect" or not message.get("more_body"):
                        return

    async def _finish(
        self,
        route: CaptureRoute,
        send: Send,
        answer: Response,
        cors: tuple[tuple[str, str], ...],
        started: float | None,
    ) -> None:
        """Send the answer and count it; its latency is observed from `started` (the body
        read, or the headers for an answer given before the body), None: not observed
        (a 408, whose time is the client's upload)."""
        await self._send(send, answer, cors)
        self.metrics.requests.add((route.label, _STATUS_TEXT[answer.status]))
        if started is not None:
            self.metrics.request_seconds.observe(route.fmt, time.monotonic() - started)

    def _service(self, name: str, method: str) -> Response:
        if method not in ("GET", "HEAD"):
            return responses.error(405, "method_not_allowed", "use GET")
        if name == "healthz":
            return responses.plain(200, "ok\n")
        if name == "readyz":
            if self._kafka_problem is None:
                return responses.plain(200, "ready\n")
            return responses.plain(503, f"not ready: {self._kafka_problem}\n")
        return Response(200, self.metrics.exposition(), content_type=CONTENT_TYPE_LATEST)

    def _sdk_settings(
        self,
        request: SettingsRequest,
        method: str,
        headers: dict[str, str],
        scheme: str,
        host: bytes | None,
    ) -> tuple[Response, tuple[tuple[str, str], ...]]:
        """What a browser SDK loads before it sends (capture.sdk_settings), counted under
        the request's kind as route."""
        assert self._settings is not None
        methods = sdk_settings.METHODS[request.kind]
        allowed = ", ".join((*methods, "OPTIONS"))
        if method == "OPTIONS":
            answer = self._preflight(headers, methods=allowed)
        elif method not in methods:
            answer = responses.error(405, "method_not_allowed", f"use {methods[0]}")
        elif request.kind == sdk_settings.POSTHOG_FLAGS:
            answer = Response(200, sdk_settings.NO_FLAGS, (("cache-control", "no-store"),))
        elif request.kind == sdk_settings.RUDDERSTACK_CONFIG:
            source = sdk_settings.RUDDERSTACK_SOURCE
            answer = Response(200, source, SETTINGS_CACHE)
        elif request.kind == sdk_settings.POSTHOG_CONFIG:
            body = sdk_settings.posthog_config(request.key)
            answer = Response(200, body, SETTINGS_CACHE)
        else:
            answer = self._segment_settings(request.key, scheme, host)
        self.metrics.requests.add((request.kind, _STATUS_TEXT[answer.status]))
        allow = (("allow", allowed),) if answer.status == 405 else ()
        return answer, allow

    def _segment_settings(self, write_key: str, scheme: str, host: bytes | None) -> Response:
        assert self._settings is not None
        base = sdk_settings.public_base(
            self._settings.public_url, scheme, None if host is None else host.decode("latin-1")
        )
        if base is None:
            message = "no usable Host header: send one, or set CAPTURE_PUBLIC_URL"
            return responses.error(400, "bad_host", message)
        body = sdk_settings.document(base, write_key)
        return Response(200, body, SETTINGS_CACHE_PER_HOST)

    def _cors_headers(self, origin: str | None) -> tuple[tuple[str, str], ...]:
        if not origin:
            return ()
        s = self._settings
        assert s is not None
        if origin not in s.cors_origins and ("*" not in s.cors_origins or origin == "null"):
            return ()  # "null" (sandboxed frames, file: pages) only when listed by name
        return (
            ("access-control-allow-origin", origin),
            ("access-control-allow-credentials", "true"),
            ("vary", "Origin"),
        )

    def _preflight(self, headers: dict[str, str], methods: str = "POST, OPTIONS") -> Response:
        asked = headers.get("access-control-request-headers", "")
        return Response(
            204,
            b"",
            (
                ("access-control-allow-methods", methods),
                ("access-control-allow-headers", asked or PREFLIGHT_HEADERS),
                ("access-control-max-age", "86400"),
            ),
        )

    async def _send(
        self,
        send: Send,
        answer: Response,
        cors: tuple[tuple[str, str], ...],
        extra: tuple[tuple[str, str], ...] = (),
    ) -> None:
        raw = [
            (b"content-type", answer.content_type.encode()),
            (b"content-length", str(len(answer.body)).encode()),
        ]
        raw.extend((k.encode(), v.encode()) for k, v in (*answer.headers, *cors, *extra))
        await send({"type": "http.response.start", "status": answer.status, "headers": raw})
        await send({"type": "http.response.body", "body": answer.body})


def settle_heap() -> None:
    """Keep the garbage collector off the request path. Everything allocated by start-up
    (modules, clients, caches) lives as long as the process: frozen, a full collection
    no longer walks it (measured before: ~45 ms pauses, ~40 us per request on average).
    Requests allocate many short-lived containers that reference counting frees; a larger
    first-generation threshold collects the rare cycles less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 100)


def give_back_freed_memory() -> bool:
    """Return the C heap's free pages to the system (glibc's malloc_trim). Large buffers
    freed by Python (message values read at start) otherwise stay in the process's RSS,
    counted against its container's memory limit. False where there is no glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.malloc_trim(0))


def create_app() -> CaptureApp:
    """The factory granian calls in its worker process: settings are read there, once."""
    from capture.server import stop_with_master

    stop_with_master()
    return CaptureApp()
