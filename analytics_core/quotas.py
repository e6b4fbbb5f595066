"""Per-client capture quotas in the registry (columns of `clients`, postgres/sql/03).

A quota is a token bucket: `events_per_s` refill rate and `burst` capacity. A client
without its own values uses the capture service's defaults; `effective()` applies them.
Enforcement (Redis, across capture processes) lives in `capture.quota`; this module only
reads and writes the registry. All SQL is parameterised.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg2.extensions

Conn = psycopg2.extensions.connection


@dataclass(frozen=True, slots=True)
class Quota:
    events_per_s: float
    burst: int


@dataclass(frozen=True, slots=True)
class StoredQuota:
    """What the registry holds for one client: None means "use the default"."""

    client_id: str
    events_per_s: float | None
    burst: int | None

    def effective(self, default: Quota) -> Quota:
        rate = default.events_per_s if self.events_per_s is None else self.events_per_s
        burst = self.burst
        if burst is None:
            # A client given only a rate gets the default burst, or one second of its rate
            # when that is larger, so a single second's worth is never refused.
            burst = max(default.burst, math.ceil(rate))
        return Quota(rate, burst)


class QuotaError(ValueError):
    """A quota value is invalid or the client does not exist; the message says which."""


def validate(events_per_s: float | None, burst: int | None) -> None:
    if events_per_s is not None and not (math.isfinite(events_per_s) and events_per_s > 0):
        raise QuotaError(f"events per second must be a positive number, got {events_per_s}")
    if burst is not None and burst < 1:
        raise QuotaError(f"burst must be at least 1, got {burst}")


def get_quota(conn: Conn, client_id: str) -> StoredQuota | None:
    """The stored quota of a client, or None when there is no such client."""
    return get_quotas(conn, [client_id]).get(client_id)


def get_quotas(conn: Conn, client_ids: Sequence[str]) -> dict[str, StoredQuota]:
    """The stored quotas of the clients that exist among `client_ids`, in one query."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT client_id, capture_events_per_s, capture_burst FROM clients"
            " WHERE client_id = ANY(%s)",
            (list(client_ids),),
        )
        rows = cur.fetchall()
    conn.commit()
    return {
        cid: StoredQuota(cid, None if rate is None else float(rate), burst)
        for cid, rate, burst in rows
    }


def set_quota(
    conn: Conn, client_id: str, events_per_s: float | None, burst: int | None
) -> StoredQuota:
    """Store a client's quota (None resets that value to the default); returns what is stored.

    Capture processes pick the change up within CAPTURE_QUOTA_CACHE_S.
    """
    validate(events_per_s, burst)
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE clients SET capture_events_per_s = %s, capture_burst = %s, updated_at = now()"
            " WHERE client_id = %s",
            (events_per_s, burst, client_id),
        )
        found = cur.rowcount == 1
    conn.commit()
    if not found:
        raise QuotaError(f"no client {client_id!r} in the registry")
    return StoredQuota(client_id, events_per_s, burst)
