"""Authentication at the edge: write key -> client, through the router's own client lookup.

SDKs send only a write key. `KeyIndex` finds the client id by the key's sha256 (in-process
-> Redis -> PostgreSQL, unknown keys negatively cached like unknown clients), then
`ClientDirectory.lookup` (the router's lookup) gives the client's status and current key
hash, compared in constant time. So a rotated key stops working as soon as the directory
sees the new hash, whatever the index still caches.

`verdict` is the pure decision; `Authenticator` runs the blocking lookups on one worker
thread (ClientDirectory is not thread-safe), the keys that need one at the same time in
one batch (one Redis round trip per layer for all of them), and keeps a short-lived cache
of verdicts on the event loop, so the hot path never blocks the loop. A verdict in use is
looked up again in the background at a random point between two fifths and four fifths of
its TTL (gathered with other keys' refreshes for up to a tenth of it), so a busy client's
requests do not wait for the lookup when it expires. While the registry answers, no
verdict is served past its TTL. When it cannot answer (PostgreSQL and Redis away, or a
lookup still running `wait_s` after it started: a hung server), a request gets the key's
last verdict, or 503 for a key never seen; it never waits longer than `wait_s`.
"""

from __future__ import annotations

import functools
import hmac
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import psycopg2
import redis

from analytics_core import pg
from analytics_core.chunked import chunked
from analytics_core.circuit_breaker import CircuitBreaker
from analytics_core.client_cache import ClientDirectory
from analytics_core.clients import (
    ClientFound,
    ClientMissing,
    ClientRecord,
    ClientStatus,
    LookupResult,
    RegistryUnavailable,
)
from analytics_core.event_contract import hash_api_key
from analytics_core.settings import PostgresSettings, RedisSettings
from capture.batched_lookups import BatchedLookups
from capture.redis_clients import sync_client

log = logging.getLogger("capture.auth")

KEY_INDEX_PREFIX = "capture:key:v1:"
# A refresh ahead of expiry (asked for at least a fifth of the TTL before it) waits at most
# this long, and a tenth of the TTL, for other keys' refreshes to share its registry job:
# the lookup still has a tenth of the TTL to finish before any request waits for it.
REFRESH_GATHER_S = 0.05
# Statuses whose events are accepted: pending clients are being provisioned, and the
# router keeps their events as recoverable `client_inactive` dead letters until then.
ACCEPTING = frozenset({ClientStatus.ACTIVE, ClientStatus.PENDING})


@dataclass(frozen=True, slots=True)
class Authenticated:
    client_id: str
    key_hash: str


@dataclass(frozen=True, slots=True)
class Refused:
    status: int  # 401 (unknown or wrong key) or 403 (client no longer accepts events)
    code: str
    message: str
    client_id: str | None = None


@dataclass(frozen=True, slots=True)
class AuthUnavailable:
    detail: str


AuthOutcome = Authenticated | Refused | AuthUnavailable

_UNKNOWN_KEY = Refused(401, "invalid_write_key", "unknown write key")


@dataclass(frozen=True, slots=True)
class KeyUnknown:
    pass


@dataclass(frozen=True, slots=True)
class KeyAmbiguous:
    pass


KeyResult = str | KeyUnknown | KeyAmbiguous | RegistryUnavailable


def verdict(key_hash: str, by_key: KeyResult, lookup: LookupResult | None) -> AuthOutcome:
    """The pure decision from the key index's answer and the directory's record."""
    if isinstance(by_key, RegistryUnavailable):
        return AuthUnavailable(by_key.detail)
    if isinstance(by_key, KeyUnknown):
        return _UNKNOWN_KEY
    if isinstance(by_key, KeyAmbiguous):
        return Refused(401, "invalid_write_key", "write key matches several clients; rotate it")
    if isinstance(lookup, RegistryUnavailable):
        return AuthUnavailable(lookup.detail)
    if not isinstance(lookup, ClientFound):
        return _UNKNOWN_KEY
    record = lookup.record
    if not holds_key(record, key_hash):
        return _UNKNOWN_KEY
    if record.status not in ACCEPTING:
        return Refused(
            403,
            "client_inactive",
            f"client {record.client_id!r} is {record.status.value}; it accepts no events",
            record.client_id,
        )
    return Authenticated(record.client_id, key_hash)


def holds_key(record: ClientRecord, key_hash: str) -> bool:
    """The client's current key is the one hashed (compared in constant time)."""
    return hmac.compare_digest(record.api_key_hash, key_hash)


class KeyIndex:
    """key hash -> client id: in-process (TTL) -> Redis (TTL, negative TTL) -> PostgreSQL.

    A key found is kept in process as long as in Redis (`redis_ttl_s`): the index only
    says which client to ask the directory about, and the directory's current key hash
    decides (a rotated key is refused however long the index remembers it), so a lookup
    after a pause costs one Redis call (the directory's), not two. A key not found is kept
    `local_ttl_s` only, so a new client's key works soon after it is created. An entry the
    directory contradicts is `forget`-ten (see `Authenticator._resolve_all`)."""

    def __init__(
        self,
        redis_settings: RedisSettings,
        pg_settings: PostgresSettings,
        *,
        local_ttl_s: float,
        redis_ttl_s: int,
        negative_ttl_s: int,
        max_local: int = 100_000,
    ) -> None:
        self._redis = sync_client(redis_settings)
        # One failure closes the door for 1 s (a restart is back soon), a hung call for 5 s.
        self._pg = pg.LookupConnection(pg_settings, CircuitBreaker(1, 1.0), "the write-key index")
        self._local: OrderedDict[str, tuple[str | None, float]] = OrderedDict()
        self._local_ttl_s = local_ttl_s
        self._redis_ttl_s = redis_ttl_s
        self._found_ttl_s = max(local_ttl_s, redis_ttl_s)
        self._negative_ttl_s = negative_ttl_s
        self._max_local = max_local
        self._redis_down_until = 0.0
        self.pg_queries = 0  # keys not in Redis are read together: one query per batch

    def client_for(self, key_hash: str) -> KeyResult:
        return self.clients_for([key_hash])[key_hash]

    def clients_for(self, key_hashes: Sequence[str]) -> dict[str, KeyResult]:
        """Each key's answer; the keys not known in process are read from Redis in one
        round trip, those Redis does not know from PostgreSQL (one query for all of them)."""
        now = time.monotonic()
        answers: dict[str, KeyResult] = {}
        unknown_here: list[str] = []
        for key_hash in key_hashes:
            hit = self._local.get(key_hash)
            if hit is not None:
                found_before = hit[0]
                ttl = self._local_ttl_s if found_before is None else self._found_ttl_s
                if now - hit[1] < ttl:
                    answers[key_hash] = found_before if found_before is not None else KeyUnknown()
                    continue
            unknown_here.append(key_hash)
        cached = self._from_redis(unknown_here, now)
        from_pg = self._many_from_pg([h for h in unknown_here if h not in cached])
        for key_hash in unknown_here:
            in_redis = cached.get(key_hash)
            if in_redis is not None:
                found: str | None = in_redis or None
            else:
                result = from_pg[key_hash]
                if isinstance(result, RegistryUnavailable | KeyAmbiguous):
                    answers[key_hash] = result
                    continue
                found = result if isinstance(result, str) else None
                self._to_redis(key_hash, found, now)
            self._local[key_hash] = (found, now)
            self._local.move_to_end(key_hash)
            answers[key_hash] = found if found is not None else KeyUnknown()
        while len(self._local) > self._max_local:
            self._local.popitem(last=False)
        return answers

    def forget(self, key_hash: str) -> None:
        """Drop what the process and Redis remember of the key: its next lookup reads
        PostgreSQL."""
        self._local.pop(key_hash, None)
        now = time.monotonic()
        if now < self._redis_down_until:
            return
        try:
            self._redis.delete(KEY_INDEX_PREFIX + key_hash)
        except (redis.RedisError, OSError):
            self._redis_down_until = now + 2.0

    def _from_redis(self, key_hashes: Sequence[str], now: float) -> dict[str, str]:
        """The keys Redis knows: client id, or "" for a known unknown key."""
        if not key_hashes or now < self._redis_down_until:
            return {}
        try:
            raws = self._redis.mget([KEY_INDEX_PREFIX + h for h in key_hashes])
        except (redis.RedisError, OSError) as exc:
            self._redis_down_until = now + 2.0
            log.warning("redis unavailable for the write-key index", extra={"error": str(exc)})
            return {}
        return {
            h: bytes(raw).decode()
            for h, raw in zip(key_hashes, raws, strict=True)
            if raw is not None
        }

    def _to_redis(self, key_hash: str, client_id: str | None, now: float) -> None:
        if now < self._redis_down_until:
            return
        ttl = self._redis_ttl_s if client_id else self._negative_ttl_s
        try:
            self._redis.set(KEY_INDEX_PREFIX + key_hash, client_id or "", ex=ttl)
        except (redis.RedisError, OSError):
            self._redis_down_until = now + 2.0

    def _many_from_pg(
        self, key_hashes: Sequence[str]
    ) -> dict[str, str | KeyUnknown | KeyAmbiguous | RegistryUnavailable]:
        """Each key's client in PostgreSQL, one query per thousand keys."""
        answers: dict[str, str | KeyUnknown | KeyAmbiguous | RegistryUnavailable] = {}
        for chunk in chunked(key_hashes, 1000):
            rows = self._pg.run(functools.partial(_clients_with_keys, key_hashes=chunk))
            if isinstance(rows, pg.PostgresAway):
                away = RegistryUnavailable(rows.detail)
                return {h: answers.get(h, away) for h in key_hashes}
            self.pg_queries += 1
            owners: dict[str, list[str]] = {}
            for client_id, key_hash in rows:
                owners.setdefault(key_hash, []).append(client_id)
            for key_hash in chunk:
                found = owners.get(key_hash, [])
                answers[key_hash] = (
                    KeyAmbiguous() if len(found) > 1 else found[0] if found else KeyUnknown()
                )
        return answers

    def close(self) -> None:
        self._redis.close()
        self._pg.close()


def _clients_with_keys(
    conn: psycopg2.extensions.connection, key_hashes: Sequence[str]
) -> list[tuple[str, str]]:
    """(client id, key hash) of the clients holding any of the keys."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT client_id, api_key_hash FROM clients WHERE api_key_hash = ANY(%s)",
            (list(key_hashes),),
        )
        rows: list[tuple[str, str]] = cur.fetchall()
    conn.commit()
    return rows


class Authenticator:
    """Async front: verdicts cached on the loop for `front_ttl_s`; misses resolved on one
    worker thread that owns the KeyIndex and the ClientDirectory."""

    def __init__(
        self,
        index: KeyIndex,
        directory: ClientDirectory,
        executor: ThreadPoolExecutor,
        *,
        front_ttl_s: float,
        wait_s: float = 1.0,
        max_front: int = 100_000,
        on_stale: Callable[[], None] | None = None,
    ) -> None:
        self._index = index
        self._directory = directory
        # One lookup per key at a time, and the keys that need one looked up together: the
        # requests of a busy client that all find its verdict expired wait for the same
        # lookup, and a hundred clients after a pause for one batch (queueing one lookup
        # each on the registry thread stalled them by tens to hundreds of milliseconds).
        self._lookups: BatchedLookups[str, AuthOutcome] = BatchedLookups(
            executor, self._resolve_all, "write-key lookup", self._remember
        )
        # key hash -> (verdict, when it was looked up, its age when it is looked up again)
        self._front: dict[str, tuple[AuthOutcome, float, float]] = {}
        self._hashes: dict[str, str] = {}
        self._front_ttl_s = front_ttl_s
        self._wait_s = wait_s
        self._max_front = max_front
        self.stale_served = 0  # verdicts served past their TTL: the registry was late
        self._on_stale = on_stale

    def key_hash(self, key: str) -> str:
        h = self._hashes.get(key)
        if h is None:
            if len(self._hashes) >= self._max_front:
                self._hashes.clear()
            h = self._hashes[key] = hash_api_key(key)
        return h

    def cached(self, key: str) -> AuthOutcome | None:
        """The key's verdict while it is within its TTL, else None (no lookup waited for)."""
        key_hash = self.key_hash(key)
        hit = self._front.get(key_hash)
        if hit is None:
            return None
        age = time.monotonic() - hit[1]
        if age >= self._front_ttl_s:
            return None
        # Refresh-ahead: the lookup runs while the verdict still holds, so when it expires
        # the next one is (usually) there already.
        if age >= hit[2]:  # joins the key's lookup if one is waiting or running
            self._lookups.start(key_hash, min(REFRESH_GATHER_S, self._front_ttl_s / 10))
        return hit[0]

    async def authenticate(self, key: str) -> AuthOutcome:
        fresh = self.cached(key)
        if fresh is not None:
            return fresh
        key_hash = self.key_hash(key)
        hit = self._front.get(key_hash)
        outcome = await self._lookups.result_within(key_hash, self._wait_s)
        if outcome is None or isinstance(outcome, AuthUnavailable):
            if hit is not None:
                # The registry cannot answer (in time): the last verdict holds until it
                # can, as the router keeps routing the clients it knows while PostgreSQL
                # is away. A request never waits on a hung registry for longer than wait_s.
                self.stale_served += 1
                if self._on_stale is not None:
                    self._on_stale()
                return hit[0]
            return outcome or AuthUnavailable(
                f"the client registry did not answer within {self._wait_s:g} s"
            )
        return outcome

    def _remember(self, key_hash: str, outcome: AuthOutcome) -> None:
        """Cache a looked-up verdict (one of an unavailable registry never is)."""
        if isinstance(outcome, AuthUnavailable):
            return
        if len(self._front) >= self._max_front:
            self._front.clear()
        # Refreshed at a random point between 40 and 80% of the TTL: the lookups of clients first
        # seen together spread out instead of queueing together on the registry thread every
        # TTL (which stalled their requests).
        refresh_age = self._front_ttl_s * random.uniform(0.4, 0.8)
        self._front[key_hash] = (outcome, time.monotonic(), refresh_age)

    def _resolve_all(self, key_hashes: Sequence[str]) -> dict[str, AuthOutcome]:
        """Verdicts for many keys (on the registry thread), each layer asked once for all
        of them: the index for the clients, then the directory for those clients."""
        by_key = self._index.clients_for(key_hashes)
        named = sorted({c for c in by_key.values() if isinstance(c, str)})
        records = self._directory.lookup_many(named) if named else {}
        verdicts: dict[str, AuthOutcome] = {}
        for key_hash in key_hashes:
            client = by_key[key_hash]
            lookup = records[client] if isinstance(client, str) else None
            if isinstance(client, str) and index_is_stale(lookup, key_hash):
                # The index named a client that is gone or holds another key now: what it
                # remembers is stale. Once more from PostgreSQL, so a key given to another
                # client is accepted at once and a rotated one refused.
                self._index.forget(key_hash)
                client = self._index.client_for(key_hash)
                lookup = self._directory.lookup(client) if isinstance(client, str) else None
            verdicts[key_hash] = verdict(key_hash, client, lookup)
        return verdicts


def index_is_stale(lookup: LookupResult | None, key_hash: str) -> bool:
    """The directory says the client the index named is missing or holds another key now
    (pure): the index entry is stale."""
    if isinstance(lookup, ClientMissing):
        return True
    return isinstance(lookup, ClientFound) and not holds_key(lookup.record, key_hash)
