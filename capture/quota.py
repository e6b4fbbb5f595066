"""Per-client rate limits, enforced across every capture process through Redis.

A token bucket per client (`events_per_s` refill, `burst` capacity) lives in one Redis hash
and is updated by one Lua script, atomically, with Redis's own clock: every process sees
the same bucket. A request costs its number of events; it is admitted when the bucket
holds at least min(cost, burst) tokens, and the full cost is taken (the bucket may go
negative), so a batch larger than the burst is still admitted once the bucket is full and
the average rate holds.

Leases keep Redis off the request path: when the script admits a request it also hands
the process up to `lease_s` seconds of the client's rate (at most a tenth of its burst)
from what is left in the bucket. Later requests of that client spend the lease in process.
A lease in use is topped up in the background, back to its size, once half its life
(80-100% of `LEASE_TTL_S`, at random, so leases granted together are not renewed together)
has passed or a fifth of it is left, and lives on from then: a busy client's requests do
not wait for Redis. A lease that ran short or out anyway (a burst, nothing left to lease)
makes its next request ask Redis with its own cost, and the unspent rest of the lease goes
back to the bucket in that call. One call per client at a time. Leased tokens are taken
from the shared bucket, so all processes together never admit more than the bucket
allows. A client whose quota is small next to its lease size gets no lease: every request
asks Redis.

Calls are shared (the script takes many buckets), so the calls a process makes per second
do not grow with the number of busy clients: top-ups due at half-life are gathered for up
to `TOP_UP_GATHER_S` (a lease running low goes at once, with whatever else is waiting),
and requests that must ask Redis themselves go together once the event loop has run what
was ready. With a hundred clients, one call each at every half-life was some 220 calls a
second, each a task and a round trip on the event loop; after a start, their first
requests made a hundred calls on as many new connections.
After a 429 the client is refused in process, without asking Redis, for its Retry-After
(the bucket can only hold less by then).

When Redis is unreachable, durability comes first: each process enforces the same bucket
locally (so one process still limits a flood to the quota; N processes admit up to N times
it) and goes back to Redis after `redis_retry_after_s`. Events are never refused because
Redis is down.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import random
import time
from collections.abc import Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import redis

from analytics_core import pg
from analytics_core.chunked import chunked
from analytics_core.circuit_breaker import CircuitBreaker
from analytics_core.quotas import Quota, get_quotas
from analytics_core.settings import PostgresSettings, RedisSettings
from capture.batched_lookups import BatchedLookups
from capture.redis_clients import async_client

log = logging.getLogger("capture.quota")

BUCKET_PREFIX = "capture:bucket:v1:"

# KEYS[i] the i-th bucket; ARGV[5i-4..5i] its rate (events/s), burst, cost, lease wanted,
# tokens given back. Returns {admitted 0/1, wait_ms, tokens leased} for each bucket, in
# order, as one flat list.
TOKEN_BUCKET_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i, key in ipairs(KEYS) do
local a = 5 * (i - 1)
local rate = tonumber(ARGV[a + 1])
local burst = tonumber(ARGV[a + 2])
local cost = tonumber(ARGV[a + 3])
local want = tonumber(ARGV[a + 4])
local back = tonumber(ARGV[a + 5])
local s = redis.call('HMGET', key, 'tokens', 'ts')
local tokens = tonumber(s[1])
local ts = tonumber(s[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000 + back)
local need = math.min(cost, burst)
local admitted = 0
local wait_ms = 0
local leased = 0
if tokens >= need then
  tokens = tokens - cost
  admitted = 1
  if tokens >= 1 then
    leased = math.min(want, math.floor(tokens))
    tokens = tokens - leased
  end
else
  wait_ms = math.ceil((need - tokens) * 1000 / rate)
end
redis.call('HSET', key, 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', key, math.ceil((burst - tokens) * 1000 / rate) + 1000)
out[#out + 1] = admitted
out[#out + 1] = wait_ms
out[#out + 1] = leased
end
return out
"""
# Buckets per script call: Redis runs a script alone, so a long one would stall every
# other client of the server (each bucket costs it microseconds).
BUCKETS_PER_CALL = 200
# How long a top-up due at half-life waits for others to share its call: the lease has at
# least 40% of LEASE_TTL_S to live then.
TOP_UP_GATHER_S = 0.05


@dataclass(frozen=True, slots=True)
class Admitted:
    pass


@dataclass(frozen=True, slots=True)
class OverQuota:
    retry_after_s: int


QuotaOutcome = Admitted | OverQuota
ADMITTED = Admitted()


@dataclass(slots=True)
class Lease:
    """Tokens of a client's shared bucket this process may spend until `until`."""

    tokens: int
    until: float  # monotonic
    refill: asyncio.Future[None] | None = None  # a Redis call for this client in flight
    # A top-up is asked for in the background from `renew_at` on, or once fewer than `low`
    # tokens are left, so a busy client's requests keep spending while it runs.
    renew_at: float = math.inf
    low: int = 0

    def granted(self, tokens: int, size: int) -> None:
        """`tokens` more from the shared bucket; the lease lives on for 80-100% of
        LEASE_TTL_S (at random, so leases granted together are not renewed together)."""
        now = time.monotonic()
        self.tokens += tokens
        self.until = now + LEASE_TTL_S * random.uniform(0.8, 1.0)
        self.renew_at = now + (self.until - now) / 2
        self.low = size // 5

    def due(self, now: float) -> bool:
        return self.refill is None and (now >= self.renew_at or self.tokens < self.low)


READ_CHUNK = 1000  # clients per quota query

# How long a lease may be spent unless topped up; unspent tokens then go back with the
# client's next call.
LEASE_TTL_S = 1.0


# One bucket's part of a script call: client, quota, cost, lease wanted, tokens given back;
# and the script's answer for it: admitted, wait_ms, tokens leased.
Ask = tuple[str, Quota, int, int, int]
Answer = tuple[bool, int, int]


def lease_size(quota: Quota, lease_s: float) -> int:
    """Tokens a process may hold for a client: `lease_s` of its rate, at most a tenth of its
    burst (so the other processes always find most of the burst in Redis)."""
    return int(min(quota.events_per_s * lease_s, quota.burst / 10))


class TokenBucket:
    """The same bucket as TOKEN_BUCKET_LUA, in process (the Redis-down fallback)."""

    def __init__(self, quota: Quota, now_s: float) -> None:
        self.tokens = float(quota.burst)
        self.ts = now_s

    def take(self, quota: Quota, cost: int, now_s: float) -> QuotaOutcome:
        self.tokens = min(quota.burst, self.tokens + max(0.0, now_s - self.ts) * quota.events_per_s)
        self.ts = now_s
        need = min(cost, quota.burst)
        if self.tokens >= need:
            self.tokens -= cost
            return Admitted()
        return OverQuota(retry_after_s(need - self.tokens, quota.events_per_s))


def retry_after_s(missing_tokens: float, rate: float) -> int:
    return max(1, math.ceil(missing_tokens / rate))


class QuotaBook:
    """Each client's effective quota, read from PostgreSQL and cached for `cache_s`.

    PostgreSQL down: the last known quota (or the default) stays in force. Past `cache_s`
    the last known quota also stays in force while it is read again (`RateLimiter.quota`):
    a quota change takes effect within `cache_s` plus one read; for a client idle for
    longer than that, from its first request back (which waits for the read).
    """

    def __init__(self, pg_settings: PostgresSettings, default: Quota, cache_s: float) -> None:
        self.default = default
        self._cache_s = cache_s
        self._known: dict[str, tuple[Quota, float]] = {}  # client -> (quota, fresh until)
        # One failure closes the door for 2 s, a hung call for 5 s: the last quota holds.
        self._pg = pg.LookupConnection(pg_settings, CircuitBreaker(1, 2.0), "quotas")

    def cached(self, client_id: str) -> tuple[Quota, bool] | None:
        """The last known quota and whether it is still fresh, or None if never read."""
        hit = self._known.get(client_id)
        if hit is None:
            return None
        return hit[0], time.monotonic() < hit[1]

    @property
    def cache_s(self) -> float:
        return self._cache_s

    def stale_for(self, client_id: str) -> float | None:
        """Seconds since the client's quota stopped being fresh (<= 0 while it is fresh),
        or None if it was never read."""
        hit = self._known.get(client_id)
        return None if hit is None else time.monotonic() - hit[1]

    def load_many(self, client_ids: Sequence[str]) -> dict[str, Quota]:
        """Blocking read of every client's quota, a thousand per query (run it on the
        registry thread). A client not in the registry gets the default."""
        now = time.monotonic()
        quotas: dict[str, Quota] = {}
        for chunk in chunked(client_ids, READ_CHUNK):
            stored = self._pg.run(functools.partial(get_quotas, client_ids=chunk))
            if isinstance(stored, pg.PostgresAway):
                for client_id in chunk:
                    previous = self._known.get(client_id)
                    quotas[client_id] = previous[0] if previous else self.default
                continue
            for client_id in chunk:
                found = stored.get(client_id)
                quotas[client_id] = self.default if found is None else found.effective(self.default)
                if len(self._known) > 100_000:
                    self._known.clear()
                # Fresh for 80-100% of cache_s, at random: the quotas of clients first seen
                # together are read again at different times, not in one burst.
                fresh_until = now + self._cache_s * random.uniform(0.8, 1.0)
                self._known[client_id] = (quotas[client_id], fresh_until)
        return quotas

    def close(self) -> None:
        self._pg.close()


class RateLimiter:
    def __init__(
        self,
        redis_settings: RedisSettings,
        book: QuotaBook,
        executor: ThreadPoolExecutor,
        *,
        lease_s: float = 0.1,
        redis_retry_after_s: float = 2.0,
        registry_wait_s: float = 1.0,
    ) -> None:
        self._redis = async_client(redis_settings)
        self._script = self._redis.register_script(TOKEN_BUCKET_LUA)
        self._book = book
        self._lease_s = lease_s
        self._redis_retry_after_s = redis_retry_after_s
        self._registry_wait_s = registry_wait_s
        self._redis_down_until = 0.0
        self._leases: dict[str, Lease] = {}
        self._local: dict[str, TokenBucket] = {}
        # client -> monotonic time until which its last 429 holds (Retry-After): requests
        # inside it are refused without asking Redis (the bucket can only have less).
        self._refused_until: dict[str, float] = {}
        # The clients whose quota must be read are read together: one query for all the
        # clients of a batch, at most one batch on the registry thread at a time (the book
        # caches what it reads).
        self._reads: BatchedLookups[str, Quota] = BatchedLookups(
            executor, book.load_many, "quota read"
        )
        self._calls: set[asyncio.Task[None]] = set()  # shared script calls in flight
        # Leases due for a top-up, not yet sent (each with its `refill` set), and the timer
        # that sends them: at most TOP_UP_GATHER_S away, sooner for a lease running low.
        self._due: dict[str, Lease] = {}
        self._send_due: asyncio.TimerHandle | None = None
        self._send_due_at = math.inf
        # Requests' own asks (no lease, or it ran out), sent together once the event loop
        # has run what is ready: a hundred clients' first requests after a start make one
        # call, not a hundred calls on as many new connections.
        self._asks: list[tuple[Ask, asyncio.Future[Answer | None]]] = []
        self.redis_calls = 0
        self.redis_errors = 0

    @property
    def local_fallback(self) -> bool:
        return time.monotonic() < self._redis_down_until

    async def quota(self, client_id: str) -> Quota:
        """The client's quota. Only its first read is waited for, at most
        `registry_wait_s` (then the default quota applies to this request); an expired one
        stays in force while it is read again on the registry thread (the clients due
        together in one query), so the quotas of many clients expiring together stall no
        request."""
        known = self._known_quota(client_id)
        if known is not None:
            stale = self._book.stale_for(client_id)
            if stale is None or stale <= self._book.cache_s:
                return known
            # Stale for longer than the cache time: the client was idle, and its quota may
            # have changed long ago (lowered, say). Its first request waits for the read
            # `_known_quota` started, like a first read, so a lowered quota is never
            # applied late by a whole lease of the old one; if the read does not answer
            # in time, the last known quota holds.
            read = await self._reads.result_within(client_id, self._registry_wait_s)
            return known if read is None else read
        read = await self._reads.result_within(client_id, self._registry_wait_s)
        return self._book.default if read is None else read

    def _known_quota(self, client_id: str) -> Quota | None:
        """The client's cached quota, if it has one (read again in the background once
        expired), without waiting."""
        cached = self._book.cached(client_id)
        if cached is None:
            return None
        if not cached[1]:
            self._reads.start(client_id)
        return cached[0]

    def leased(self, client_id: str) -> int:
        """Tokens of the client's current lease in this process."""
        lease = self._leases.get(client_id)
        return 0 if lease is None or time.monotonic() >= lease.until else lease.tokens

    def still_refused(self, client_id: str) -> int | None:
        """Seconds left of the client's last 429 in this process, or None."""
        until = self._refused_until.get(client_id)
        if until is None:
            return None
        left = until - time.monotonic()
        if left <= 0:
            del self._refused_until[client_id]
            return None
        return max(1, math.ceil(left))

    async def take(self, client_id: str, cost: int) -> QuotaOutcome:
        lease = self._leases.get(client_id)
        if lease is None:
            if len(self._leases) > 100_000:
                self._leases.clear()
            lease = self._leases[client_id] = Lease(0, 0.0)
        # One Redis call per client at a time: requests that find the lease short while
        # it is being renewed wait for the renewal, which may cover them too. A busy
        # client's lease is topped up before it runs short or out (`Lease.due`), so its
        # requests do not wait for Redis at all.
        while True:
            now = time.monotonic()
            if lease.tokens >= cost and now < lease.until:
                lease.tokens -= cost
                if lease.due(now):
                    self._start_top_up(client_id, lease)
                elif lease.tokens < lease.low and client_id in self._due:
                    self._send_by(now, now)  # its gathered top-up is needed now
                return ADMITTED
            if lease.refill is None:
                break
            if client_id in self._due:
                self._send_by(now, now)
            await asyncio.shield(lease.refill)
        refused = self.still_refused(client_id)
        if refused is not None:
            return OverQuota(refused)
        done = lease.refill = asyncio.get_running_loop().create_future()
        try:
            outcome = await self._take(client_id, cost, lease)
        finally:
            lease.refill = None
            done.set_result(None)
        if isinstance(outcome, OverQuota):
            if len(self._refused_until) > 100_000:
                self._refused_until.clear()
            self._refused_until[client_id] = time.monotonic() + outcome.retry_after_s
        return outcome

    async def _take(self, client_id: str, cost: int, lease: Lease) -> QuotaOutcome:
        """Ask the shared bucket (the caller holds the client's renewal), or the process's
        own bucket while Redis is unreachable."""
        quota = await self.quota(client_id)
        now = time.monotonic()
        if now >= self._redis_down_until:
            back, lease.tokens = lease.tokens, 0  # the unspent lease goes back
            size = lease_size(quota, self._lease_s)
            answer = await self._ask_with_others((client_id, quota, cost, size, back))
            if answer is None:
                lease.tokens = back  # never reached Redis: still ours to spend
            else:
                admitted, wait_ms, leased = answer
                if admitted:
                    lease.granted(leased, size)
                    return ADMITTED
                return OverQuota(max(1, math.ceil(wait_ms / 1000)))
        bucket = self._local.get(client_id)
        if bucket is None:
            if len(self._local) > 100_000:
                self._local.clear()
            bucket = self._local[client_id] = TokenBucket(quota, now)
        return bucket.take(quota, cost, now)

    def _start_top_up(self, client_id: str, lease: Lease) -> None:
        lease.refill = asyncio.get_running_loop().create_future()
        self._due[client_id] = lease
        now = time.monotonic()
        self._send_by(now if lease.tokens < lease.low else now + TOP_UP_GATHER_S, now)

    def _send_by(self, at: float, now: float) -> None:
        """The due top-ups go out by `at` (monotonic) at the latest."""
        if at >= self._send_due_at:
            return
        if self._send_due is not None:
            self._send_due.cancel()
        loop = asyncio.get_running_loop()
        self._send_due_at = at
        self._send_due = loop.call_at(loop.time() + (at - now), self._send_top_ups)

    def _send_top_ups(self) -> None:
        due, self._due = self._due, {}
        self._send_due, self._send_due_at = None, math.inf
        self._spawn(self._top_up(due))

    async def _top_up(self, due: dict[str, Lease]) -> None:
        """Fill each lease back to its size from the shared bucket (calls of cost 0, which
        the script admits while the bucket is not in debt) and extend its life. Without a
        top-up (nothing left to lease, Redis away) a lease runs out and its client's next
        request asks Redis with its own cost, as a request without a lease does."""
        topped_up: set[str] = set()
        try:
            known = {client_id: self._known_quota(client_id) for client_id in due}
            quotas = {client_id: q for client_id, q in known.items() if q is not None}
            unknown = [client_id for client_id in due if client_id not in quotas]
            if unknown:  # read together, not one after the other
                read = await asyncio.gather(*map(self.quota, unknown))
                quotas.update(zip(unknown, read, strict=True))
            asks: list[Ask] = []
            sizes: dict[str, int] = {}
            for client_id, lease in due.items():
                quota = quotas[client_id]
                sizes[client_id] = lease_size(quota, self._lease_s)
                asks.append((client_id, quota, 0, max(0, sizes[client_id] - lease.tokens), 0))
            answers = await self._ask_all(asks)
            for (client_id, _, _, want, _), answer in zip(asks, answers, strict=True):
                # Nothing left to lease (the bucket is empty or in debt) ends the top-ups
                # of this lease; a full lease only has its life extended.
                if answer is not None and answer[0] and (answer[2] > 0 or want == 0):
                    due[client_id].granted(answer[2], sizes[client_id])
                    topped_up.add(client_id)
        except Exception:
            log.exception("lease top-up failed", extra={"clients": len(due)})
        finally:
            for client_id, lease in due.items():
                if client_id not in topped_up:
                    lease.renew_at, lease.low = math.inf, 0
                done, lease.refill = lease.refill, None
                if done is not None:
                    done.set_result(None)

    def _ask_with_others(self, ask: Ask) -> asyncio.Future[Answer | None]:
        """The script's answer to `ask`, in one call with the other asks made before the
        event loop next gets to its ready callbacks (None: Redis unreachable)."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Answer | None] = loop.create_future()
        if not self._asks:
            loop.call_soon(self._send_asks)
        self._asks.append((ask, answer))
        return answer

    def _send_asks(self) -> None:
        asks, self._asks = self._asks, []
        self._spawn(self._answer(asks))

    def _spawn(self, call: Coroutine[Any, Any, None]) -> None:
        """Run a shared call as a task `close` can cancel."""
        task = asyncio.ensure_future(call)
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    async def _answer(self, asks: list[tuple[Ask, asyncio.Future[Answer | None]]]) -> None:
        """Every ask's future gets its answer, or None when Redis could not give one."""
        try:
            answers = await self._ask_all([ask for ask, _ in asks])
            for (_, waiter), answer in zip(asks, answers, strict=True):
                if not waiter.done():
                    waiter.set_result(answer)
        except Exception:
            log.exception("quota call failed", extra={"clients": len(asks)})
        finally:
            for _, waiter in asks:
                if not waiter.done():
                    waiter.set_result(None)

    async def _ask_all(self, asks: Sequence[Ask]) -> list[Answer | None]:
        """The answers to any number of asks, BUCKETS_PER_CALL to a call; None for those
        Redis did not answer (unreachable, or found so by an earlier call)."""
        answers: list[Answer | None] = []
        for part in chunked(asks, BUCKETS_PER_CALL):
            got = None if self.local_fallback else await self._ask_redis(part)
            answers += got if got is not None else [None] * len(part)
        return answers

    async def _ask_redis(self, asks: Sequence[Ask]) -> list[Answer] | None:
        """For each (client, quota, cost, lease wanted, tokens given back), in one script
        call: the script's answer (admitted, wait_ms, tokens leased). None when Redis is
        unreachable (quotas are then enforced in process for `redis_retry_after_s`)."""
        args: list[str | int] = []
        for _, quota, cost, want, back in asks:
            args += [repr(quota.events_per_s), quota.burst, cost, want, back]
        try:
            self.redis_calls += 1
            flat = await self._script(keys=[BUCKET_PREFIX + a[0] for a in asks], args=args)
        except (redis.RedisError, OSError) as exc:
            self.redis_errors += 1
            self._redis_down_until = time.monotonic() + self._redis_retry_after_s
            log.warning("redis unavailable: quotas enforced per process", extra={"error": str(exc)})
            return None
        return [
            (bool(int(flat[i])), int(flat[i + 1]), int(flat[i + 2])) for i in range(0, len(flat), 3)
        ]

    async def close(self) -> None:
        if self._send_due is not None:
            self._send_due.cancel()
        for lease in self._due.values():
            if lease.refill is not None:
                lease.refill.set_result(None)
                lease.refill = None
        self._due.clear()
        for _, waiter in self._asks:
            waiter.set_result(None)
        self._asks.clear()
        for task in list(self._calls):
            task.cancel()
        await self._redis.aclose()  # type: ignore[attr-defined]  # stubs predate aclose
