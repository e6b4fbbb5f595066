"""How every process of the pipeline connects to Redis: address, password and TLS.

Invariant: the router, the capture service and the operator commands build their Redis
clients from these arguments alone, so REDIS_TLS / REDIS_CA_CERT apply to all of them
alike (no process can be left talking plaintext to a TLS-only Redis). With TLS the
server's certificate is always verified, against REDIS_CA_CERT or the system's CAs.
"""

from __future__ import annotations

from typing import Any

from analytics_core.settings import RedisSettings


def connection_kwargs(settings: RedisSettings, *, timeout_s: float) -> dict[str, Any]:
    """Keyword arguments shared by `redis.Redis` and `redis.asyncio.Redis`."""
    kwargs: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "db": settings.db,
        "password": settings.password or None,
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
    }
    if settings.tls:
        kwargs["ssl"] = True
        kwargs["ssl_cert_reqs"] = "required"
        kwargs["ssl_check_hostname"] = True
        if settings.ca_cert:
            kwargs["ssl_ca_certs"] = settings.ca_cert
    return kwargs
