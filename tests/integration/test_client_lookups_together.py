"""Many client lookups at once (ClientDirectory.lookup_many, what the router does for a
poll whose clients are not fresh in process): one Redis read, one PostgreSQL query and one
pipelined Redis write for all of them, with the same answers as one lookup each."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from analytics_core import client_cache
from analytics_core.client_cache import ClientDirectory
from analytics_core.clients import ClientFound, ClientMissing
from analytics_core.settings import Settings
from tests.conftest import ClientFixture, unique_id

pytestmark = pytest.mark.integration


def test_unknown_clients_are_looked_up_together_and_remembered_in_redis(
    stack: Settings, make_client: Callable[..., ClientFixture]
) -> None:
    known = make_client("many", active=False)
    unknown = [unique_id("ghost") for _ in range(60)]
    directory = ClientDirectory(stack.redis, stack.postgres, negative_ttl_s=30)
    redis = client_cache.redis_client(stack.redis)
    try:
        results = directory.lookup_many([*unknown, known.client_id])
        assert all(results[c] == ClientMissing(c) for c in unknown)
        found = results[known.client_id]
        assert isinstance(found, ClientFound) and found.record.client_id == known.client_id
        assert directory.stats.pg_queries == 1 and directory.stats.pg_reads == 61
        # PostgreSQL's answers went to Redis (one pipeline), the missing ones with their
        # shorter TTL, so another router process reads them there.
        for cid in unknown:
            raw = redis.get(client_cache.cache_key(cid))
            assert raw is not None and client_cache.decode(cid, bytes(raw)) == ClientMissing(cid)
            assert 0 < redis.ttl(client_cache.cache_key(cid)) <= 30
        assert redis.get(client_cache.cache_key(known.client_id)) is not None
        # Fresh in process now: answered there, PostgreSQL not asked again.
        assert directory.fresh(unknown[0]) == ClientMissing(unknown[0])
        assert directory.lookup_many(unknown) == {c: ClientMissing(c) for c in unknown}
        assert directory.stats.pg_queries == 1
        # Another process (a new directory) finds them all in Redis.
        other = ClientDirectory(stack.redis, stack.postgres)
        try:
            assert other.lookup_many(unknown) == {c: ClientMissing(c) for c in unknown}
            assert other.stats.pg_queries == 0 and other.stats.redis_hits == 60
        finally:
            other.close()
    finally:
        redis.close()
        directory.close()
