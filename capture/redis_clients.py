"""The capture service's Redis clients: one attempt per command, short timeouts.

redis-py retries a failed command three times with backoff by default; for the capture
service an unreachable Redis must cost one short timeout, after which the caller falls
back (the write-key index to PostgreSQL, quotas to per-process buckets).
"""

from __future__ import annotations

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff

from analytics_core.client_cache import redis_client
from analytics_core.redis_connect import connection_kwargs
from analytics_core.settings import RedisSettings

TIMEOUT_S = 0.5


def sync_client(s: RedisSettings) -> redis.Redis:
    return redis_client(s, timeout_s=TIMEOUT_S, retries=0)


def async_client(s: RedisSettings) -> aioredis.Redis:
    # Same parameters as sync_client, for the asyncio client class.
    return aioredis.Redis(
        **connection_kwargs(s, timeout_s=TIMEOUT_S), retry=AsyncRetry(NoBackoff(), 0)
    )
