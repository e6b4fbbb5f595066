"""The client model: what the registry knows about a client, and lookup outcomes."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from analytics_core.settings import DEFAULT_TARGET


class ClientStatus(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    FAILED = "failed"
    DEPROVISIONING = "deprovisioning"
    DEPROVISIONED = "deprovisioned"


@dataclass(frozen=True, slots=True)
class ClientRecord:
    client_id: str
    status: ClientStatus
    api_key_hash: str
    ch_database_name: str
    # The ClickHouse target holding the database (analytics_core.placement); a move changes
    # it, and every writer resolves it per client through this record.
    ch_target: str = DEFAULT_TARGET


@dataclass(frozen=True, slots=True)
class ClientFound:
    record: ClientRecord


@dataclass(frozen=True, slots=True)
class ClientMissing:
    client_id: str


@dataclass(frozen=True, slots=True)
class RegistryUnavailable:
    """Neither the cache nor PostgreSQL could answer: an outage, not a verdict."""

    detail: str


LookupResult = ClientFound | ClientMissing | RegistryUnavailable
