"""One capture request, from its body to the answer: decode -> authenticate -> map ->
quota -> produce -> wait for Kafka -> answer.

Every step returns a value; the answer follows from the first step that refuses. Rules:
- 200 only when every accepted event of the request is acknowledged by Kafka (acks=all);
- a request with some invalid events keeps the valid ones: 200 lists the rejected ones by
  index with a reason; when no event is valid the whole request is refused with 400;
- 503 + Retry-After when Kafka, the producer queue or the registry cannot take it; what
  was already produced is remembered (capture.retry_memory) so the SDK's retry does not
  produce it twice;
- the client comes from the authenticated write key only; any client id, key or token in
  the body is ignored (and never stored).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from capture import posthog_format, responses, segment_format
from capture.auth import Authenticated, Authenticator, AuthUnavailable, Refused
from capture.body import BodyProblem, decode_body
from capture.chunks import Message, pack, without
from capture.config import CaptureSettings
from capture.credentials import header_key
from capture.kafka_sink import Delivered, DeliveryOutcome, KafkaSink, QueueFull
from capture.mapping import (
    EventRejected,
    MapContext,
    Mapped,
    Parsed,
    Unmappable,
    in_contract_range,
    map_all,
    time_ms,
)
from capture.metrics import CaptureMetrics
from capture.native_path import FastBatch, NativeBatchMapper
from capture.quota import OverQuota, RateLimiter
from capture.responses import Response
from capture.retry_memory import RetryMemory
from capture.routes import SEGMENT, CaptureRoute
from capture.segment_format import BATCH_PATHS

log = logging.getLogger("capture")


@dataclass(frozen=True, slots=True)
class Incoming:
    route: CaptureRoute
    headers: Mapping[str, str]  # lower-case names
    query: Mapping[str, str]
    body: bytes
    # The header key's admission found by `Capture.screen` just before the body was read
    # (its verdict cached, its client not inside a Retry-After); None: `handle` checks.
    screened: Authenticated | None = None


class Capture:
    def __init__(
        self,
        settings: CaptureSettings,
        sink: KafkaSink,
        auth: Authenticator,
        limiter: RateLimiter,
        memory: RetryMemory,
        metrics: CaptureMetrics,
        native: NativeBatchMapper | None = None,
    ) -> None:
        self.s = settings
        self.sink = sink
        self.auth = auth
        self.limiter = limiter
        self.memory = memory
        self.metrics = metrics
        self.native = native

    def screen(self, headers: Mapping[str, str]) -> Response | Authenticated | None:
        """What the headers alone decide, before the body is read: the answer to a request
        whose header key has a cached refusal (401, 403) or whose client is inside its last
        429's Retry-After (the caller sends it, then drops the body unparsed: a client
        flooding past its quota or with a wrong key costs no parsing and no lookup); else
        the header key's cached admission, which `handle` then takes as it is
        (`Incoming.screened`); else None."""
        header = header_key(headers.get("authorization", ""))
        if not header:
            return None
        known = self.auth.cached(header)
        if isinstance(known, Refused):
            return self._refusal(known)
        if isinstance(known, Authenticated):
            left = self.limiter.still_refused(known.client_id)
            if left is not None:
                return self._over_quota(known.client_id, left)
            return known
        return None

    async def handle(self, req: Incoming) -> Response:
        started = time.monotonic()
        received_ms = int(time.time() * 1000)
        # A key in the headers is checked before the body is parsed (and was screened before
        # it was read): a refused client (bad key, inactive, or still inside its 429's
        # Retry-After) costs no parsing.
        header = header_key(req.headers.get("authorization", ""))
        who: Authenticated | None = req.screened
        if header and who is None:
            checked = await self._authenticate(header)
            if isinstance(checked, Response):
                return checked
            who = checked
            early = self.limiter.still_refused(who.client_id)
            if early is not None:
                return self._over_quota(who.client_id, early)
        decoded = decode_body(
            req.body,
            content_type=req.headers.get("content-type", ""),
            content_encoding=req.headers.get("content-encoding", ""),
            compression=req.query.get("compression", ""),
            max_decoded_bytes=self.s.max_decoded_bytes,
        )
        if isinstance(decoded, BodyProblem):
            return responses.error(decoded.status, decoded.code, decoded.message)
        route = req.route
        self.metrics.decoded_bytes.add((route.label,), len(decoded.data))
        self.metrics.encodings.add((route.label, decoded.encoding))
        if (
            who is not None
            and self.native is not None
            and route.fmt == SEGMENT
            and route.kind in BATCH_PATHS
        ):
            fast = self._map_natively(decoded.data, who, header, received_ms)
            if fast is not None:
                message = Message(fast.value, fast.event_ids)
                accepted = len(fast.event_ids)
                return await self._send(who.client_id, [message], [], accepted, [], started)
        parsed: Parsed[Any] | BodyProblem
        if route.fmt == SEGMENT:
            parsed = segment_format.parse(decoded.data, route.kind)
            map_item: Any = segment_format.map_item
        else:
            parsed = posthog_format.parse(decoded.data, route.kind, req.query.get("_", ""))
            map_item = posthog_format.map_item
        if isinstance(parsed, BodyProblem):
            return responses.error(parsed.status, parsed.code, parsed.message)
        if parsed.key_problem is not None:
            return responses.error(400, "invalid_request", parsed.key_problem)
        if who is not None and parsed.key is not None and parsed.key != header:
            return responses.error(
                400,
                "invalid_request",
                "the write key in the body is not the one in the Authorization header",
            )
        if who is None:
            if not parsed.key:
                self.metrics.auth_failures.labels("missing_write_key").inc()
                return responses.error(
                    401,
                    "missing_write_key",
                    "no write key: send it as HTTP Basic user or in the body",
                )
            checked = await self._authenticate(parsed.key)
            if isinstance(checked, Response):
                return checked
            who = checked
        client_id = who.client_id
        ctx = MapContext(
            client_id,
            who.key_hash,
            received_ms,
            _request_sent_ms(parsed.sent_at),
            self.s.max_event_bytes,
        )
        mapped, rejected = map_all(parsed.items, map_item, ctx)
        fresh, earlier = self._split_retried(mapped)
        messages, too_large = pack(fresh, self.s.max_event_bytes)
        if parsed.rejected or too_large:
            rejected = sorted([*rejected, *parsed.rejected, *too_large], key=lambda r: r.index)
        for r in rejected:
            self.metrics.events_rejected.labels(r.code).inc()
        accepted = len(mapped.events) - len(too_large)
        if not accepted:
            return responses.error(
                400, "invalid_events", "no event of the request is valid", rejected=rejected
            )
        return await self._send(client_id, messages, earlier, accepted, rejected, started)

    def _map_natively(
        self, data: bytes, who: Authenticated, header: str | None, received_ms: int
    ) -> FastBatch | None:
        """The batch mapped by the compiled path, or None when the Python path must read
        it: the compiled path left it (see capture.native_path), the body names another
        write key (a 400 the Python path words), or an event may be an SDK retry."""
        assert self.native is not None
        fast = self.native.map(data, who.client_id, who.key_hash, received_ms)
        if (
            fast is None
            or (fast.write_key is not None and fast.write_key != header)
            or (self.memory and any(self.memory.fate(e) is not None for e in fast.event_ids))
        ):
            self.metrics.native.add(("python",))
            return None
        self.metrics.native.add(("native",))
        return fast

    async def _send(
        self,
        client_id: str,
        messages: list[Message],
        earlier: list[asyncio.Future[DeliveryOutcome]],
        accepted: int,
        rejected: list[EventRejected],
        started: float,
    ) -> Response:
        """Quota, produce, wait for Kafka, answer 200 for `accepted` events: those of
        `messages` and the retried ones whose first copy is `earlier`'s."""
        if messages:
            if self.sink.brokers_down:
                return self._unavailable("kafka", "Kafka is unavailable; retry later")
            cost = sum(len(m.event_ids) for m in messages)
            verdict = await self.limiter.take(client_id, cost)
            if isinstance(verdict, OverQuota):
                return self._over_quota(client_id, verdict.retry_after_s)
        delivered = await self._deliver(client_id, messages, earlier, started)
        if delivered is not None:
            return delivered
        self.metrics.events_accepted.add((client_id,), accepted)
        return responses.ok(accepted, rejected)

    async def _authenticate(self, key: str) -> Authenticated | Response:
        outcome = await self.auth.authenticate(key)
        if isinstance(outcome, AuthUnavailable):
            self.metrics.unavailable.labels("registry").inc()
            return responses.error(
                503,
                "registry_unavailable",
                "client registry unavailable; retry later",
                retry_after_s=self.s.retry_after_s,
            )
        if not isinstance(outcome, Authenticated):
            return self._refusal(outcome)
        return outcome

    def _refusal(self, outcome: Refused) -> Response:
        self.metrics.auth_failures.labels(outcome.code).inc()
        return responses.error(outcome.status, outcome.code, outcome.message)

    def _over_quota(self, client_id: str, retry_after_s: int) -> Response:
        self.metrics.quota_refusals.labels(client_id).inc()
        return responses.error(
            429,
            "rate_limited",
            f"client {client_id!r} is over its quota; retry after {retry_after_s}s",
            retry_after_s=retry_after_s,
        )

    def _split_retried(
        self, mapped: Mapped
    ) -> tuple[Mapped, list[asyncio.Future[DeliveryOutcome]]]:
        """Events to produce, and the fates of events whose first copy is (or will be) in
        Kafka already (an SDK retry)."""
        if not self.memory:
            return mapped, []
        earlier: dict[int, asyncio.Future[DeliveryOutcome]] = {}
        retried: set[str] = set()
        for ev in mapped.events:
            fate = self.memory.fate(ev.event_id)
            if fate is not None:
                earlier[id(fate)] = fate
                retried.add(ev.event_id)
        if not retried:
            return mapped, []
        fresh = without(mapped, retried)
        self.metrics.events_deduplicated.inc(len(mapped.events) - len(fresh.events))
        return fresh, list(earlier.values())

    async def _deliver(
        self,
        client_id: str,
        messages: list[Message],
        earlier: list[asyncio.Future[DeliveryOutcome]],
        started: float,
    ) -> Response | None:
        """Produce and wait for Kafka; None when everything is acknowledged."""
        key = client_id.encode()
        sent: list[tuple[Message, asyncio.Future[DeliveryOutcome]]] = []
        queue_full = False
        for message in messages:
            try:
                sent.append((message, self.sink.produce(message.value, key)))
            except QueueFull:
                queue_full = True
                break
        waits = [f for _m, f in sent] + earlier
        if waits and not queue_full:
            await wait_all(waits, self.s.ack_timeout_s)
        all_acked = not queue_full and all(
            f.done() and isinstance(f.result(), Delivered) for f in waits
        )
        if not all_acked or time.monotonic() - started > self.s.retry_memory_after_s:
            for message, fut in sent:
                self.memory.remember(message.event_ids, fut)
        if all_acked:
            return None
        if queue_full:
            return self._unavailable("overload", "the Kafka producer queue is full; retry later")
        failed = [f.result() for f in waits if f.done() and not isinstance(f.result(), Delivered)]
        detail = str(failed[0]) if failed else "no acknowledgement in time"
        log.warning(
            "kafka did not acknowledge a request",
            extra={"client_id": client_id, "detail": detail},
        )
        return self._unavailable("kafka", "Kafka did not acknowledge the events; retry later")

    def _unavailable(self, cause: str, message: str) -> Response:
        self.metrics.unavailable.labels(cause).inc()
        return responses.error(
            503, f"{cause}_unavailable", message, retry_after_s=self.s.retry_after_s
        )


async def wait_all(futures: list[asyncio.Future[DeliveryOutcome]], timeout_s: float) -> None:
    """Until every future is done or `timeout_s` has passed. The futures are never
    cancelled: the retry memory may still need their outcome. (`asyncio.wait` without its
    set and coroutine checks: this runs once per request.)"""
    pending = [f for f in futures if not f.done()]
    if not pending:
        return
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    left = len(pending)

    def one_done(_: object) -> None:
        nonlocal left
        left -= 1
        if left == 0 and not waiter.done():
            waiter.set_result(None)

    def expired() -> None:
        if not waiter.done():
            waiter.set_result(None)

    for f in pending:
        f.add_done_callback(one_done)
    timer = loop.call_later(timeout_s, expired)
    try:
        await waiter
    finally:
        timer.cancel()
        for f in pending:
            f.remove_done_callback(one_done)


def _request_sent_ms(raw: object) -> int | None:
    """The request's send time, or None when it is missing or unusable: a bad batch send
    time is not worth refusing the events for, it is dropped."""
    try:
        sent = time_ms(raw, "sentAt")
    except Unmappable:
        return None
    return sent if sent is not None and in_contract_range(sent) else None
