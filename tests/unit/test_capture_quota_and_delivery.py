"""Pure parts of quotas, authentication, chunking, retry memory, routes and settings."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import msgspec
import orjson
import pytest
from msgspec import Raw

from analytics_core.clients import (
    ClientFound,
    ClientMissing,
    ClientRecord,
    ClientStatus,
    RegistryUnavailable,
)
from analytics_core.event_contract import MAX_BATCH_EVENTS, MAX_MESSAGE_BYTES, hash_api_key
from analytics_core.quotas import Quota, QuotaError, StoredQuota, validate
from analytics_core.settings import RedisSettings, SettingsError
from capture.auth import (
    Authenticated,
    Authenticator,
    AuthUnavailable,
    KeyAmbiguous,
    KeyUnknown,
    Refused,
    index_is_stale,
    verdict,
)
from capture.chunks import message_value, pack
from capture.config import CaptureSettings
from capture.kafka_sink import Delivered, NotDelivered
from capture.mapping import ContractEvent, Mapped
from capture.quota import Admitted, OverQuota, RateLimiter, TokenBucket, lease_size
from capture.retry_memory import RetryMemory
from capture.routes import CaptureRoute, route_for
from tests.unit.auth_fakes import OneClientAtATimeDirectory, OneKeyAtATimeIndex

QUOTA = Quota(events_per_s=100.0, burst=200)


def test_token_bucket_admits_the_burst_then_the_rate() -> None:
    bucket = TokenBucket(QUOTA, now_s=0.0)
    assert isinstance(bucket.take(QUOTA, 150, 0.0), Admitted)
    assert isinstance(bucket.take(QUOTA, 50, 0.0), Admitted)
    refused = bucket.take(QUOTA, 50, 0.0)
    assert isinstance(refused, OverQuota) and refused.retry_after_s == 1
    assert isinstance(bucket.take(QUOTA, 50, 0.5), Admitted)  # 0.5 s refilled 50 tokens


def test_a_batch_bigger_than_the_burst_passes_when_full_and_leaves_a_debt() -> None:
    bucket = TokenBucket(QUOTA, now_s=0.0)
    assert isinstance(bucket.take(QUOTA, 500, 0.0), Admitted)
    later = bucket.take(QUOTA, 1, 2.0)  # -300 + 200 refilled = -100: still in debt
    assert isinstance(later, OverQuota) and later.retry_after_s == 2
    assert isinstance(bucket.take(QUOTA, 1, 3.1), Admitted)


def test_a_lease_is_a_slice_of_the_rate_and_at_most_a_tenth_of_the_burst() -> None:
    assert lease_size(Quota(100.0, 1000), 0.1) == 10
    assert lease_size(Quota(1e6, 1000), 0.1) == 100  # a tenth of the burst
    assert lease_size(Quota(1.0, 100), 0.1) == 0  # a small quota: every request asks Redis
    assert lease_size(Quota(100.0, 1000), 0.0) == 0  # CAPTURE_QUOTA_LEASE_MS=0: no leases
    assert CaptureSettings.from_env({"CAPTURE_QUOTA_LEASE_MS": "0"}).quota_lease_s == 0
    assert CaptureSettings.from_env({}).quota_lease_s == 0.1


def test_stored_quota_defaults_and_validation() -> None:
    default = Quota(2000.0, 20_000)
    assert StoredQuota("c", None, None).effective(default) == default
    assert StoredQuota("c", 50.0, None).effective(default) == Quota(50.0, 20_000)
    assert StoredQuota("c", 50_000.0, None).effective(default) == Quota(50_000.0, 50_000)
    assert StoredQuota("c", 10.0, 5).effective(default) == Quota(10.0, 5)
    for rate, burst in ((0.0, None), (-1.0, None), (float("nan"), None), (None, 0)):
        with pytest.raises(QuotaError):
            validate(rate, burst)


def record(status: ClientStatus, key_hash: str = "a" * 64) -> ClientFound:
    return ClientFound(ClientRecord("acme", status, key_hash, "client_acme"))


def test_auth_verdicts() -> None:
    h = "a" * 64
    assert verdict(h, "acme", record(ClientStatus.ACTIVE)) == Authenticated("acme", h)
    assert isinstance(verdict(h, "acme", record(ClientStatus.PENDING)), Authenticated)
    for status in (ClientStatus.DEPROVISIONED, ClientStatus.DEPROVISIONING, ClientStatus.FAILED):
        out = verdict(h, "acme", record(status))
        assert isinstance(out, Refused) and out.status == 403 and out.code == "client_inactive"
    rotated = verdict(h, "acme", record(ClientStatus.ACTIVE, "b" * 64))
    assert isinstance(rotated, Refused) and rotated.status == 401
    assert isinstance(verdict(h, KeyUnknown(), None), Refused)
    assert isinstance(verdict(h, KeyAmbiguous(), None), Refused)
    assert isinstance(verdict(h, "acme", ClientMissing("acme")), Refused)
    assert isinstance(verdict(h, RegistryUnavailable("pg down"), None), AuthUnavailable)
    assert isinstance(verdict(h, "acme", RegistryUnavailable("pg down")), AuthUnavailable)


def test_an_index_entry_is_stale_when_the_directory_contradicts_it() -> None:
    h = "a" * 64
    assert not index_is_stale(record(ClientStatus.ACTIVE), h)
    assert not index_is_stale(record(ClientStatus.DEPROVISIONED), h)  # 403, not stale
    assert index_is_stale(record(ClientStatus.ACTIVE, "b" * 64), h)  # rotated or moved
    assert index_is_stale(ClientMissing("acme"), h)
    assert not index_is_stale(RegistryUnavailable("pg down"), h)  # no answer: keep it
    assert not index_is_stale(None, h)


def events(n: int, size: int = 100) -> Mapped:
    """`n` contract events whose properties hold `size` bytes each, at request positions
    0..n-1."""
    value = Raw(b'"' + b"x" * size + b'"')
    return Mapped(
        [ContractEvent("acme", "a" * 64, f"id-{i}", "e", 1, {"x": value}, "u") for i in range(n)],
        list(range(n)),
    )


def test_chunks_respect_the_contracts_event_and_byte_limits() -> None:
    limit = 256 * 1024
    messages, rejected = pack(events(1201), limit)
    assert [len(m.event_ids) for m in messages] == [MAX_BATCH_EVENTS, MAX_BATCH_EVENTS, 201]
    assert rejected == []
    big, _ = pack(events(30, size=100_000), limit)
    assert all(len(m.value) <= MAX_MESSAGE_BYTES for m in big)
    assert sum(len(m.event_ids) for m in big) == 30
    assert [i for m in big for i in m.event_ids] == [f"id-{i}" for i in range(30)]  # order
    one, _ = pack(events(3), limit)
    assert [e["event_id"] for e in orjson.loads(one[0].value)] == ["id-0", "id-1", "id-2"]
    assert one[0].value == message_value([msgspec.json.encode(e) for e in events(3).events])


def test_an_event_over_the_event_limit_is_rejected_by_index_and_the_others_sent() -> None:
    mapped = events(3)
    mapped.events[1].properties["big"] = Raw(b'"' + b"y" * 5000 + b'"')
    messages, rejected = pack(mapped, 2048)
    assert [(r.index, r.code) for r in rejected] == [(1, "event_too_large")]
    assert [m.event_ids for m in messages] == [["id-0", "id-2"]]


def test_retry_memory_knows_delivered_and_pending_copies_and_forgets_failed_ones() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        memory = RetryMemory(ttl_s=60, max_events=3)
        delivered, pending, failed = (loop.create_future() for _ in range(3))
        delivered.set_result(Delivered(0, 1))
        failed.set_result(NotDelivered("timed out"))
        memory.remember(["a"], delivered)
        memory.remember(["b"], pending)
        memory.remember(["c"], failed)
        assert memory.fate("a") is delivered
        assert memory.fate("b") is pending
        assert memory.fate("c") is None  # its first copy failed: produce it again
        assert memory.fate("zzz") is None
        memory.remember(["d", "e"], delivered)  # bounded: the oldest id goes
        assert memory.fate("a") is None and len(memory) == 3
        expiring = RetryMemory(ttl_s=0, max_events=10)
        expiring.remember(["x"], delivered)
        expiring.expire()
        assert len(expiring) == 0

    asyncio.run(scenario())


def test_routes() -> None:
    assert route_for("/v1/batch") == CaptureRoute("segment", "batch")
    assert route_for("/v1/track/") == CaptureRoute("segment", "track")
    assert route_for("/batch/") == CaptureRoute("posthog", "batch")
    assert route_for("/e/") == CaptureRoute("posthog", "e")
    assert route_for("/i/v0/e/") == CaptureRoute("posthog", "i/v0/e")
    assert route_for("/metrics") == "metrics"
    assert route_for("/admin") is None and route_for("/v1/nope") is None


def test_settings_defaults_and_fail_fast_errors() -> None:
    s = CaptureSettings.from_env({})
    assert (s.host, s.port) == ("127.0.0.1", 8000)
    assert s.default_quota == Quota(2000.0, 20_000)
    assert CaptureSettings.from_env({"CAPTURE_PORT": "9999"}).port == 9999
    with pytest.raises(SettingsError, match="CAPTURE_PORT"):
        CaptureSettings.from_env({"CAPTURE_PORT": "http"})
    with pytest.raises(SettingsError, match="CAPTURE_MAX_EVENT_BYTES"):
        CaptureSettings.from_env({"CAPTURE_MAX_EVENT_BYTES": str(MAX_MESSAGE_BYTES)})
    with pytest.raises(SettingsError, match="CAPTURE_MAX_DECODED_BYTES"):
        CaptureSettings.from_env({"CAPTURE_MAX_DECODED_BYTES": "2048"})


class CountingIndex(OneKeyAtATimeIndex):
    """The write-key index's answer for one key, counting the lookups."""

    def __init__(self) -> None:
        self.lookups = 0

    def client_for(self, key_hash: str) -> str:
        self.lookups += 1
        time.sleep(0.05)  # a lookup that takes a while (Redis, PostgreSQL)
        return "acme"


class ActiveDirectory(OneClientAtATimeDirectory):
    def lookup(self, client_id: str) -> ClientFound:
        return record(ClientStatus.ACTIVE, hash_api_key("k"))


def test_concurrent_requests_of_one_key_share_one_registry_lookup() -> None:
    async def scenario() -> None:
        index = CountingIndex()
        auth = Authenticator(
            index,  # type: ignore[arg-type]
            ActiveDirectory(),  # type: ignore[arg-type]
            ThreadPoolExecutor(1),
            front_ttl_s=0.2,
        )
        first = await asyncio.gather(*(auth.authenticate("k") for _ in range(50)))
        assert index.lookups == 1 and all(isinstance(o, Authenticated) for o in first)
        await asyncio.sleep(0.3)  # the verdict expired: looked up again, once
        await asyncio.gather(*(auth.authenticate("k") for _ in range(50)))
        assert index.lookups == 2

    asyncio.run(scenario())


class SwitchableDirectory(OneClientAtATimeDirectory):
    """The directory's answer for client acme: active until `revoked` is set."""

    def __init__(self) -> None:
        self.revoked = False

    def lookup(self, client_id: str) -> ClientFound:
        status = ClientStatus.DEPROVISIONED if self.revoked else ClientStatus.ACTIVE
        return record(status, hash_api_key("k"))


def test_a_verdict_in_use_is_refreshed_ahead_and_never_served_past_its_ttl() -> None:
    async def scenario() -> None:
        index, directory = CountingIndex(), SwitchableDirectory()
        auth = Authenticator(
            index,  # type: ignore[arg-type]
            directory,  # type: ignore[arg-type]
            ThreadPoolExecutor(1),
            front_ttl_s=1.0,
        )
        assert isinstance(await auth.authenticate("k"), Authenticated)
        assert index.lookups == 1
        # Past the refresh point (50-90% of the TTL, at random), inside the TTL: answered
        # at once, looked up again behind.
        await asyncio.sleep(0.92)
        started = time.monotonic()
        assert isinstance(await auth.authenticate("k"), Authenticated)
        assert time.monotonic() - started < 0.03  # the lookup itself takes 0.05 s
        await asyncio.sleep(0.1)
        assert index.lookups == 2
        # The first verdict has expired now; the refreshed one holds, so no request waits.
        started = time.monotonic()
        assert isinstance(await auth.authenticate("k"), Authenticated)
        assert time.monotonic() - started < 0.03
        # A revoked client: no verdict outlives its TTL, refreshed ahead or not.
        directory.revoked = True
        await asyncio.sleep(1.1)
        refused = await auth.authenticate("k")
        assert isinstance(refused, Refused) and refused.status == 403, refused

    asyncio.run(scenario())


class SlowBook:
    """A quota book whose reads (of any number of clients) take 0.05 s and return the
    quota set last."""

    def __init__(self, cache_s: float) -> None:
        self.cache_s = cache_s
        self.quota = QUOTA
        self.reads = 0
        self._known: tuple[Quota, float] | None = None

    def cached(self, client_id: str) -> tuple[Quota, bool] | None:
        if self._known is None:
            return None
        return self._known[0], time.monotonic() - self._known[1] < self.cache_s

    def stale_for(self, client_id: str) -> float | None:
        return None if self._known is None else time.monotonic() - self._known[1] - self.cache_s

    def load_many(self, client_ids: Sequence[str]) -> dict[str, Quota]:
        self.reads += 1
        time.sleep(0.05)
        self._known = (self.quota, time.monotonic())
        return {c: self.quota for c in client_ids}


def test_an_expired_quota_stays_in_force_while_it_is_read_again_once() -> None:
    async def scenario() -> None:
        book = SlowBook(cache_s=0.1)
        limiter = RateLimiter(RedisSettings(), book, ThreadPoolExecutor(1))  # type: ignore[arg-type]
        assert await limiter.quota("acme") == QUOTA  # the first read is waited for
        assert book.reads == 1
        book.quota = Quota(events_per_s=5.0, burst=10)
        await asyncio.sleep(0.15)
        started = time.monotonic()
        answers = await asyncio.gather(*(limiter.quota("acme") for _ in range(20)))
        assert time.monotonic() - started < 0.03 and set(answers) == {QUOTA}
        await asyncio.sleep(0.1)
        assert book.reads == 2  # one read for the twenty requests
        assert await limiter.quota("acme") == Quota(events_per_s=5.0, burst=10)
        await limiter.close()

    asyncio.run(scenario())


def test_the_first_request_of_a_client_idle_past_its_cache_time_waits_for_its_quota() -> None:
    """A quota lowered while its client was idle applies from the client's first request
    back, not after one more lease of the old quota (which the first request used to get)."""

    async def scenario() -> None:
        book = SlowBook(cache_s=0.1)
        limiter = RateLimiter(RedisSettings(), book, ThreadPoolExecutor(1))  # type: ignore[arg-type]
        assert await limiter.quota("acme") == QUOTA
        lowered = Quota(events_per_s=5.0, burst=10)
        book.quota = lowered
        await asyncio.sleep(0.25)  # stale for longer than the cache time: idle
        started = time.monotonic()
        assert await limiter.quota("acme") == lowered  # waited for the read
        assert time.monotonic() - started >= 0.04 and book.reads == 2
        await limiter.close()

    asyncio.run(scenario())


class GatedBook:
    """Every client's quota is QUOTA; the first read waits until `opened` is set; records
    each read's clients."""

    default = Quota(events_per_s=1.0, burst=1)

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.reads: list[list[str]] = []

    def cached(self, client_id: str) -> None:
        return None

    def load_many(self, client_ids: Sequence[str]) -> dict[str, Quota]:
        self.reads.append(list(client_ids))
        self.opened.wait(5)
        return {c: QUOTA for c in client_ids}


def test_the_quotas_of_a_hundred_new_clients_are_read_in_two_queries_not_a_hundred() -> None:
    """After a pause every client's first request needs its quota at once: the reads queue
    on the registry thread with the write-key lookups, so one read each stalled them."""

    async def scenario() -> None:
        book = GatedBook()
        limiter = RateLimiter(RedisSettings(), book, ThreadPoolExecutor(1))  # type: ignore[arg-type]
        clients = [f"client-{i}" for i in range(100)]
        waiting = [asyncio.ensure_future(limiter.quota(c)) for c in clients]
        await asyncio.sleep(0.05)  # every request waits; the first read holds
        book.opened.set()
        assert await asyncio.gather(*waiting) == [QUOTA] * 100
        assert book.reads == [clients[:1], clients[1:]]
        await limiter.close()

    asyncio.run(scenario())
