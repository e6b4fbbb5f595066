"""The write-key index (capture.auth) against real Redis and PostgreSQL.

A key found stays in process as long as in Redis: the directory, not the index, decides
whether the key is still the client's. When the directory contradicts the index (the key
was rotated, or given to another client), the index forgets the key and asks PostgreSQL
again within the same lookup. A key not found is remembered only briefly, so a new
client's key works soon.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from analytics_core import client_cache, pg, registry
from analytics_core.client_cache import ClientDirectory
from analytics_core.clients import ClientFound, ClientMissing, ClientStatus
from analytics_core.event_contract import hash_api_key
from analytics_core.settings import Settings
from capture.auth import (
    KEY_INDEX_PREFIX,
    Authenticated,
    Authenticator,
    AuthOutcome,
    KeyIndex,
    KeyUnknown,
    Refused,
)
from capture.redis_clients import sync_client
from tests.conftest import ClientFixture, set_status, unique_id

pytestmark = pytest.mark.integration

LOCAL_TTL_S = 0.2


def _index(stack: Settings) -> KeyIndex:
    return KeyIndex(
        stack.redis, stack.postgres, local_ttl_s=LOCAL_TTL_S, redis_ttl_s=60, negative_ttl_s=60
    )


def _set_key(stack: Settings, client_id: str, key: str) -> None:
    conn = pg.connect(stack.postgres)
    try:
        registry.set_api_key_hash(conn, client_id, hash_api_key(key))
    finally:
        conn.close()
    client_cache.invalidate(stack.redis, client_id)  # as `admin rotate-key` does


def _add_client(stack: Settings, key_hash: str) -> str:
    client_id = unique_id("knew")
    conn = pg.connect(stack.postgres)
    try:
        registry.add_client(conn, client_id, key_hash, name="key index test")
    finally:
        conn.close()
    return client_id


def test_a_found_key_stays_in_process_past_the_local_ttl(
    stack: Settings, make_client: Callable[..., ClientFixture]
) -> None:
    client = make_client("kidx", active=False)
    key_hash = hash_api_key(client.api_key)
    index = _index(stack)
    redis = sync_client(stack.redis)
    try:
        assert index.client_for(key_hash) == client.client_id
        # Redis now says "unknown": a lookup that went there would answer KeyUnknown.
        redis.set(KEY_INDEX_PREFIX + key_hash, "", ex=60)
        time.sleep(LOCAL_TTL_S * 2)
        assert index.client_for(key_hash) == client.client_id
        index.forget(key_hash)  # what the process and Redis knew is gone: PostgreSQL
        assert index.client_for(key_hash) == client.client_id
        assert redis.get(KEY_INDEX_PREFIX + key_hash) == client.client_id.encode()
    finally:
        index.close()
        redis.close()


def test_the_directory_decides_and_a_contradicted_entry_is_looked_up_again(
    stack: Settings, make_client: Callable[..., ClientFixture]
) -> None:
    first = make_client("kold", active=False)
    index = _index(stack)
    directory = ClientDirectory(stack.redis, stack.postgres, local_ttl_s=LOCAL_TTL_S)
    registry_thread = ThreadPoolExecutor(1)
    auth = Authenticator(index, directory, registry_thread, front_ttl_s=0.05)

    def authenticate(key: str) -> AuthOutcome:
        time.sleep(LOCAL_TTL_S + 0.05)  # past the verdict's and the index's local TTLs
        return asyncio.run(auth.authenticate(key))

    try:
        key_hash = hash_api_key(first.api_key)
        assert authenticate(first.api_key) == Authenticated(first.client_id, key_hash)
        # Rotated: the index still names the client, the directory refuses the old key.
        _set_key(stack, first.client_id, "rotated-" + first.client_id)
        refused = authenticate(first.api_key)
        assert isinstance(refused, Refused) and refused.status == 401, refused
        # The old key given to another client: accepted for it at once, although Redis
        # and the process had remembered the first client for it.
        second = _add_client(stack, key_hash)
        redis = sync_client(stack.redis)
        try:  # what Redis had remembered for the key before it changed hands
            redis.set(KEY_INDEX_PREFIX + key_hash, first.client_id, ex=60)
        finally:
            redis.close()
        assert authenticate(first.api_key) == Authenticated(second, key_hash)
    finally:
        directory.close()
        index.close()
        registry_thread.shutdown()


def test_an_unknown_key_is_kept_in_process_only_briefly(stack: Settings) -> None:
    key = f"key-{unique_id('knew')}"
    key_hash = hash_api_key(key)
    index = _index(stack)
    redis = sync_client(stack.redis)
    try:
        assert isinstance(index.client_for(key_hash), KeyUnknown)
        client_id = _add_client(stack, key_hash)
        redis.delete(KEY_INDEX_PREFIX + key_hash)  # as if its negative entry had expired
        assert isinstance(index.client_for(key_hash), KeyUnknown)  # still the process's
        time.sleep(LOCAL_TTL_S * 2)
        assert index.client_for(key_hash) == client_id
    finally:
        index.close()
        redis.close()


def test_many_keys_are_looked_up_together_each_layer_once(
    stack: Settings, make_client: Callable[..., ClientFixture]
) -> None:
    """A batch of keys (the registry thread's job after a pause): every answer is the one
    a lookup of that key alone gives, and Redis is asked once per layer, not per key."""
    clients = [make_client("kbat", active=False) for _ in range(4)]  # pending: accepted
    set_status(stack, clients[1].client_id, ClientStatus.DEPROVISIONED)  # refused: 403
    unknown = hash_api_key(f"key-{unique_id('kbat')}")
    hashes = [hash_api_key(c.api_key) for c in clients] + [unknown]
    index = _index(stack)
    directory = ClientDirectory(stack.redis, stack.postgres, local_ttl_s=LOCAL_TTL_S)
    registry_thread = ThreadPoolExecutor(1)
    auth = Authenticator(index, directory, registry_thread, front_ttl_s=0.05)
    try:
        # First sight: Redis has none of them, PostgreSQL answers all in one query.
        first = index.clients_for(hashes)
        assert first == {
            **{h: c.client_id for h, c in zip(hashes, clients, strict=False)},
            unknown: KeyUnknown(),
        }
        assert index.pg_queries == 1
        time.sleep(LOCAL_TTL_S * 2)  # the unknown key's local entry is gone: Redis's now
        assert index.clients_for(hashes) == first

        ids = [c.client_id for c in clients] + [unique_id("kbat-missing")]
        for cid in ids:  # as if their Redis entries had expired: PostgreSQL's to answer
            client_cache.invalidate(stack.redis, cid)
        looked_up = directory.lookup_many(ids)
        assert directory.stats.pg_queries == 1 and directory.stats.pg_reads == len(ids)
        assert looked_up == {cid: directory.lookup(cid) for cid in ids}
        assert isinstance(looked_up[ids[-1]], ClientMissing)
        assert all(isinstance(looked_up[c.client_id], ClientFound) for c in clients)
        time.sleep(LOCAL_TTL_S * 2)  # past the local TTL: one MGET serves the known ones
        hits = directory.stats.redis_hits
        assert directory.lookup_many(ids) == looked_up
        assert directory.stats.redis_hits == hits + len(ids)

        async def all_at_once() -> list[AuthOutcome]:
            keys = [c.api_key for c in clients] + ["no such key"]
            return await asyncio.gather(*(auth.authenticate(k) for k in keys))

        outcomes = asyncio.run(all_at_once())
        for i, (client, key_hash) in enumerate(zip(clients, hashes, strict=False)):
            if i == 1:
                assert isinstance(outcomes[i], Refused) and outcomes[i].status == 403
            else:
                assert outcomes[i] == Authenticated(client.client_id, key_hash)
        assert outcomes[-1] == Refused(401, "invalid_write_key", "unknown write key")
    finally:
        directory.close()
        index.close()
        registry_thread.shutdown()
