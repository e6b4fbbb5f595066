"""The `clients` dynamic partitions: one partition per client, keyed by client id.

Invariant: Dagster does not validate dynamic partition keys, so every key added here has
passed `analytics_core.naming.validate_client_id` first. Callers validate and handle an
invalid id as an expected outcome; reaching the assertion below is a bug.
"""

from __future__ import annotations

from collections.abc import Iterable

from dagster import (
    AddDynamicPartitionsRequest,
    DeleteDynamicPartitionsRequest,
    DynamicPartitionsDefinition,
)

from analytics_core.naming import validate_client_id

CLIENTS_PARTITIONS_NAME = "clients"

clients_partitions = DynamicPartitionsDefinition(name=CLIENTS_PARTITIONS_NAME)


def add_clients_request(client_ids: Iterable[str]) -> AddDynamicPartitionsRequest:
    """Request adding partitions for valid client ids (raises InvalidIdentifier otherwise)."""
    keys = sorted({validate_client_id(c) for c in client_ids})
    return AddDynamicPartitionsRequest(CLIENTS_PARTITIONS_NAME, keys)


def delete_clients_request(client_ids: Iterable[str]) -> DeleteDynamicPartitionsRequest:
    return DeleteDynamicPartitionsRequest(CLIENTS_PARTITIONS_NAME, sorted(set(client_ids)))
