"""No two clients share a key or a ClickHouse database name (pure checks)."""

from __future__ import annotations

from datetime import UTC, datetime

from analytics_core.client_uniqueness import database_clash, key_clash
from analytics_core.registry import ClientRow

NOW = datetime(2026, 12, 4, tzinfo=UTC)


def row(client_id: str, key_hash: str = "h" * 64, database: str | None = None) -> ClientRow:
    return ClientRow(client_id, "", "active", None, key_hash, database, None, NOW, NOW)


def test_ids_that_name_the_same_database_clash_either_way() -> None:
    assert database_clash("a_b", [row("a-b")]) is not None
    why = database_clash("a-b", [row("a_b")])
    assert why is not None and "'a_b'" in why and "client_a_b" in why
    assert database_clash("a-c", [row("a-b"), row("ab")]) is None


def test_a_recorded_database_counts_not_only_the_derived_one() -> None:
    assert database_clash("zed", [row("old", database="client_zed")]) is not None
    # A client is never in its own way (re-adding an existing id is the caller's no-op).
    assert database_clash("a-b", [row("a-b", database="client_a_b")]) is None


def test_a_key_held_by_another_client_clashes_its_own_does_not() -> None:
    rows = [row("one", "1" * 64), row("two", "2" * 64)]
    why = key_clash("two", "1" * 64, rows)
    assert why is not None and "'one'" in why
    assert key_clash("two", "2" * 64, rows) is None
    assert key_clash("three", "3" * 64, rows) is None
