"""Client lookups through a Redis cache backed by PostgreSQL, with an invalidation hook.

Layers, fastest first:
1. an in-process map with a short TTL (`local_ttl_s`), cleared at once by
   invalidation messages on Redis pub/sub channel `INVALIDATION_CHANNEL`;
2. Redis keys `client:v1:<id>` with TTL `redis_ttl_s` (unknown clients are
   negatively cached for `negative_ttl_s`, so a flood of bad ids does not hit
   PostgreSQL); an entry holds the routing view, the client's ClickHouse target included
   (one without a target, written before targets existed, is a miss);
3. PostgreSQL `clients`, the source of truth.

Invariants: a change in PostgreSQL takes effect within redis_ttl_s + local_ttl_s
without any hook; `invalidate()` makes it take effect at once. When Redis is down,
lookups go to PostgreSQL; when PostgreSQL is down, clients already cached (in
Redis, or last known in this process) keep being served; when neither can answer
for a client never seen, the result is RegistryUnavailable (retry), never a verdict.

Outages cost little: every Redis call is bounded by `redis_timeout_s` and never retried
by the client library, and each server sits behind a `CircuitBreaker`: after a few
consecutive failures its calls are skipped (the lookup falls back at once) and one probe
call every `breaker_retry_s` finds out when it is back.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from analytics_core import pg, registry
from analytics_core.chunked import chunked
from analytics_core.circuit_breaker import CircuitBreaker
from analytics_core.clients import (
    ClientFound,
    ClientMissing,
    ClientRecord,
    ClientStatus,
    LookupResult,
    RegistryUnavailable,
)
from analytics_core.redis_connect import connection_kwargs
from analytics_core.settings import PostgresSettings, RedisSettings

log = logging.getLogger(__name__)

INVALIDATION_CHANNEL = "client-invalidations"
KEY_PREFIX = "client:v1:"


def redis_client(
    settings: RedisSettings, *, timeout_s: float = 1.0, retries: int | None = None
) -> redis.Redis:
    """`retries=0`: one attempt per call, bounded by `timeout_s` (the router's hot path);
    None keeps the library's retries with backoff (operator commands)."""
    # The library's default Retry is kept unless a count is given (its stubs lack `retry`).
    extra: dict[str, Any] = {} if retries is None else {"retry": Retry(NoBackoff(), retries)}
    return redis.Redis(**connection_kwargs(settings, timeout_s=timeout_s), **extra)


def cache_key(client_id: str) -> str:
    return KEY_PREFIX + client_id


def encode(result: ClientFound | ClientMissing) -> bytes:
    if isinstance(result, ClientMissing):
        return b'{"missing":true}'
    r = result.record
    return orjson.dumps(
        {
            "status": r.status.value,
            "api_key_hash": r.api_key_hash,
            "db": r.ch_database_name,
            "target": r.ch_target,
        }
    )


_KEY_HASH = re.compile(r"[0-9a-f]{64}")  # ASCII only, like the registry's CHECK constraint


def decode(client_id: str, raw: bytes) -> ClientFound | ClientMissing | None:
    try:
        doc = orjson.loads(raw)
        if doc.get("missing"):
            return ClientMissing(client_id)
        key_hash, database, target = doc["api_key_hash"], doc["db"], doc.get("target")
        if not isinstance(key_hash, str) or not _KEY_HASH.fullmatch(key_hash):
            return None
        if not isinstance(database, str) or not isinstance(target, str):
            # An entry written before clients had targets (no "target") is a miss, never
            # "default": the client may have moved since, and PostgreSQL knows.
            return None
        return ClientFound(
            ClientRecord(client_id, ClientStatus(doc["status"]), key_hash, database, target)
        )
    except (orjson.JSONDecodeError, KeyError, ValueError, AttributeError, TypeError):
        return None  # unreadable cache entry: treat as a miss


def invalidate(redis_settings: RedisSettings, client_id: str) -> None:
    """Drop a client's cache entry everywhere (Redis + every router's local map)."""
    r = redis_client(redis_settings)
    try:
        r.delete(cache_key(client_id))
        r.publish(INVALIDATION_CHANNEL, client_id)
    finally:
        r.close()


@dataclass
class _Local:
    result: ClientFound | ClientMissing
    fetched_at: float


@dataclass
class CacheStats:
    local_hits: int = 0
    redis_hits: int = 0
    pg_reads: int = 0  # clients read from PostgreSQL
    pg_queries: int = 0  # queries that read them (lookup_many reads many in one)
    stale_served: int = 0
    unavailable: int = 0
    redis_errors: int = 0
    pg_errors: int = 0


class ClientDirectory:
    """The router's client lookup. Not thread-safe except `forget` (pub/sub thread)."""

    def __init__(
        self,
        redis_settings: RedisSettings,
        pg_settings: PostgresSettings,
        *,
        local_ttl_s: float = 2.0,
        redis_ttl_s: int = 60,
        negative_ttl_s: int = 10,
        max_local_entries: int = 100_000,
        redis_timeout_s: float = 0.25,
        breaker_failures: int = 3,
        breaker_retry_s: float = 5.0,
        redis_retry_after_s: float | None = None,  # older name of breaker_retry_s
    ) -> None:
        self._redis_settings = redis_settings
        self._redis = redis_client(redis_settings, timeout_s=redis_timeout_s, retries=0)
        self._local: OrderedDict[str, _Local] = OrderedDict()
        self._lock = threading.Lock()
        self.local_ttl_s = local_ttl_s
        self.redis_ttl_s = redis_ttl_s
        self.negative_ttl_s = negative_ttl_s
        self.max_local_entries = max_local_entries
        retry_s = breaker_retry_s if redis_retry_after_s is None else redis_retry_after_s
        self.redis_breaker = CircuitBreaker(breaker_failures, retry_s)
        self.pg_breaker = CircuitBreaker(breaker_failures, retry_s)
        self._pg = pg.LookupConnection(
            pg_settings, self.pg_breaker, "client lookups", timeout_hold_s=retry_s
        )
        self.stats = CacheStats()
        self._listener: threading.Thread | None = None
        self._stop = threading.Event()

    # -- invalidation -------------------------------------------------------
    def forget(self, client_id: str) -> None:
        with self._lock:
            self._local.pop(client_id, None)

    def start_invalidation_listener(self) -> None:
        """Follow the invalidation channel in a daemon thread; reconnects by itself."""
        if self._listener is not None:
            return
        self._listener = threading.Thread(
            target=self._listen, name="client-invalidations", daemon=True
        )
        self._listener.start()

    def _listen(self) -> None:
        while not self._stop.is_set():
            conn = redis_client(self._redis_settings, timeout_s=2.0)
            try:
                pubsub = conn.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(INVALIDATION_CHANNEL)
                # Entries cached while we were not listening may be stale.
                with self._lock:
                    self._local.clear()
                while not self._stop.is_set():
                    msg = pubsub.get_message(timeout=1.0)
                    if msg and msg.get("type") == "message":
                        data = msg["data"]
                        self.forget(data.decode() if isinstance(data, bytes) else str(data))
            except (redis.RedisError, OSError):
                self._stop.wait(1.0)
            finally:
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self._redis.close()
        self._pg.close()

    # -- lookup ---------------------------------------------------------------
    def lookup(self, client_id: str) -> LookupResult:
        now = time.monotonic()
        with self._lock:
            entry = self._local.get(client_id)
        if entry is not None and now - entry.fetched_at < self.local_ttl_s:
            self.stats.local_hits += 1
            return entry.result
        return self._settle(client_id, entry, self._from_redis(client_id, now), now)

    def fresh(self, client_id: str) -> LookupResult | None:
        """The in-process answer while it is fresh (counted as a local hit), else None:
        a `lookup` now would ask Redis or PostgreSQL."""
        with self._lock:
            entry = self._local.get(client_id)
        if entry is None or time.monotonic() - entry.fetched_at >= self.local_ttl_s:
            return None
        self.stats.local_hits += 1
        return entry.result

    def lookup_many(self, client_ids: Sequence[str]) -> dict[str, LookupResult]:
        """`lookup` for each client, the ones not fresh in process read from Redis in one
        round trip (per thousand) instead of one each, PostgreSQL's answers in one query
        (per thousand) and written back to Redis in one pipeline."""
        now = time.monotonic()
        with self._lock:
            entries = {cid: self._local.get(cid) for cid in client_ids}
        results: dict[str, LookupResult] = {}
        for cid, entry in entries.items():
            if entry is not None and now - entry.fetched_at < self.local_ttl_s:
                self.stats.local_hits += 1
                results[cid] = entry.result
        fetched = self._many_from_redis([c for c in entries if c not in results])
        from_pg = self._many_from_pg([c for c in entries if c not in results and c not in fetched])
        writes: dict[str, ClientFound | ClientMissing] = {}
        for cid, entry in entries.items():
            if cid not in results:
                results[cid] = self._settle(cid, entry, fetched.get(cid), now, from_pg, writes)
        self._many_to_redis(writes)
        return results

    def _settle(
        self,
        client_id: str,
        entry: _Local | None,
        from_redis: ClientFound | ClientMissing | None,
        now: float,
        from_pg: dict[str, ClientFound | ClientMissing] | None = None,
        writes: dict[str, ClientFound | ClientMissing] | None = None,
    ) -> LookupResult:
        """The answer for a client not fresh in process, given what Redis held (None:
        nothing usable): PostgreSQL's when Redis had nothing (read here, or already in
        `from_pg`, which lacks the clients PostgreSQL could not be asked about), else the
        last known one. PostgreSQL's answer goes to Redis now, or into `writes` for the
        caller to send together."""
        result = from_redis
        if result is None:
            result = self._from_pg(client_id) if from_pg is None else from_pg.get(client_id)
            if result is None:
                if entry is not None:
                    self.stats.stale_served += 1
                    return entry.result
                self.stats.unavailable += 1
                return RegistryUnavailable("Redis has no entry and PostgreSQL is unreachable")
            if writes is None:
                self._to_redis(client_id, result, now)
            else:
                writes[client_id] = result
        else:
            self.stats.redis_hits += 1
        self._remember(client_id, result, now)
        return result

    def refresh_ahead(self) -> int:
        """Re-read from Redis, in one round trip per thousand, the known clients whose local
        entry is past half its TTL, so hot-path lookups stay local hits.

        An entry is never older than `local_ttl_s` either way: this only moves the Redis
        reads off the hot path. Unknown-client entries are left to expire (a flood of bad
        ids must not grow the refresh). Returns how many entries were refreshed.
        """
        now = time.monotonic()
        half = self.local_ttl_s / 2
        with self._lock:
            due = [
                cid
                for cid, e in self._local.items()
                if type(e.result) is ClientFound and now - e.fetched_at >= half
            ]
        # Expired in Redis (or unreadable): the next lookup goes to PostgreSQL.
        fetched = self._many_from_redis(due)
        for cid, found in fetched.items():
            self._remember(cid, found, now)
        return len(fetched)

    def _many_from_redis(self, client_ids: Sequence[str]) -> dict[str, ClientFound | ClientMissing]:
        """The usable Redis entries of the clients, one MGET per thousand; what was read
        before Redis failed."""
        found: dict[str, ClientFound | ClientMissing] = {}
        if not client_ids or not self.redis_breaker.allow():
            return found
        for chunk in chunked(client_ids, 1000):
            try:
                raws = self._redis.mget([cache_key(c) for c in chunk])
            except (redis.RedisError, OSError) as exc:
                self._redis_failed(exc)
                return found
            self.redis_breaker.succeeded()
            for cid, raw in zip(chunk, raws, strict=True):
                decoded = None if raw is None else decode(cid, bytes(raw))
                if decoded is not None:
                    found[cid] = decoded
        return found

    def _remember(self, client_id: str, result: ClientFound | ClientMissing, now: float) -> None:
        with self._lock:
            self._local[client_id] = _Local(result, now)
            self._local.move_to_end(client_id)
            while len(self._local) > self.max_local_entries:
                self._local.popitem(last=False)

    def _from_redis(self, client_id: str, now: float) -> ClientFound | ClientMissing | None:
        if not self.redis_breaker.allow():
            return None
        try:
            raw = self._redis.get(cache_key(client_id))
        except (redis.RedisError, OSError) as exc:
            self._redis_failed(exc)
            return None
        self.redis_breaker.succeeded()
        return None if raw is None else decode(client_id, bytes(raw))

    def _to_redis(self, client_id: str, result: ClientFound | ClientMissing, now: float) -> None:
        if not self.redis_breaker.allow():
            return
        ttl = self.negative_ttl_s if isinstance(result, ClientMissing) else self.redis_ttl_s
        try:
            self._redis.set(cache_key(client_id), encode(result), ex=ttl)
        except (redis.RedisError, OSError) as exc:
            self._redis_failed(exc)
            return
        self.redis_breaker.succeeded()

    def _many_to_redis(self, results: dict[str, ClientFound | ClientMissing]) -> None:
        """`_to_redis` for each, one pipelined round trip per thousand."""
        if not results or not self.redis_breaker.allow():
            return
        for chunk in chunked(list(results.items()), 1000):
            pipe = self._redis.pipeline(transaction=False)
            for cid, result in chunk:
                missing = isinstance(result, ClientMissing)
                pipe.set(
                    cache_key(cid),
                    encode(result),
                    ex=self.negative_ttl_s if missing else self.redis_ttl_s,
                )
            try:
                pipe.execute()
            except (redis.RedisError, OSError) as exc:
                self._redis_failed(exc)
                return
            self.redis_breaker.succeeded()

    def _redis_failed(self, exc: Exception) -> None:
        self.stats.redis_errors += 1
        was_closed = self.redis_breaker.opened_at is None
        self.redis_breaker.failed()
        if was_closed and self.redis_breaker.opened_at is not None:
            log.warning("redis unavailable: circuit open, lookups go to PostgreSQL: %s", exc)

    def _from_pg(self, client_id: str) -> ClientFound | ClientMissing | None:
        return self._many_from_pg([client_id]).get(client_id)

    def _many_from_pg(self, client_ids: Sequence[str]) -> dict[str, ClientFound | ClientMissing]:
        """PostgreSQL's answers, one query per thousand clients; those read before it
        could not be asked (after a miss a lookup of many clients is one query, not one
        each: a hundred clients back after a pause waited for a hundred queries)."""
        answers: dict[str, ClientFound | ClientMissing] = {}
        for chunk in chunked(client_ids, 1000):
            rows = self._pg.run(functools.partial(registry.get_clients, client_ids=chunk))
            if isinstance(rows, pg.PostgresAway):
                self.stats.pg_errors += rows.tried
                return answers
            self.stats.pg_queries += 1
            self.stats.pg_reads += len(chunk)
            for cid in chunk:
                row = rows.get(cid)
                record = None if row is None else row.record()
                answers[cid] = ClientMissing(cid) if record is None else ClientFound(record)
        return answers
